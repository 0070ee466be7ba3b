"""The default token store: one SQLite file owned by the vault, mode 0600, every write synced."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from contextlib import AbstractAsyncContextManager
from typing import Any, Callable, TypeVar

from inboxlens.vault.store import MAX_EVENTS, TokenRecord

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    account_id TEXT PRIMARY KEY,
    provider   TEXT NOT NULL,
    key_id     INTEGER NOT NULL,
    sealed     BLOB NOT NULL,
    status     TEXT NOT NULL DEFAULT 'ok',
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_key_id ON tokens (key_id);
CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         REAL NOT NULL,
    account_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL
);
"""


class SqliteTokenStore:
    """SQLite in WAL mode with ``synchronous=FULL``: a write that returned survives power loss.

    sqlite3 blocks, so every call runs on one dedicated thread, which also owns the connection.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-store")
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> "SqliteTokenStore":
        store = cls(path)
        await store._run(store._connect)
        return store

    def _connect(self) -> None:
        # Create the file 0600 before SQLite does; its -wal and -shm files copy this mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        self._db = db

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _exec(self, sql: str, *params: Any) -> sqlite3.Cursor:
        assert self._db is not None, "store is closed"
        return self._db.execute(sql, params)

    async def put(self, account_id: str, provider: str, key_id: int, sealed: bytes, event: str = "") -> None:
        def put() -> None:
            assert self._db is not None, "store is closed"
            with self._db:  # one transaction: one synced commit for the token and its event
                self._db.execute("BEGIN")
                self._exec("INSERT INTO tokens VALUES (?, ?, ?, ?, 'ok', ?) ON CONFLICT (account_id) DO UPDATE "
                           "SET provider=excluded.provider, key_id=excluded.key_id, sealed=excluded.sealed, "
                           "status='ok', updated_at=excluded.updated_at", account_id, provider, key_id, sealed,
                           time.time())
                if event:
                    kind, _, detail = event.partition(": ")
                    self._exec("INSERT INTO events (at, account_id, kind, detail) VALUES (?, ?, ?, ?)",
                               time.time(), account_id, kind, detail)
        await self._run(put)

    async def get(self, account_id: str) -> TokenRecord | None:
        row = await self._run(lambda: self._exec("SELECT * FROM tokens WHERE account_id = ?", account_id).fetchone())
        return TokenRecord(*row) if row else None

    async def replace(self, account_id: str, old_sealed: bytes, key_id: int, new_sealed: bytes) -> bool:
        cursor = await self._run(self._exec, "UPDATE tokens SET key_id = ?, sealed = ?, updated_at = ? "
                                 "WHERE account_id = ? AND sealed = ?", key_id, new_sealed, time.time(), account_id, old_sealed)
        return cursor.rowcount == 1

    async def replace_many(self, swaps: list[tuple[str, bytes, int, bytes]]) -> list[bool]:
        def swap_all() -> list[bool]:
            assert self._db is not None, "store is closed"
            with self._db:
                self._db.execute("BEGIN")
                now = time.time()
                return [self._exec("UPDATE tokens SET key_id = ?, sealed = ?, updated_at = ? "
                                   "WHERE account_id = ? AND sealed = ?", key_id, new, now, account, old).rowcount == 1
                        for account, old, key_id, new in swaps]
        return await self._run(swap_all) if swaps else []

    async def set_status(self, account_id: str, status: str) -> None:
        await self._run(self._exec, "UPDATE tokens SET status = ?, updated_at = ? WHERE account_id = ?",
                        status, time.time(), account_id)

    async def delete(self, account_id: str) -> bool:
        cursor = await self._run(self._exec, "DELETE FROM tokens WHERE account_id = ?", account_id)
        return cursor.rowcount == 1

    async def count_by_key(self) -> dict[int, int]:
        rows = await self._run(lambda: self._exec("SELECT key_id, count(*) FROM tokens GROUP BY key_id").fetchall())
        return {int(k): int(n) for k, n in rows}

    async def not_under(self, key_id: int, limit: int) -> list[TokenRecord]:
        rows = await self._run(lambda: self._exec("SELECT * FROM tokens WHERE key_id != ? ORDER BY account_id LIMIT ?",
                                                  key_id, limit).fetchall())
        return [TokenRecord(*row) for row in rows]

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._run(lambda: self._exec("SELECT status, count(*) FROM tokens GROUP BY status").fetchall())
        return {str(s): int(n) for s, n in rows}

    async def add_event(self, account_id: str, kind: str, detail: str) -> None:
        def add() -> None:
            self._exec("INSERT INTO events (at, account_id, kind, detail) VALUES (?, ?, ?, ?)",
                       time.time(), account_id, kind, detail)
            self._exec("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", MAX_EVENTS)
        await self._run(add)

    async def events(self, limit: int) -> list[dict[str, Any]]:
        rows = await self._run(lambda: self._exec("SELECT at, account_id, kind, detail FROM events "
                                                  "ORDER BY id DESC LIMIT ?", limit).fetchall())
        return [{"at": at, "account_id": a, "kind": k, "detail": d} for at, a, k, d in rows]

    def refresh_lock(self, account_id: str) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()  # one vault per file: the keyset lock sees to that

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)
        self._executor.shutdown(wait=True)
