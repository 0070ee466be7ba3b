"""Rollups on a real PostgreSQL: exactly-once under repeats, failures and concurrency; DST days;
weekly and monthly rollups against the daily ones; who counts as a correspondent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from inboxlens.harvest.headers.parse import parse_header_block
from inboxlens.harvest.store import msg_key
from inboxlens.metrics.postgres import rollups
from inboxlens.db.migrate import migrate
from tests.metrics.test_rollups import OWN, Expected, Message, add_account, assert_rollups, store

UTC = timezone.utc
EVER = (date(2000, 1, 1), date(2100, 1, 1))


@pytest.fixture
async def pool(pg_db: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(pg_db)
    async with asyncpg.create_pool(pg_db, min_size=1, max_size=12) as pool:
        yield pool


def mailbox(count: int, start: datetime = datetime(2024, 3, 28, tzinfo=UTC), step: timedelta = timedelta(minutes=97),
            people: tuple[str, ...] = ("ann@example.test", "bob@example.test", "carol@other.test")) -> list[Message]:
    """count messages every step from start, alternating directions and correspondents."""
    return [Message(start + i * step, "received", people[i % len(people)]) if i % 3 else
            Message(start + i * step, "sent", OWN, (people[i % len(people)],), (people[(i + 1) % len(people)],))
            for i in range(count)]


async def counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    return (await pool.fetchval("SELECT count(*) FROM raw_headers"),
            await pool.fetchval("SELECT count(*) FROM message_index"),
            await pool.fetchval("SELECT coalesce(sum(received + sent), 0) FROM account_daily"))


# -- exactly once -------------------------------------------------------------------------------------

async def test_aggregating_again_or_harvesting_again_counts_nothing_twice(pool: asyncpg.Pool) -> None:
    account = await add_account(pool, time_zone="Europe/Berlin")
    messages = mailbox(50)
    await store(pool, account, messages)
    assert await rollups.aggregate(pool, account, batch_size=7) == rollups.FoldResult(
        50, 50, frozenset(m.sent_at.astimezone(ZoneInfo("Europe/Berlin")).date() for m in messages),
        frozenset(p for m in messages for p in m.correspondents(OWN)))
    assert await rollups.aggregate(pool, account) == rollups.FoldResult()
    await store(pool, account, messages[:20])  # a new UIDVALIDITY: harvest fetches them again
    again = await rollups.aggregate(pool, account)
    assert (again.taken, again.folded, again.duplicates) == (20, 0, 20)
    assert await counts(pool) == (0, 50, 50)
    await assert_rollups(pool, account, Expected.of(messages, "Europe/Berlin"))
    state = await pool.fetchrow("SELECT * FROM metrics_state WHERE account_id = $1", account)
    assert (state["messages_folded"], state["duplicates_seen"], state["runs"]) == (50, 20, 10)


async def test_a_failure_mid_transaction_leaves_no_trace(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    account = await add_account(pool, time_zone="America/New_York")
    messages = mailbox(30)
    await store(pool, account, messages)
    calls = 0

    async def crash_in_second_batch(conn: asyncpg.Connection, account_id: int, days: frozenset[date]) -> None:
        nonlocal calls
        calls += 1
        await recount(conn, account_id, days)
        if calls == 2:  # after the second batch's rows were deleted, indexed and counted
            raise RuntimeError("injected crash")

    recount = rollups._recount
    monkeypatch.setattr(rollups, "_recount", crash_in_second_batch)
    with pytest.raises(RuntimeError, match="injected crash"):
        await rollups.aggregate(pool, account, batch_size=10)
    assert await counts(pool) == (20, 10, 10)  # the first batch committed, the second left no trace
    monkeypatch.setattr(rollups, "_recount", recount)
    assert (await rollups.aggregate(pool, account, batch_size=10)).folded == 20
    await assert_rollups(pool, account, Expected.of(messages, "America/New_York"))


async def test_a_statement_failing_inside_the_fold_rolls_it_all_back(pool: asyncpg.Pool) -> None:
    account = await add_account(pool)
    messages = [*mailbox(12), Message(datetime(2024, 4, 2, tzinfo=UTC), "received", "boom@example.test")]
    await store(pool, account, messages)
    await pool.execute("""
        CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.correspondent = 'boom@example.test' THEN RAISE 'injected failure'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER boom BEFORE INSERT ON correspondent_daily FOR EACH ROW EXECUTE FUNCTION boom();""")
    with pytest.raises(asyncpg.RaiseError, match="injected failure"):
        await rollups.aggregate(pool, account)
    assert await counts(pool) == (13, 0, 0)
    assert await pool.fetchval("SELECT count(*) FROM correspondent_daily") == 0
    await pool.execute("DROP TRIGGER boom ON correspondent_daily")
    await rollups.aggregate(pool, account)
    await assert_rollups(pool, account, Expected.of(messages, "UTC"))


async def test_two_aggregators_take_turns(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    account = await add_account(pool, time_zone="Europe/Berlin")
    first, later = mailbox(40), mailbox(25, start=datetime(2024, 3, 30, 12, tzinfo=UTC))
    await store(pool, account, first)
    inside, go_on = asyncio.Event(), asyncio.Event()

    async def pause_once(conn: asyncpg.Connection, account_id: int, days: frozenset[date]) -> None:
        await recount(conn, account_id, days)
        if not inside.is_set():
            inside.set()
            await go_on.wait()

    recount = rollups._recount
    monkeypatch.setattr(rollups, "_recount", pause_once)
    one = asyncio.create_task(rollups.aggregate(pool, account))
    await inside.wait()  # the first has folded its rows and holds the account, uncommitted
    await store(pool, account, later)  # harvest goes on meanwhile
    two = asyncio.create_task(rollups.aggregate(pool, account))
    try:
        assert "metrics_state" in await wait_until_blocked(pool)  # at the door, before touching a raw row
    finally:
        go_on.set()
    results = await asyncio.gather(one, two)
    assert [r.folded for r in results] == [40, 25]
    assert await counts(pool) == (0, 65, 65)
    await assert_rollups(pool, account, Expected.of([*first, *later], "Europe/Berlin"))


async def wait_until_blocked(pool: asyncpg.Pool, timeout: float = 10.0) -> str:
    """The query of a session waiting on a lock, once there is one (PostgreSQL has no event for it)."""
    deadline = time.monotonic() + timeout
    query = "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    while (waiting := await pool.fetchval(query)) is None:
        assert time.monotonic() < deadline, "the second aggregator never waited for the first"
        await asyncio.sleep(0.01)
    return str(waiting)


async def test_many_aggregators_and_a_harvester_at_once(pool: asyncpg.Pool) -> None:
    account = await add_account(pool, time_zone="America/New_York")
    messages = mailbox(600, step=timedelta(minutes=13))
    chunks = [messages[i:i + 50] for i in range(0, len(messages), 50)]

    async def harvest() -> None:
        for chunk in chunks:
            await store(pool, account, [*chunk, *messages[:10]])

    aggregators = (rollups.aggregate(pool, account, batch_size=size) for size in (5, 17, 40) * 3)
    await asyncio.gather(harvest(), *aggregators)
    await rollups.aggregate(pool, account)
    assert await counts(pool) == (0, 600, 600)
    await assert_rollups(pool, account, Expected.of(messages, "America/New_York"))


# -- local days ------------------------------------------------------------------------------------------

async def test_dst_days_count_their_messages_on_their_local_dates(pool: asyncpg.Pool) -> None:
    account = await add_account(pool, time_zone="Europe/Berlin")
    at = [datetime(2024, 3, 30, 22, 59, tzinfo=UTC),  # 23:59 CET, 30 March
          datetime(2024, 3, 30, 23, 0, tzinfo=UTC),  # 00:00 CET, 31 March: the 23-hour day begins
          datetime(2024, 3, 31, 1, 30, tzinfo=UTC),  # 03:30 CEST (02:00-02:59 does not exist)
          datetime(2024, 3, 31, 21, 59, tzinfo=UTC),  # 23:59 CEST, still 31 March
          datetime(2024, 3, 31, 22, 0, tzinfo=UTC),  # 00:00 CEST, 1 April (and a new month)
          datetime(2024, 10, 26, 22, 0, tzinfo=UTC),  # 00:00 CEST, 27 October: the 25-hour day begins
          datetime(2024, 10, 27, 0, 30, tzinfo=UTC),  # 02:30 CEST
          datetime(2024, 10, 27, 1, 30, tzinfo=UTC),  # 02:30 CET: the same hour again
          datetime(2024, 10, 27, 22, 59, tzinfo=UTC),  # 23:59 CET, still 27 October
          datetime(2024, 10, 27, 23, 0, tzinfo=UTC)]  # 00:00 CET, 28 October
    await store(pool, account, [Message(t, "received", "ann@example.test") for t in at])
    await rollups.aggregate(pool, account)
    days = {d.day: d for d in await rollups.daily(pool, account, *EVER)}
    assert {day: d.received for day, d in days.items()} == {
        date(2024, 3, 30): 1, date(2024, 3, 31): 3, date(2024, 4, 1): 1, date(2024, 10, 27): 4, date(2024, 10, 28): 1}
    assert [h for h, n in enumerate(days[date(2024, 3, 31)].received_by_hour) for _ in range(n)] == [0, 3, 23]
    assert [h for h, n in enumerate(days[date(2024, 10, 27)].received_by_hour) for _ in range(n)] == [0, 2, 2, 23]
    months = {m.start: m.received for m in await rollups.monthly(pool, account, *EVER)}
    assert months == {date(2024, 3, 1): 4, date(2024, 4, 1): 1, date(2024, 10, 1): 5}


async def test_new_york_spring_day_and_each_account_its_own_zone(pool: asyncpg.Pool) -> None:
    new_york = await add_account(pool, time_zone="America/New_York")
    tokyo = await add_account(pool, "me@tokyo.test", "Asia/Tokyo")
    at = [datetime(2024, 3, 10, 4, 59, tzinfo=UTC), datetime(2024, 3, 10, 5, 0, tzinfo=UTC),  # 23:59 / 00:00 EST
          datetime(2024, 3, 11, 3, 59, tzinfo=UTC), datetime(2024, 3, 11, 4, 0, tzinfo=UTC)]  # 23:59 EDT / 00:00 EDT
    for account in (new_york, tokyo):
        await store(pool, account, [Message(t, "received", "ann@example.test") for t in at])
        await rollups.aggregate(pool, account)
    assert [(d.day, d.received) for d in await rollups.daily(pool, new_york, *EVER)] == [
        (date(2024, 3, 9), 1), (date(2024, 3, 10), 2), (date(2024, 3, 11), 1)]
    assert [(d.day, d.received) for d in await rollups.daily(pool, tokyo, *EVER)] == [
        (date(2024, 3, 10), 2), (date(2024, 3, 11), 2)]


# -- weekly and monthly from daily --------------------------------------------------------------------

Reader = Callable[[asyncpg.Pool, int, date, date], Awaitable[list[rollups.PeriodRollup]]]


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def first_of_month(day: date) -> date:
    return day.replace(day=1)


async def test_weekly_and_monthly_are_sums_of_daily(pool: asyncpg.Pool) -> None:
    account = await add_account(pool, time_zone="Europe/Berlin")
    await store(pool, account, mailbox(900, start=datetime(2024, 2, 20, tzinfo=UTC), step=timedelta(minutes=131)))
    await rollups.aggregate(pool, account)
    days = await rollups.daily(pool, account, *EVER)
    people = await rollups.correspondents(pool, account, *EVER)
    assert days[0].day == date(2024, 2, 20) and days[-1].day == date(2024, 5, 11)
    periods: list[tuple[Reader, rollups.Period, Callable[[date], date]]] = [
        (rollups.weekly, "week", monday), (rollups.monthly, "month", first_of_month)]
    for read, period, start_of in periods:
        found = await read(pool, account, *EVER)
        assert [p.start for p in found] == sorted({start_of(d.day) for d in days})
        for p in found:
            mine = [d for d in days if start_of(d.day) == p.start]
            assert (p.received, p.sent) == (sum(d.received for d in mine), sum(d.sent for d in mine))
            assert p.received_by_hour == tuple(map(sum, zip(*(d.received_by_hour for d in mine))))
            assert p.sent_by_hour == tuple(map(sum, zip(*(d.sent_by_hour for d in mine))))
            assert p.received_by_weekday == tuple(sum(d.received for d in mine if d.day.weekday() == w)
                                                  for w in range(7))
            assert p.correspondents == len({c.correspondent for c in people if start_of(c.start) == p.start})
        totals = await rollups.correspondents(pool, account, *EVER, period=period)
        assert {(c.start, c.correspondent, c.received, c.sent, c.active_days) for c in totals} == {
            (start, who, sum(c.received for c in mine), sum(c.sent for c in mine), len(mine))
            for start, who in {(start_of(c.start), c.correspondent) for c in people}
            for mine in [[c for c in people if (start_of(c.start), c.correspondent) == (start, who)]]}


async def test_iso_weeks_cross_the_new_year(pool: asyncpg.Pool) -> None:
    account = await add_account(pool)
    await store(pool, account, [Message(datetime(2024, 12, 30, 12, tzinfo=UTC), "received", "ann@example.test"),
                                Message(datetime(2025, 1, 5, 12, tzinfo=UTC), "received", "ann@example.test"),
                                Message(datetime(2025, 1, 6, 12, tzinfo=UTC), "received", "bob@example.test")])
    await rollups.aggregate(pool, account)
    weeks = await pool.fetch("SELECT week_start, iso_year, iso_week, received, correspondents FROM account_weekly")
    assert [tuple(w) for w in weeks] == [(date(2024, 12, 30), 2025, 1, 2, 1), (date(2025, 1, 6), 2025, 2, 1, 1)]


# -- who is a correspondent, and the message index --------------------------------------------------

async def test_correspondents_are_the_other_party_once_per_message(pool: asyncpg.Pool) -> None:
    account = await add_account(pool)
    day = datetime(2024, 5, 6, 9, tzinfo=UTC)
    await store(pool, account, [
        Message(day, "sent", OWN, ("Ann@Example.test", "ann@example.test", "ME@example.test"), ("ann@example.test",)),
        Message(day, "sent", OWN),  # no recipients at all (a draft-like Bcc-only message)
        Message(day, "received", "ann@example.test"),
        Message(day, "received", None),  # an unreadable From
    ])
    await rollups.aggregate(pool, account)
    assert await rollups.correspondents(pool, account, *EVER) == [
        rollups.CorrespondentRollup(day.date(), "ann@example.test", 1, 1, 1)]
    assert await rollups.correspondents(pool, account, *EVER, correspondent="ANN@example.test") != []
    [today] = await rollups.daily(pool, account, *EVER)
    assert (today.received, today.sent, today.correspondents) == (2, 2, 1)


async def test_a_reply_finds_its_parent_by_harvests_key(pool: asyncpg.Pool) -> None:
    account = await add_account(pool)
    when = datetime(2024, 5, 6, 9, tzinfo=UTC)
    parent = parse_header_block(1, when, b"Message-ID: <q@example.test>\r\nFrom: ann@example.test\r\n\r\n",
                                trusted_authserv_ids=frozenset())
    reply = parse_header_block(2, when, b"Message-ID: <a@example.test>\r\nIn-Reply-To: <q@example.test>\r\n"
                               b"References: <root@x> <q@example.test>\r\nFrom: me@example.test\r\n\r\n",
                               trusted_authserv_ids=frozenset())
    await store(pool, account, [Message(when, "received", "ann@example.test", message_id="q@example.test",
                                        key=msg_key(parent)),
                                Message(when + timedelta(hours=1), "sent", OWN, ("ann@example.test",),
                                        message_id="a@example.test", in_reply_to=reply.in_reply_to,
                                        key=msg_key(reply)),
                                # No In-Reply-To: the last References id is the parent.
                                Message(when + timedelta(hours=3), "sent", OWN, ("ann@example.test",),
                                        refs=reply.references)])
    await rollups.aggregate(pool, account)
    pairs = await pool.fetch("SELECT p.direction, r.sent_at - p.sent_at AS delay FROM message_index r "
                             "JOIN message_index p ON p.account_id = r.account_id AND p.msg_key = ANY (r.parent_keys) "
                             "ORDER BY delay")
    assert [tuple(p) for p in pairs] == [("received", timedelta(hours=1)), ("received", timedelta(hours=3))]


async def test_asking_for_no_account_or_no_batch_is_the_callers_mistake(pool: asyncpg.Pool) -> None:
    with pytest.raises(rollups.AccountNotFound):
        await rollups.aggregate(pool, 12345)
    with pytest.raises(ValueError):
        await rollups.aggregate(pool, await add_account(pool), batch_size=0)
