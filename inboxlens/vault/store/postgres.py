"""The vault's token store in PostgreSQL, for deployments with several nodes.

The tables live in their own schema (``inboxlens_vault``); the DSN is the vault's
own (``vault.token_store_dsn``), for a role that is the only one granted that
schema. Same interface and tests as the SQLite store.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, AsyncIterator

import asyncpg

from inboxlens.vault.store import MAX_EVENTS, TokenRecord

SCHEMA = "inboxlens_vault"
_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC;
CREATE TABLE IF NOT EXISTS {SCHEMA}.tokens (
    account_id text PRIMARY KEY,
    provider   text NOT NULL,
    key_id     integer NOT NULL,
    sealed     bytea NOT NULL,
    status     text NOT NULL DEFAULT 'ok',
    updated_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_key_id ON {SCHEMA}.tokens (key_id);
CREATE TABLE IF NOT EXISTS {SCHEMA}.events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         double precision NOT NULL,
    account_id text NOT NULL,
    kind       text NOT NULL,
    detail     text NOT NULL
);
"""
_T = f"{SCHEMA}.tokens"
_E = f"{SCHEMA}.events"


class PgTokenStore:
    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn

    @classmethod
    async def open(cls, dsn: str) -> "PgTokenStore":
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, command_timeout=10)
        async with pool.acquire() as conn:
            # Serialise schema creation across vaults starting together.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7243001)")
                await conn.execute(_DDL)
        return cls(pool, dsn)

    async def put(self, account_id: str, provider: str, key_id: int, sealed: bytes, event: str = "") -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {_T} VALUES ($1, $2, $3, $4, 'ok', $5) ON CONFLICT (account_id) DO UPDATE "
                "SET provider = excluded.provider, key_id = excluded.key_id, sealed = excluded.sealed, "
                "status = 'ok', updated_at = excluded.updated_at", account_id, provider, key_id, sealed, time.time())
            if event:
                kind, _, detail = event.partition(": ")
                await conn.execute(f"INSERT INTO {_E} (at, account_id, kind, detail) VALUES ($1, $2, $3, $4)",
                                   time.time(), account_id, kind, detail)

    async def replace_many(self, swaps: list[tuple[str, bytes, int, bytes]]) -> list[bool]:
        results = []
        async with self._pool.acquire() as conn, conn.transaction():
            for account, old, key_id, new in swaps:
                status = await conn.execute(f"UPDATE {_T} SET key_id = $1, sealed = $2, updated_at = $3 "
                                            "WHERE account_id = $4 AND sealed = $5", key_id, new, time.time(),
                                            account, old)
                results.append(str(status) == "UPDATE 1")
        return results

    async def get(self, account_id: str) -> TokenRecord | None:
        row = await self._pool.fetchrow(f"SELECT * FROM {_T} WHERE account_id = $1", account_id)
        return _record(row) if row else None

    async def replace(self, account_id: str, old_sealed: bytes, key_id: int, new_sealed: bytes) -> bool:
        status = await self._pool.execute(f"UPDATE {_T} SET key_id = $1, sealed = $2, updated_at = $3 "
                                          "WHERE account_id = $4 AND sealed = $5",
                                          key_id, new_sealed, time.time(), account_id, old_sealed)
        return str(status) == "UPDATE 1"

    async def set_status(self, account_id: str, status: str) -> None:
        await self._pool.execute(f"UPDATE {_T} SET status = $1, updated_at = $2 WHERE account_id = $3",
                                 status, time.time(), account_id)

    async def delete(self, account_id: str) -> bool:
        return str(await self._pool.execute(f"DELETE FROM {_T} WHERE account_id = $1", account_id)) == "DELETE 1"

    async def count_by_key(self) -> dict[int, int]:
        rows = await self._pool.fetch(f"SELECT key_id, count(*) AS n FROM {_T} GROUP BY key_id")
        return {int(r["key_id"]): int(r["n"]) for r in rows}

    async def not_under(self, key_id: int, limit: int) -> list[TokenRecord]:
        rows = await self._pool.fetch(f"SELECT * FROM {_T} WHERE key_id != $1 ORDER BY account_id LIMIT $2",
                                      key_id, limit)
        return [_record(r) for r in rows]

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._pool.fetch(f"SELECT status, count(*) AS n FROM {_T} GROUP BY status")
        return {str(r["status"]): int(r["n"]) for r in rows}

    async def add_event(self, account_id: str, kind: str, detail: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(f"INSERT INTO {_E} (at, account_id, kind, detail) VALUES ($1, $2, $3, $4)",
                               time.time(), account_id, kind, detail)
            await conn.execute(f"DELETE FROM {_E} WHERE id <= (SELECT max(id) FROM {_E}) - $1", MAX_EVENTS)

    async def events(self, limit: int) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(f"SELECT at, account_id, kind, detail FROM {_E} ORDER BY id DESC LIMIT $1", limit)
        return [dict(r) for r in rows]

    @contextlib.asynccontextmanager
    async def refresh_lock(self, account_id: str) -> AsyncIterator[None]:
        """An advisory lock per account across every vault on this database.

        On a connection of its own, not the pool's: held for a whole refresh, it must not
        starve the reads and writes the refresh makes. Ending the session releases it, so a
        vault that dies never leaves it held.
        """
        conn = await asyncpg.connect(self._dsn, command_timeout=120)
        try:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 7243002))", account_id)
            yield
        finally:
            await conn.close()

    async def close(self) -> None:
        await self._pool.close()


def _record(row: Any) -> TokenRecord:
    return TokenRecord(row["account_id"], row["provider"], row["key_id"], bytes(row["sealed"]),
                       row["status"], row["updated_at"])
