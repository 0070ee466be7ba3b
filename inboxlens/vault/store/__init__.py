"""The vault's token store: sealed refresh tokens and refresh events, nothing in clear.

One small interface, two backends: SQLite (default; one file owned by the vault,
mode 0600, every write synced) and PostgreSQL (``postgres``; a schema only the
vault's database role can read, for several nodes). Both pass one shared test
suite. A record's ``sealed`` bytes are only ever compared and copied here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from inboxlens.paths import TOKEN_DB

if TYPE_CHECKING:
    from inboxlens.config.vault import VaultConfig

OK, REAUTH_REQUIRED = "ok", "reauth_required"
MAX_EVENTS = 10_000


@dataclass(frozen=True)
class TokenRecord:
    account_id: str
    provider: str
    key_id: int
    sealed: bytes
    status: str
    updated_at: float

    def __repr__(self) -> str:
        return f"TokenRecord(account_id={self.account_id!r}, provider={self.provider!r}, key_id={self.key_id}, status={self.status!r})"


class TokenStore(Protocol):
    async def put(self, account_id: str, provider: str, key_id: int, sealed: bytes, event: str = "") -> None:
        """Insert or replace an account's token; its status becomes ok. ``event``: "kind: detail", same commit."""

    async def get(self, account_id: str) -> TokenRecord | None: ...

    async def replace(self, account_id: str, old_sealed: bytes, key_id: int, new_sealed: bytes) -> bool:
        """Swap the sealed token only if it is still ``old_sealed`` (compare-and-set)."""

    async def replace_many(self, swaps: list[tuple[str, bytes, int, bytes]]) -> list[bool]:
        """Several compare-and-set swaps (account, old, key id, new) in one transaction."""

    async def set_status(self, account_id: str, status: str) -> None: ...

    async def delete(self, account_id: str) -> bool: ...

    async def count_by_key(self) -> dict[int, int]: ...

    async def not_under(self, key_id: int, limit: int) -> list[TokenRecord]:
        """Up to ``limit`` records sealed under any key other than ``key_id``."""

    async def count_by_status(self) -> dict[str, int]: ...

    async def add_event(self, account_id: str, kind: str, detail: str) -> None: ...

    async def events(self, limit: int) -> list[dict[str, Any]]: ...

    def refresh_lock(self, account_id: str) -> AbstractAsyncContextManager[None]:
        """Held while the account's refresh token is read, refreshed and its successor stored."""

    async def close(self) -> None: ...


async def open_store(vault: "VaultConfig", vault_dir: Path) -> TokenStore:
    """The token store the configuration names: the vault's SQLite file, or its PostgreSQL schema."""
    if vault.token_store == "postgres":
        from inboxlens.vault.store.postgres import PgTokenStore
        return await PgTokenStore.open(vault.token_store_dsn)
    from inboxlens.vault.store.sqlite import SqliteTokenStore
    return await SqliteTokenStore.open(vault_dir / TOKEN_DB)
