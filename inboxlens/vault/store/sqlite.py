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

from inboxlens.vault.store import DDL, RECORD, Statement, TokenRecord, TokenStore

T = TypeVar("T")
Queued = tuple[Sequence[Statement], "asyncio.Future[list[int]]"]


class SqliteTokenStore(TokenStore):
    """WAL mode with ``synchronous=FULL``: a write that returned survives power loss.

    sqlite3 blocks, so every call but a get by key runs on one thread, which owns the connection.
    Group commit: writes that arrive while a commit is running wait, then go in the next one,
    one transaction and one fsync for all, each in a savepoint so one's error fails only it.
    Each ``_write`` returns only after the commit that holds it did; a failed commit fails all.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-store")
        self._db: sqlite3.Connection | None = None
        self._queue: list[Queued] = []
        self._committing: asyncio.Future[list[list[int] | Exception]] | None = None
        self._closing = False  # close() began: no write is taken any more

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
        db.executescript(self._sql(DDL, blob="BLOB", real="REAL", key="INTEGER PRIMARY KEY AUTOINCREMENT"))
        # A WAL reader waits for no writer: a get by key on the loop costs less than a hop to the thread.
        self._reader = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
        self._reader.execute("PRAGMA busy_timeout=100")  # never long on the loop (WAL recovery by another)
        self._db = db

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open_db(self) -> sqlite3.Connection:
        assert self._db is not None, "store is closed"
        return self._db

    async def _rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return await self._run(lambda: self._open_db().execute(sql.replace("$", "?"), args).fetchall())

    async def get(self, account_id: str) -> TokenRecord | None:
        self._open_db()  # fetchall: the read transaction ends with the statement, no snapshot is kept
        rows = self._reader.execute(self._sql(RECORD + "WHERE account_id = ?"), (account_id,)).fetchall()
        return TokenRecord(*rows[0]) if rows else None

    async def _write(self, *statements: Statement) -> list[int]:
        if self._closing:
            raise sqlite3.ProgrammingError("the token store is closed")
        done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.append((statements, done))
        if self._committing is None and len(self._queue) == 1:  # at the end of this loop turn: with its peers
            asyncio.get_running_loop().call_soon(self._commit_queued)
        return await done

    def _commit_queued(self) -> None:
        batch, self._queue = self._queue, []
        self._committing = asyncio.get_running_loop().run_in_executor(
            self._executor, self._commit, [statements for statements, _ in batch])
        self._committing.add_done_callback(lambda committed: self._answer(batch, committed))

    def _answer(self, batch: list[Queued], committed: asyncio.Future[list[list[int] | Exception]]) -> None:
        self._committing = None
        try:
            outcomes: list[Any] = committed.result()
        except BaseException as e:  # the commit failed (or was cancelled): so did every write in it
            outcomes = [e] * len(batch)
        for (_, done), outcome in zip(batch, outcomes):
            if not done.done():  # a caller cancelled while waiting: its write is committed all the same
                done.set_exception(outcome) if isinstance(outcome, BaseException) else done.set_result(outcome)
        if self._queue:
            self._commit_queued()

    def _commit(self, batch: list[Sequence[Statement]]) -> list[list[int] | Exception]:
        """One transaction for the batch: per write, its row counts or its error. On the store thread."""
        db, outcomes = self._open_db(), list[list[int] | Exception]()
        db.execute("BEGIN")
        try:
            for statements in batch:
                db.execute("SAVEPOINT one")
                try:
                    outcomes.append([db.execute(sql.replace("$", "?"), args).rowcount for sql, args in statements])
                except Exception as e:  # noqa: BLE001 - this write's error: undo it alone
                    db.execute("ROLLBACK TO one")
                    outcomes.append(e)
                db.execute("RELEASE one")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

    def refresh_lock(self, account_id: str) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()  # one vault per file: the keyset lock sees to that

    async def close(self) -> None:
        self._closing = True  # the writes queued still commit; no new one can keep close() waiting
        while self._queue or self._committing is not None:
            await (asyncio.wait([self._committing]) if self._committing else asyncio.sleep(0))
        if self._db is not None:
            db, self._db = self._db, None
            self._reader.close()
            await self._run(db.close)
        self._executor.shutdown(wait=True)
