"""The default token store: one SQLite file owned by the vault, mode 0600, every write synced."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from inboxlens.vault.store import Statement, TokenStore

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


class SqliteTokenStore(TokenStore):
    """WAL mode with ``synchronous=FULL``: a write that returned survives power loss.

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

    def _open_db(self) -> sqlite3.Connection:
        assert self._db is not None, "store is closed"
        return self._db

    async def _rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return await self._run(lambda: self._open_db().execute(sql.replace("$", "?"), args).fetchall())

    async def _write(self, *statements: Statement) -> list[int]:
        def write() -> list[int]:
            db = self._open_db()
            with db:  # commits, or rolls back on an exception
                db.execute("BEGIN")
                return [db.execute(sql.replace("$", "?"), args).rowcount for sql, args in statements]
        return await self._run(write)

    def refresh_lock(self, account_id: str) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()  # one vault per file: the keyset lock sees to that

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)
        self._executor.shutdown(wait=True)
