"""The vault's token store: sealed refresh tokens and refresh events, nothing in clear.

The SQL is written once, here, tables included, with PostgreSQL's ``$n`` parameters; a
backend only runs it: SQLite (default; one file owned by the vault, mode 0600, every write
synced) or PostgreSQL (``postgres``; a schema only the vault's database role can read, for
several nodes). Both pass one shared test suite. ``sealed`` bytes are only compared and copied.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from inboxlens.paths import TOKEN_DB

if TYPE_CHECKING:
    from inboxlens.config.vault import VaultConfig

OK, REAUTH_REQUIRED = "ok", "reauth_required"
MAX_EVENTS = 10_000
Statement = tuple[str, tuple[Any, ...]]
RECORD = "SELECT account_id, provider, key_id, sealed, status, updated_at FROM {T} "
# Both backends' tables; each names its types for {blob}, {real} and the events' {key}.
DDL = """
CREATE TABLE IF NOT EXISTS {T} (
    account_id TEXT PRIMARY KEY,
    provider   TEXT NOT NULL,
    key_id     INTEGER NOT NULL,
    sealed     {blob} NOT NULL,
    status     TEXT NOT NULL DEFAULT 'ok',
    updated_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_key_id ON {T} (key_id);
CREATE TABLE IF NOT EXISTS {E} (
    id         {key},
    at         {real} NOT NULL,
    account_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class TokenRecord:
    account_id: str
    provider: str
    key_id: int
    sealed: bytes
    status: str
    updated_at: float

    def __repr__(self) -> str:
        return (f"TokenRecord(account_id={self.account_id!r}, provider={self.provider!r}, key_id={self.key_id}, "
                f"status={self.status!r})")


class TokenStore:
    """Tokens and events; a backend subclass names its tables and runs statements."""

    tokens_table = "tokens"
    events_table = "events"

    async def _rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def _write(self, *statements: Statement) -> list[int]:
        """Run ``statements`` in one transaction (one synced commit); the number of rows each changed."""
        raise NotImplementedError

    def refresh_lock(self, account_id: str) -> AbstractAsyncContextManager[None]:
        """Held while the account's refresh token is read, refreshed and its successor stored."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    @classmethod
    def _sql(cls, sql: str, **types: str) -> str:
        return sql.format(T=cls.tokens_table, E=cls.events_table, **types)

    async def put(self, account_id: str, provider: str, key_id: int, sealed: bytes, event: str = "") -> None:
        """Insert or replace an account's token; its status becomes ok. ``event``: "kind: detail", same commit."""
        upsert = self._sql("INSERT INTO {T} VALUES ($1, $2, $3, $4, 'ok', $5) ON CONFLICT (account_id) DO UPDATE "
                           "SET provider = excluded.provider, key_id = excluded.key_id, sealed = excluded.sealed, "
                           "status = 'ok', updated_at = excluded.updated_at")
        kind, _, detail = event.partition(": ")
        events = [self._event(account_id, kind, detail)] if event else []
        await self._write((upsert, (account_id, provider, key_id, sealed, time.time())), *events)

    async def get(self, account_id: str) -> TokenRecord | None:
        rows = await self._rows(self._sql(RECORD + "WHERE account_id = $1"), account_id)
        return TokenRecord(*rows[0]) if rows else None

    async def replace(self, account_id: str, old_sealed: bytes, key_id: int, new_sealed: bytes) -> bool:
        """Swap the sealed token only if it is still ``old_sealed`` (compare-and-set)."""
        return (await self.replace_many([(account_id, old_sealed, key_id, new_sealed)]))[0]

    async def replace_many(self, swaps: list[tuple[str, bytes, int, bytes]]) -> list[bool]:
        """Several compare-and-set swaps (account, old, key id, new) in one transaction."""
        sql = self._sql("UPDATE {T} SET key_id = $1, sealed = $2, updated_at = $3 "
                        "WHERE account_id = $4 AND sealed = $5")
        now = time.time()
        changed = await self._write(*[(sql, (key_id, new, now, account, old)) for account, old, key_id, new in swaps])
        return [n == 1 for n in changed]

    async def set_status(self, account_id: str, status: str) -> None:
        sql = self._sql("UPDATE {T} SET status = $1, updated_at = $2 WHERE account_id = $3")
        await self._write((sql, (status, time.time(), account_id)))

    async def delete(self, account_id: str) -> bool:
        return await self._write((self._sql("DELETE FROM {T} WHERE account_id = $1"), (account_id,))) == [1]

    async def count_by_key(self) -> dict[int, int]:
        rows = await self._rows(self._sql("SELECT key_id, count(*) FROM {T} GROUP BY key_id"))
        return {int(k): int(n) for k, n in rows}

    async def not_under(self, key_id: int, limit: int) -> list[TokenRecord]:
        """Up to ``limit`` records sealed under any key other than ``key_id``."""
        rows = await self._rows(self._sql(RECORD + "WHERE key_id != $1 ORDER BY account_id LIMIT $2"), key_id, limit)
        return [TokenRecord(*row) for row in rows]

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._rows(self._sql("SELECT status, count(*) FROM {T} GROUP BY status"))
        return {str(s): int(n) for s, n in rows}

    async def add_event(self, account_id: str, kind: str, detail: str) -> None:
        prune = self._sql("DELETE FROM {E} WHERE id <= (SELECT max(id) FROM {E}) - $1")
        await self._write(self._event(account_id, kind, detail), (prune, (MAX_EVENTS,)))

    async def events(self, limit: int) -> list[dict[str, Any]]:
        rows = await self._rows(self._sql("SELECT at, account_id, kind, detail FROM {E} ORDER BY id DESC LIMIT $1"),
                                limit)
        return [{"at": at, "account_id": a, "kind": k, "detail": d} for at, a, k, d in rows]

    def _event(self, account_id: str, kind: str, detail: str) -> Statement:
        sql = self._sql("INSERT INTO {E} (at, account_id, kind, detail) VALUES ($1, $2, $3, $4)")
        return sql, (time.time(), account_id, kind, detail)


async def open_store(vault: "VaultConfig", vault_dir: Path) -> TokenStore:
    """The token store the configuration names: the vault's SQLite file, or its PostgreSQL schema."""
    if vault.token_store == "postgres":
        from inboxlens.vault.store.postgres import PgTokenStore
        return await PgTokenStore.open(vault.token_store_dsn)
    from inboxlens.vault.store.sqlite import SqliteTokenStore
    return await SqliteTokenStore.open(vault_dir / TOKEN_DB)
