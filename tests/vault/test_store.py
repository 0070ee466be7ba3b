"""One contract, every token store backend."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import threading
from pathlib import Path
from typing import AsyncIterator, Sequence

import pytest

from inboxlens.vault.store import OK, REAUTH_REQUIRED, TokenStore
from inboxlens.vault.store.sqlite import SqliteTokenStore


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TokenStore]:
    if request.param == "sqlite":
        s: TokenStore = await SqliteTokenStore.open(tmp_path / "tokens.sqlite3")
    else:
        from inboxlens.vault.store.postgres import PgTokenStore
        s = await PgTokenStore.open(request.getfixturevalue("pg_db"))
    yield s
    await s.close()


async def test_put_get_replace_delete(store: TokenStore):
    assert await store.get("a") is None
    await store.put("a", "google", 1, b"\x01sealed-1")
    record = await store.get("a")
    assert (record.provider, record.key_id, record.sealed, record.status) == ("google", 1, b"\x01sealed-1", OK)
    assert await store.replace("a", b"\x01sealed-1", 2, b"\x01sealed-2")
    assert not await store.replace("a", b"\x01sealed-1", 3, b"\x01sealed-3")  # compare-and-set
    assert (await store.get("a")).key_id == 2
    assert await store.delete("a")
    assert not await store.delete("a")
    assert await store.get("a") is None


async def test_status_is_reset_by_put(store: TokenStore):
    await store.put("a", "google", 1, b"x")
    await store.set_status("a", REAUTH_REQUIRED)
    assert (await store.get("a")).status == REAUTH_REQUIRED
    assert await store.count_by_status() == {REAUTH_REQUIRED: 1}
    await store.put("a", "google", 1, b"y")
    assert (await store.get("a")).status == OK


async def test_counts_and_rewrap_selection(store: TokenStore):
    for i in range(5):
        await store.put(f"acct-{i}", "google", 1 if i < 3 else 2, b"s%d" % i)
    assert await store.count_by_key() == {1: 3, 2: 2}
    batch = await store.not_under(2, limit=2)
    assert [r.account_id for r in batch] == ["acct-0", "acct-1"]
    assert all(r.key_id == 1 for r in await store.not_under(2, limit=10))
    assert await store.not_under(1, limit=10) == await store.not_under(1, limit=10)


async def test_events_newest_first_and_bounded(store: TokenStore):
    for kind in ("refresh_failed", "refresh_recovered"):
        await store.add_event("a", kind, "")
    events = await store.events(limit=10)
    assert [e["kind"] for e in events] == ["refresh_recovered", "refresh_failed"]
    assert len(await store.events(limit=1)) == 1


async def test_sqlite_file_is_private(tmp_path: Path):
    s = await SqliteTokenStore.open(tmp_path / "t.sqlite3")
    await s.put("a", "google", 1, b"x")
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    await s.close()
    reopened = await SqliteTokenStore.open(tmp_path / "t.sqlite3")
    assert (await reopened.get("a")).sealed == b"x"
    await reopened.close()


async def test_put_with_its_event_swaps_in_one_batch_and_pruned_events(store: TokenStore,
                                                                        monkeypatch: pytest.MonkeyPatch):
    await store.put("a", "google", 1, b"a1", event="token_set: sealed under key 1")
    await store.put("b", "google", 1, b"b1")
    assert [(e["account_id"], e["kind"], e["detail"]) for e in await store.events(10)] == [
        ("a", "token_set", "sealed under key 1")]
    assert await store.replace_many([("a", b"a1", 2, b"a2"), ("b", b"stale", 2, b"b2")]) == [True, False]
    assert [(r.account_id, r.key_id, r.sealed) for r in await store.not_under(9, 10)] == [
        ("a", 2, b"a2"), ("b", 1, b"b1")]
    assert await store.replace_many([]) == []
    monkeypatch.setattr("inboxlens.vault.store.MAX_EVENTS", 3)
    for n in range(5):
        await store.add_event("a", f"kind-{n}", "")
    assert [e["kind"] for e in await store.events(10)] == ["kind-4", "kind-3", "kind-2"]


class _Db:
    """The store's connection, with its COMMIT failing or held until the test lets it go."""

    def __init__(self, db: sqlite3.Connection, fail: bool = False) -> None:
        self.db, self.fail = db, fail
        self.commits, self.at_commit, self.go = 0, threading.Event(), threading.Event()

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def execute(self, sql: str, args: Sequence[object] = ()) -> sqlite3.Cursor:
        if sql == "COMMIT":
            self.commits += 1
            self.at_commit.set()
            if self.fail:
                raise sqlite3.OperationalError("disk I/O error")
            assert self.go.wait(10), "the test never let the commit go"
        return self.db.execute(sql, args)

    def close(self) -> None:
        self.db.close()


