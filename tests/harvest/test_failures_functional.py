"""Every failure of a sync is recorded on its account, the lease goes back, harvest goes on.

A hostile IMAP server on loopback, a real PostgreSQL, and a fake vault (any token: the
hostile server takes them all).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import timedelta
from typing import AsyncIterator

import asyncpg
import pytest

from inboxlens.config.vault import ProviderConfig
from inboxlens.db.migrate import migrate
from inboxlens.harvest.imap import ImapLimits, ImapSession
from inboxlens.harvest.scheduler import Limits, Scheduler
from inboxlens.harvest.sync import SyncSettings
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.service_errors import MetricsUnavailable
from inboxlens.vault.client import AccessToken
from tests.support.hostile_imap import HostileImap

TOKEN = "hostile-test-access-token-5150"  # must never show in a log line
LIMITS = ImapLimits(literal_bytes=64 << 10, line_bytes=64 << 10, response_bytes=1 << 20)


class FakeVault:
    async def get(self, account_id: str, rejected: str = "") -> AccessToken:
        return AccessToken(TOKEN, 0.0)


class Metrics(PgMetricsStore):
    """The real PostgreSQL store, with an outage where a test wants one."""

    fail_fold = False
    fail_sweep = False
    sweeps = 0

    async def aggregate(self, account, **kwargs):  # type: ignore[no-untyped-def]
        if self.fail_fold:
            raise MetricsUnavailable("cluster unreachable")
        return await super().aggregate(account, **kwargs)

    async def sweep(self, *args):  # type: ignore[no-untyped-def]
        if self.fail_sweep:
            self.sweeps += 1
            raise MetricsUnavailable("cluster unreachable")
        return await super().sweep(*args)


@pytest.fixture
async def pool(pg_db: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(pg_db)
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=10)
    yield pool
    await pool.close()


async def add_account(pool: asyncpg.Pool, provider: str, address: str = "me@hostile.test") -> int:
    user = await pool.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", address)
    return int(await pool.fetchval("INSERT INTO mail_accounts (user_id, address, provider) VALUES ($1, $2, $3) "
                                   "RETURNING id", user, address, provider))


def scheduler(pool: asyncpg.Pool, servers: dict[str, HostileImap], metrics: PgMetricsStore | None = None,
              aggregate: bool = False) -> Scheduler:
    providers = {name: ProviderConfig(imap_host="127.0.0.1", imap_port=s.port, imap_tls="plain")
                 for name, s in servers.items()}

    async def connect(provider: ProviderConfig) -> ImapSession:
        return await ImapSession.open(provider, timeout=10, limits=LIMITS)
    settings = SyncSettings(first_sync_days=3650, lease=timedelta(seconds=60), aggregate=aggregate)
    return Scheduler(pool, FakeVault(), connect, providers, settings,  # type: ignore[arg-type]
                     interval=timedelta(minutes=5), limits=Limits(4, 4), owner="test-harvester",
                     metrics=metrics or Metrics(pool))


async def state(pool: asyncpg.Pool, account: int) -> asyncpg.Record:
    return await pool.fetchrow("SELECT failures, last_error, lease_owner, next_run_at > now() AS backs_off "
                               "FROM harvest_state WHERE account_id = $1", account)


def assert_recorded(row: asyncpg.Record, error: str) -> None:
    assert row["failures"] == 1 and row["lease_owner"] is None and row["backs_off"]
    assert row["last_error"] == error


async def test_a_bad_internaldate_is_recorded_in_words(pool, caplog):
    async with HostileImap("bad_internaldate") as server:
        account = await add_account(pool, "bad")
        assert await scheduler(pool, {"bad": server}).once(account) == 0
    assert_recorded(await state(pool, account),
                    f"127.0.0.1:{server.port} sent an unreadable INTERNALDATE for UID 1 in 'INBOX'")
    assert TOKEN not in caplog.text


async def test_an_oversized_answer_is_recorded_and_other_accounts_are_unaffected(pool, caplog):
    async with HostileImap("huge_literal") as bad, HostileImap("good", messages=5) as good:
        victim, bystander = await add_account(pool, "bad", "a@hostile.test"), await add_account(pool, "good")
        assert await scheduler(pool, {"bad": bad, "good": good}).once() == 5
    assert_recorded(await state(pool, victim), f"127.0.0.1:{bad.port}: a 2147483648-byte literal, over 65536 "
                                               "(harvest.max_literal_bytes) (UID FETCH)")
    assert (await state(pool, bystander))["failures"] == 0
    assert await pool.fetchval("SELECT count(*) FROM raw_headers WHERE account_id = $1", bystander) == 5
    assert TOKEN not in caplog.text


async def test_a_database_error_while_storing_is_recorded(pool):
    # A real PostgreSQL error, raised by the server itself when harvest advances a checkpoint.
    await pool.execute("""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '40P01'; END $$;
        CREATE TRIGGER refuse BEFORE UPDATE ON mailbox_checkpoints FOR EACH ROW EXECUTE FUNCTION refuse();""")
    async with HostileImap("good") as server:
        account = await add_account(pool, "good")
        await scheduler(pool, {"good": server}).once(account)
    assert_recorded(await state(pool, account), "database error 40P01 (DeadlockDetectedError)")


async def test_a_metrics_outage_in_the_fold_is_recorded_and_the_rows_stay(pool):
    metrics = Metrics(pool)
    metrics.fail_fold = True
    async with HostileImap("good") as server:
        account = await add_account(pool, "good")
        assert await scheduler(pool, {"good": server}, metrics, aggregate=True).once(account) == 3
    assert_recorded(await state(pool, account), "aggregation: metrics store unavailable (cluster unreachable)")
    assert await pool.fetchval("SELECT count(*) FROM raw_headers WHERE account_id = $1", account) == 3
    assert await pool.fetchval("SELECT first_sync_done FROM harvest_state WHERE account_id = $1", account)


async def test_an_unexpected_error_is_recorded_and_logged_with_its_traceback_not_its_message(pool, caplog):
    async with HostileImap("good") as server:
        account = await add_account(pool, "good")
        sched = scheduler(pool, {"good": server})

        said = f"a bug quoting {secrets.token_hex(8)}"

        async def broken(provider: ProviderConfig) -> ImapSession:
            raise RuntimeError(said)
        sched.connect = broken
        await sched.once(account)
    assert_recorded(await state(pool, account), f"internal error (RuntimeError) while syncing "
                                                f"127.0.0.1:{server.port}; see the harvest log")
    # where it failed, but not what it said: an exception's text may quote a token or a header
    assert "Traceback" in caplog.text and "RuntimeError" in caplog.text and "broken" in caplog.text
    assert said not in caplog.text


async def test_the_running_scheduler_survives_failed_syncs_and_a_failed_sweep(pool, caplog):
    """Before: the sweep's MetricsUnavailable ended run(); a sync's ValueError ended its task unseen."""
    metrics = Metrics(pool)
    metrics.fail_sweep = True
    async with HostileImap("bad_internaldate") as server:
        account = await add_account(pool, "bad")
        sched = scheduler(pool, {"bad": server}, metrics)
        stopping = asyncio.Event()
        run = asyncio.create_task(sched.run(stopping, tick=0.01))
        for _ in range(1000):  # bounded: the sync and the sweep take milliseconds
            if metrics.sweeps and (await state(pool, account))["failures"]:
                break
            await asyncio.sleep(0.01)
        assert not run.done()  # the failed sweep did not end it
        stopping.set()
        assert await asyncio.wait_for(run, 10) is True
    assert_recorded(await state(pool, account),
                    f"127.0.0.1:{server.port} sent an unreadable INTERNALDATE for UID 1 in 'INBOX'")
    assert "the retention sweep failed (metrics store unavailable (cluster unreachable))" in caplog.text
    assert "never retrieved" not in caplog.text


async def test_stopping_interrupts_a_stuck_sync_promptly_and_gives_the_lease_back(pool):
    async with HostileImap("stall") as server:
        account = await add_account(pool, "stall")
        sched = scheduler(pool, {"stall": server})
        stopping = asyncio.Event()
        run = asyncio.create_task(sched.run(stopping, tick=60, drain=0.2))
        await asyncio.wait_for(server.fetched.wait(), 10)  # the sync is inside its FETCH
        stopping.set()
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(run, 10) is False  # it had to be interrupted
        assert asyncio.get_running_loop().time() - started < 5  # not the 10 s IMAP timeout
    row = await pool.fetchrow("SELECT lease_owner, last_error, next_run_at <= now() AS due FROM harvest_state "
                              "WHERE account_id = $1", account)
    assert row["lease_owner"] is None and row["due"]
    assert row["last_error"] == "interrupted: harvest stopped during the sync"


def test_no_handler_in_harvest_swallows_cancellation():
    """A handler that can catch CancelledError (it, BaseException, or bare) must re-raise."""
    import ast
    import pathlib
    package = pathlib.Path(__file__).resolve().parents[2] / "inboxlens" / "harvest"
    checked = 0
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler):
                caught = ast.unparse(node.type) if node.type is not None else "BaseException"
                if "CancelledError" in caught or "BaseException" in caught:
                    checked += 1
                    assert any(isinstance(n, ast.Raise) and n.exc is None for n in node.body), \
                        f"{path.name}:{node.lineno} swallows {caught}"
    assert checked >= 1  # sync_account's handler, which gives the lease back and re-raises
