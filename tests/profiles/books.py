"""What the address-book sync tests share: PostgreSQL (migrated, harvest's grants), a vault, and
books added as web adds them (a row, its sync row, the password sealed into the vault)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from inboxlens.db import roles
from inboxlens.profiles.sync import BookSettings, BookSyncer
from inboxlens.vault.client import VaultClient
from tests.support.vaultproc import VaultProcess

HARVEST_ROLE = "inboxlens_t_harvest"  # the test cluster's stand-in for inboxlens-harvest


async def harvest_pool(dsn: str) -> asyncpg.Pool:
    """A pool whose every connection acts as harvest's role (its grants apply, nothing more)."""
    await roles.apply_grants(dsn, {"harvest": HARVEST_ROLE})

    async def as_harvest(conn: asyncpg.Connection) -> None:
        await conn.execute(f'SET ROLE "{HARVEST_ROLE}"')
    return await asyncpg.create_pool(dsn, min_size=1, max_size=6, setup=as_harvest)


@dataclass
class Books:
    db: asyncpg.Pool  # the superuser's: seeds and reads what the syncer did
    harvest: asyncpg.Pool  # harvest's role
    vault: VaultProcess
    client: VaultClient
    user_id: int = 0

    async def as_web(self) -> None:
        await self.vault.register(os.getpid(), "web")

    async def as_harvest(self) -> None:
        await self.vault.register(os.getpid(), "harvest")

    async def store_password(self, book_id: int, password: str) -> None:
        await self.as_web()
        key = await self.client.public_key()
        account = f"book:{book_id}"
        await self.client.set(account, "carddav", key.seal(account, "carddav", password))
        await self.as_harvest()

    async def add(self, url: str, username: str, password: str) -> int:
        book = int(await self.db.fetchval(
            "INSERT INTO address_books (user_id, kind, label, url, username) VALUES ($1, 'carddav', 'Contacts', "
            "$2, $3) RETURNING id", self.user_id, url, username))
        await self.db.execute("INSERT INTO address_book_sync (book_id) VALUES ($1)", book)
        await self.store_password(book, password)
        return book

    def syncer(self, owner: str = "test-node:1", **overrides: Any) -> BookSyncer:
        values: dict[str, Any] = {"interval": timedelta(hours=1), "allow_private_addresses": True, **overrides}
        return BookSyncer(self.harvest, self.client, BookSettings(**values), owner=owner)

    async def state(self, book: int) -> asyncpg.Record:
        return await self.db.fetchrow("SELECT *, next_run_at - now() AS due_in FROM address_book_sync "
                                      "WHERE book_id = $1", book)

    async def cards(self, book: int) -> dict[str, asyncpg.Record]:
        found = await self.db.fetch("SELECT * FROM profile_cards WHERE book_id = $1", book)
        return {r["href"].rpartition("/")[2]: r for r in found}

    async def addresses(self, book: int) -> set[str]:
        return {r["address"] for r in await self.db.fetch(
            "SELECT address FROM profile_addresses WHERE book_id = $1 AND user_id = $2", book, self.user_id)}

    async def version(self) -> int:
        return int(await self.db.fetchval("SELECT coalesce((SELECT version FROM profile_versions "
                                          "WHERE user_id = $1), 0)", self.user_id))

    async def due_now(self, book: int) -> None:
        """What web's "Sync now" does."""
        await self.db.execute("UPDATE address_book_sync SET next_run_at = now() WHERE book_id = $1", book)