def _stored(path: Path) -> dict[str, bytes]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT account_id, sealed FROM tokens").fetchall())


async def test_sqlite_concurrent_writes_share_a_commit_and_all_are_on_disk(tmp_path: Path):
    s = await SqliteTokenStore.open(tmp_path / "t.sqlite3")
    s._db = spy = _Db(s._open_db())  # type: ignore[assignment]
    spy.go.set()
    await asyncio.gather(*(s.put(f"acct-{i}", "google", 1, b"s%d" % i) for i in range(50)))
    assert spy.commits < 50 / 4  # grouped: 50 writes, at most a few fsyncs
    await s.close()
    assert _stored(tmp_path / "t.sqlite3") == {f"acct-{i}": b"s%d" % i for i in range(50)}


async def test_sqlite_write_is_not_answered_before_its_commit_returns(tmp_path: Path):
    s = await SqliteTokenStore.open(tmp_path / "t.sqlite3")
    s._db = spy = _Db(s._open_db())  # type: ignore[assignment]
    first = asyncio.create_task(s.put("a", "google", 1, b"a1"))
    assert await asyncio.to_thread(spy.at_commit.wait, 10)
    second = asyncio.create_task(s.put("b", "google", 1, b"b1"))  # waits for the next commit
    await asyncio.to_thread(lambda: None)  # loop turns enough for an early answer to have landed
    assert not first.done() and not second.done()
    spy.go.set()
    await asyncio.gather(first, second)
    assert spy.commits == 2
    await s.close()
    assert _stored(tmp_path / "t.sqlite3") == {"a": b"a1", "b": b"b1"}


async def test_sqlite_failed_commit_fails_every_write_in_it_and_only_those(tmp_path: Path):
    s = await SqliteTokenStore.open(tmp_path / "t.sqlite3")
    await s.put("before", "google", 1, b"kept")
    s._db = spy = _Db(s._open_db(), fail=True)  # type: ignore[assignment]
    results = await asyncio.gather(*(s.put(f"acct-{i}", "google", 1, b"x") for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
    assert spy.commits < 5  # so at least one failed commit held several writes
    spy.fail = False
    spy.go.set()
    await s.put("after", "google", 1, b"ok")
    await s.close()
    assert _stored(tmp_path / "t.sqlite3") == {"before": b"kept", "after": b"ok"}


async def test_sqlite_one_bad_write_fails_alone_in_its_batch(tmp_path: Path):
    s = await SqliteTokenStore.open(tmp_path / "t.sqlite3")
    results = await asyncio.gather(s.put("a", "google", 1, b"a1"), s.put("b", None, 1, b"b1"),  # type: ignore[arg-type]
                                   s.put("c", "google", 1, b"c1"), return_exceptions=True)
    assert results[0] is None and results[2] is None and isinstance(results[1], sqlite3.IntegrityError), results
    await s.close()
    assert _stored(tmp_path / "t.sqlite3") == {"a": b"a1", "c": b"c1"}


async def test_sqlite_get_reads_committed_tokens_without_waiting_for_a_commit(tmp_path: Path):
    s = await SqliteTokenStore.open(tmp_path / "t.sqlite3")
    await s.put("a", "google", 1, b"a1")
    s._db = spy = _Db(s._open_db())  # type: ignore[assignment]
    held = asyncio.create_task(s.replace("a", b"a1", 2, b"a2"))
    assert await asyncio.to_thread(spy.at_commit.wait, 10)
    assert (await s.get("a")).sealed == b"a1"  # answered while the store thread is held; nothing uncommitted
    spy.go.set()
    assert await held
    assert (await s.get("a")).sealed == b"a2"
    await s.close()


async def test_sqlite_close_commits_the_queued_writes_then_refuses_new_ones(tmp_path: Path):
    """Before: a write after close() waited forever (its commit could not be scheduled)."""
    s = await SqliteTokenStore.open(tmp_path / "t.sqlite3")
    s._db = spy = _Db(s._open_db())  # type: ignore[assignment]
    held = asyncio.create_task(s.put("a", "google", 1, b"a1"))
    assert await asyncio.to_thread(spy.at_commit.wait, 10)
    queued = asyncio.create_task(s.put("b", "google", 1, b"b1"))  # waits for the next commit
    cancelled = asyncio.create_task(s.put("c", "google", 1, b"c1"))
    await asyncio.sleep(0)
    cancelled.cancel()  # its caller gave up: the write is committed all the same
    closing = asyncio.create_task(s.close())
    await asyncio.sleep(0)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        await asyncio.wait_for(s.put("d", "google", 1, b"d1"), 5)
    spy.go.set()
    await asyncio.wait_for(asyncio.gather(held, queued, closing), 10)
    assert cancelled.cancelled()
    assert _stored(tmp_path / "t.sqlite3") == {"a": b"a1", "b": b"b1", "c": b"c1"}
