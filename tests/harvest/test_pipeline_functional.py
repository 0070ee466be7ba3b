"""The sync's pipeline (issue 16.1): fetch ahead while storing, stores in order, grouped when the database is slow.

A scripted mail session (no IMAP server: what matters is the order of fetches and stores)
and a real PostgreSQL with the real store, gated where a test needs a store to be slow.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import AsyncIterator, Sequence

import asyncpg
import pytest

from inboxlens.db.migrate import migrate
from inboxlens.harvest import store
from inboxlens.harvest.sync import Fetched, Mailbox, SyncSettings, sync_account
from inboxlens.metrics.model import RawRow
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.config.vault import ProviderConfig
from inboxlens.vault.client import AccessToken

ADDRESS = "me@pipeline.test"
MESSAGES = 10
BATCH = 2
YIELDS = 1000


class Vault:
    async def get(self, account_id: str, rejected: str = "") -> AccessToken:
        return AccessToken("pipeline-token", 0.0)


class Session:
    """INBOX holds UIDs 1..MESSAGES; every call is logged in order, with how many fetches were running."""

    capabilities = frozenset({"IMAP4REV1", "AUTH=XOAUTH2"})

    def __init__(self, log: list[str], fail_fetch: int | None = None) -> None:
        self.log = log
        self.running = 0
        self.most_running = 0
        self.fail_fetch = fail_fetch

    async def authenticate(self, user: str, access_token: str) -> None: ...
    async def identify(self) -> None: ...

    async def mailboxes(self) -> list[Mailbox]:
        return [Mailbox("INBOX", frozenset())]

    async def examine(self, mailbox: str) -> int:
        return 7

    async def search_since(self, since: datetime) -> Sequence[int]:
        return list(range(1, MESSAGES + 1))

    async def search_above(self, uid: int) -> Sequence[int]:
        return list(range(uid + 1, MESSAGES + 1))

    async def fetch_headers(self, uids: Sequence[int], fields: Sequence[str], gmail: bool) -> list[Fetched]:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.log.append(f"fetch {uids[0]}")
        try:
            await asyncio.sleep(0)  # a real fetch yields to the loop while the answer arrives
            if uids[0] == self.fail_fetch:
                raise OSError("connection reset")
            return [Fetched(uid, "17-Jul-2024 02:44:25 +0000", frozenset(),
                            f"Message-ID: <{uid}@pipeline.test>\r\nSubject: {uid}\r\n\r\n".encode()) for uid in uids]
        finally:
            self.running -= 1

    async def logout(self) -> None: ...


class GatedStore(PgMetricsStore):
    """The real store; its first write waits until the fetch ``release_at`` has been asked for (or YIELDS loop turns)."""

    def __init__(self, pool: asyncpg.Pool, log: list[str], release_at: str) -> None:
        super().__init__(pool)
        self.log = log
        self.release_at = release_at
        self.sizes: list[int] = []

    async def write_raw(self, rows: Sequence[RawRow]) -> int:
        self.log.append(f"store {len(rows)}")
        for _ in range(YIELDS if not self.sizes else 0):  # bounded: a sync that fetches only after storing
            if self.release_at in self.log:                # never gets there, and the test fails, not hangs
                break
            await asyncio.sleep(0)
        self.sizes.append(len(rows))
        inserted = await super().write_raw(rows)
        self.log.append(f"stored {len(rows)}")
        return inserted


@pytest.fixture
async def pool(pg_db: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(pg_db)
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def _sync(pool: asyncpg.Pool, session: Session, metrics: PgMetricsStore) -> tuple[int, store.Account]:
    user = await pool.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", ADDRESS)
    await pool.execute("INSERT INTO mail_accounts (user_id, address, provider) VALUES ($1, $2, 'test')", user, ADDRESS)
    await store.schedule_new_accounts(pool)
    await pool.execute("UPDATE harvest_state SET next_run_at = now()")
    [account] = await store.claim_due(pool, "pipeline", timedelta(minutes=1), 1)

    async def connect(provider: ProviderConfig) -> Session:
        return session
    settings = SyncSettings(batch_size=BATCH, first_sync_days=3650, lease=timedelta(minutes=1), aggregate=False)
    stored = await sync_account(pool, Vault(), connect, ProviderConfig(imap_host="127.0.0.1"),  # type: ignore[arg-type]
                                account, "pipeline", settings, interval=timedelta(minutes=5), metrics=metrics)
    return stored, account


async def test_batches_are_fetched_while_a_slow_store_runs_and_then_stored_together(pool):
    log: list[str] = []
    session = Session(log)
    # The first store holds until the fifth batch (UIDs 9-10) has been asked for.
    metrics = GatedStore(pool, log, release_at="fetch 9")
    stored, account = await _sync(pool, session, metrics)
    assert stored == MESSAGES
    # Fetching went on while the first store was held: batches 2-4 waited and went in one transaction.
    assert log.index("fetch 3") < log.index("stored 2")
    assert metrics.sizes == [2, 6, 2]
    assert session.most_running == 1  # never more than one fetch ahead
    rows = await pool.fetch("SELECT uid FROM raw_headers WHERE account_id = $1 ORDER BY uid", account.id)
    assert [r["uid"] for r in rows] == list(range(1, MESSAGES + 1))
    assert await store.checkpoint(pool, account.id, "INBOX") == (7, MESSAGES)


async def test_a_failed_fetch_ahead_lets_the_store_under_way_commit_and_is_recorded(pool):
    log: list[str] = []
    session = Session(log, fail_fetch=3)  # the second batch's fetch fails while the first is stored
    metrics = GatedStore(pool, log, release_at="fetch 3")
    stored, account = await _sync(pool, session, metrics)
    assert stored == BATCH
    assert await store.checkpoint(pool, account.id, "INBOX") == (7, BATCH)  # the first batch, and only it
    state = await pool.fetchrow("SELECT failures, last_error, lease_owner FROM harvest_state WHERE account_id = $1",
                                account.id)
    assert (state["failures"], state["lease_owner"]) == (1, None)
    assert state["last_error"] == "connection failed (OSError)"
    running = [getattr(task.get_coro(), "__qualname__", "") for task in asyncio.all_tasks()]
    assert not [name for name in running if name.endswith(("fetch_headers", "._store"))]  # none left behind
