"""The Cassandra metrics store: its pure parts, and the whole store over a fake driver.

No cluster runs here. The fake (tests/metrics/cassandra_support.py) checks every statement
against cassandra.cql and pages results from another thread, so the store's CQL, its
asyncio bridge and its fold run for real; what only a cluster can show (consistency,
TTLs, the driver itself) is in the tests at the end, which need INBOXLENS_TEST_CASSANDRA.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from inboxlens.config.schema import MetricsConfig
from inboxlens.metrics.cassandra import session as cassandra_session
from inboxlens.metrics.cassandra.store import CassandraMetricsStore
from inboxlens.metrics.cassandra.fold import (Entry, choose_parent, entry_of, fold_day, live_raw_buckets, message_key, newly_answered, raw_bucket, sum_periods, thread_parent, DayRow)
from inboxlens.metrics.cassandra.session import (CassandraUnavailable, contact_points, gather_bounded, keyspace_cql, schema_statements, SCHEMA_FILE)
from inboxlens.metrics.cassandra.statements import STATEMENTS, as_date
from inboxlens.metrics.model import AccountRef, InsightSettings, Quantiles, RawRow

from .cassandra_support import SKIP_REASON, FakeDb, Statement, cassandra_store, fake_session

UTC = timezone.utc
NY = "America/New_York"
OWN = "me@example.test"
ACCOUNT = AccountRef(7, OWN, NY)
NOW = datetime(2024, 11, 20, 17, tzinfo=UTC)
CLUSTER = os.environ.get("INBOXLENS_TEST_CASSANDRA", "")


def raw(n: int, sent_at: datetime, direction: str = "received", *, who: str = "ann@example.org",
        to: tuple[str, ...] = (), irt: tuple[str, ...] = (), refs: tuple[str, ...] = (), thread: int | None = None,
        automated: bool = False, dkim: str | None = None, account: AccountRef = ACCOUNT) -> RawRow:
    sender = account.address if direction == "sent" else who
    return RawRow(account.id, message_key(f"<m{n}@x>"), "INBOX", n, f"<m{n}@x>", irt, refs, f"subject {n}", sender,
                  None, to or ((who,) if direction == "sent" else (account.address,)), (), sent_at, sent_at, True,
                  direction, automated, dkim=dkim, gm_thread_id=thread)  # type: ignore[arg-type]


def store(db: FakeDb, now: datetime = NOW) -> CassandraMetricsStore:
    return CassandraMetricsStore(fake_session(db), InsightSettings(), clock=lambda: now)


def snapshot(db: FakeDb) -> dict[str, list[Any]]:
    """What a fold leaves, raw rows aside: rows as sorted reprs (timestamps left out)."""
    return {t: sorted(map(repr, (sorted(r.items()) for r in db.rows(t)))) for t in db.tables if t != "raw_rows"}


# -- configuration and schema -------------------------------------------------------------------------

def test_contact_points_take_host_or_host_port_and_ipv6() -> None:
    assert contact_points(["db1", "db2:9142", "[::1]:9043", "::1", " "]) == [
        ("db1", 9042), ("db2", 9142), ("::1", 9043), ("::1", 9042)]


def test_keyspace_strategy_follows_local_dc_and_names_are_checked() -> None:
    assert "SimpleStrategy', 'replication_factor': 1" in keyspace_cql("ks", 1)
    assert "'NetworkTopologyStrategy', 'dc1': 3" in keyspace_cql("ks", 3, "dc1")
    with pytest.raises(ValueError):
        keyspace_cql("ks; DROP KEYSPACE x", 1)


def test_schema_file_is_idempotent_ddl_with_a_raw_ttl_and_no_counters() -> None:
    statements = schema_statements(SCHEMA_FILE.read_text(), "metrics_x")
    assert len(statements) == 18
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS metrics_x.") for s in statements)
    raw_table = next(s for s in statements if ".raw_rows " in s)
    assert "default_time_to_live = 604800" in raw_table
    assert not any("counter" in s for s in statements) and not any("--" in s for s in statements)


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_every_statement_fits_the_schema(name: str) -> None:
    Statement(FakeDb(), STATEMENTS[name])  # refuses unknown columns and partial partition keys


def test_driver_dates_become_dates() -> None:
    from cassandra.util import Date
    assert as_date(Date(date(2024, 3, 10))) == date(2024, 3, 10) and as_date(date(2024, 1, 1)) == date(2024, 1, 1)


# -- buckets and local days ---------------------------------------------------------------------------

def test_eight_raw_buckets_cover_every_row_the_ttl_keeps() -> None:
    buckets = live_raw_buckets(NOW)
    assert len(buckets) == 8 and buckets[-1] == raw_bucket(NOW)
    assert raw_bucket(NOW - timedelta(days=7) + timedelta(seconds=1)) in buckets
    assert raw_bucket(NOW - timedelta(days=8)) not in buckets


@pytest.mark.parametrize("utc, day, hour", [
    ("2024-03-10T06:59:00", date(2024, 3, 10), 1),  # 01:59 EST, just before clocks go forward
    ("2024-03-10T07:00:00", date(2024, 3, 10), 3),  # 03:00 EDT: there is no 02:00
    ("2024-03-11T03:59:00", date(2024, 3, 10), 23),  # still the 23-hour day
    ("2024-11-03T05:30:00", date(2024, 11, 3), 1),  # 01:30 EDT
    ("2024-11-03T06:30:00", date(2024, 11, 3), 1),  # 01:30 EST, the repeated hour
    ("2024-11-04T04:59:00", date(2024, 11, 3), 23),  # the 25-hour day ends at 05:00 UTC
])
def test_local_day_and_hour_across_dst(utc: str, day: date, hour: int) -> None:
    e = entry_of(raw(1, datetime.fromisoformat(utc).replace(tzinfo=UTC)), ACCOUNT)
    assert (e.day, e.hour) == (day, hour)


def test_repeated_hour_counts_twice_in_its_bucket() -> None:
    rows = [raw(n, datetime.fromisoformat(t).replace(tzinfo=UTC)) for n, t in
            enumerate(["2024-11-03T05:30:00", "2024-11-03T06:30:00"])]
    day, _ = fold_day(date(2024, 11, 3), [entry_of(r, ACCOUNT) for r in rows], [])
    assert day.received_by_hour[1] == 2 and day.received == 2 and day.correspondents == 1


# -- folds against brute force ------------------------------------------------------------------------

def random_entries(rng: random.Random, day: date, count: int) -> list[Entry]:
    people = [f"p{i}@example.org" for i in range(6)]
    return [Entry(bytes([n]) * 16, n, day, rng.randrange(24), rng.choice(["sent", "received"]), False,
                  tuple(rng.sample(people, rng.randint(0, 3)))) for n in range(count)]


@pytest.mark.parametrize("seed", range(20))
def test_fold_day_matches_a_brute_force_count(seed: int) -> None:
    rng = random.Random(seed)
    entries = random_entries(rng, date(2024, 5, 1), rng.randint(0, 40))
    row, people = fold_day(date(2024, 5, 1), entries, [])
    for direction, hours in (("received", row.received_by_hour), ("sent", row.sent_by_hour)):
        assert list(hours) == [sum(1 for e in entries if e.direction == direction and e.hour == h) for h in range(24)]
    assert row.correspondents == len({c for e in entries for c in e.correspondents}) == len(people)
    for p in people:
        assert p.received == sum(1 for e in entries if e.direction == "received" and p.correspondent in e.correspondents)
        assert p.sent == sum(1 for e in entries if e.direction == "sent" and p.correspondent in e.correspondents)


def test_weeks_sum_days_with_weekdays_and_quantiles_over_all_reply_times() -> None:
    hours = tuple([1] + [0] * 23)
    days = [DayRow(date(2024, 7, 29), 1, 0, 1, hours, (0,) * 24, (10.0,)),  # Monday
            DayRow(date(2024, 8, 4), 2, 3, 1, hours, (0,) * 24, (20.0, 40.0))]  # Sunday, next month
    (week,) = sum_periods(days, [], "week")
    assert (week.start, week.received, week.sent) == (date(2024, 7, 29), 3, 3)
    assert week.received_by_weekday == (1, 0, 0, 0, 0, 0, 2) and week.received_by_hour[0] == 2
    assert week.yours == Quantiles.of([10.0, 20.0, 40.0]) and week.yours.median == 20.0
    assert [m.start for m in sum_periods(days, [], "month")] == [date(2024, 7, 1), date(2024, 8, 1)]


def e(n: int, direction: str, at: int, parents: tuple[int, ...] = (), thread: int | None = None) -> Entry:
    return Entry(bytes([n]) * 16, at, date(2024, 1, 1), 0, direction, False, ("x@y",),  # type: ignore[arg-type]
                 tuple(bytes([p]) * 16 for p in parents), thread)


def test_reply_takes_the_latest_parent_not_after_it_else_the_earliest() -> None:
    reply = e(9, "sent", 100, (1, 2, 3, 4))
    assert choose_parent(reply, [e(1, "received", 50), e(2, "received", 90), e(3, "received", 150),
                                 e(4, "sent", 95)]) == e(2, "received", 90)
    assert choose_parent(reply, [e(3, "received", 150), e(5, "received", 120)]) == e(5, "received", 120)
    assert choose_parent(reply, [e(4, "sent", 95)]) is None


def test_thread_match_only_without_references_and_only_earlier() -> None:
    thread = [e(1, "received", 10, thread=5), e(2, "received", 20, thread=5), e(3, "received", 40, thread=5)]
    assert thread_parent(e(9, "sent", 30, thread=5), thread) == thread[1]
    assert thread_parent(e(9, "sent", 5, thread=5), thread) is None
    assert thread_parent(e(9, "sent", 30, (1,), thread=5), thread) is None


def test_answers_go_both_ways() -> None:
    parent, child = e(1, "received", 10), e(2, "sent", 20, (1,))
    assert newly_answered(child, [parent], [], []) == [parent]
    assert newly_answered(parent, [], [child], []) == [parent]
    assert newly_answered(parent, [], [e(3, "received", 20, (1,))], []) == []


# -- the asyncio bridge -------------------------------------------------------------------------------

async def test_gather_bounded_keeps_order_and_the_limit() -> None:
    running, peak = 0, 0

    async def work(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1
        return n * 2
    assert await gather_bounded(range(50), work, limit=4) == [n * 2 for n in range(50)]
    assert peak == 4


async def test_gather_bounded_raises_the_first_error_and_stops() -> None:
    started = []

    async def work(n: int) -> None:
        started.append(n)
        if n == 3:
            raise KeyError(n)
        await asyncio.sleep(0)
    with pytest.raises(KeyError):
        await gather_bounded(range(100), work, limit=2)
    assert len(started) < 10


async def test_rows_come_page_by_page_from_the_driver_thread() -> None:
    db = FakeDb()
    cql = fake_session(db)
    await cql.prepare(STATEMENTS, "inboxlens")
    days = [date(2020, 1, 1) + timedelta(days=n) for n in range(2500)]  # three pages of FETCH_SIZE
    await cql.each("put_day", [(1, d) for d in days])
    assert [r["day"] for r in await cql.rows("days", 1)] == days
    assert len(await cql.rows("days", 1, limit=1200)) == 1200
    assert cql.limit._value == 16  # type: ignore[attr-defined]  # every permit back, early stop included


async def test_a_failed_statement_names_itself() -> None:
    db = FakeDb()
    cql = fake_session(db)
    await cql.prepare(STATEMENTS, "inboxlens")
    db.fail_at = 1
    with pytest.raises(CassandraUnavailable, match="put_day: ConnectionError"):
        await cql.run("put_day", 1, date(2024, 1, 1))


async def test_connect_errors_never_carry_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    class Cluster:
        def connect(self, keyspace: str | None) -> None:
            raise RuntimeError("auth failed for user u with password s3cret-pw")

        def shutdown(self) -> None:
            self.down = True
    cluster = Cluster()
    monkeypatch.setattr(cassandra_session, "_cluster", lambda config: cluster)
    config = MetricsConfig(backend="cassandra", cassandra_hosts=("db1",), cassandra_username="u",
                           cassandra_password="s3cret-pw")
    with pytest.raises(CassandraUnavailable) as caught:
        await cassandra_session.connect(config, "ks")
    assert "s3cret-pw" not in str(caught.value) and "db1" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is not None and cluster.down
    assert "s3cret-pw" not in repr(config)


# -- the whole store over the fake driver -------------------------------------------------------------

async def prepared(db: FakeDb, now: datetime = NOW) -> CassandraMetricsStore:
    s = store(db, now)
    await s._cql.prepare(STATEMENTS, "inboxlens")
    return s


async def test_write_raw_counts_only_messages_no_live_bucket_holds() -> None:
    db = FakeDb()
    s = await prepared(db)
    rows = [raw(n, NOW - timedelta(days=2, hours=n)) for n in range(3)]
    assert await s.write_raw(rows + rows[:1]) == 3
    assert await s.write_raw(rows[1:] + [raw(9, NOW)]) == 1
    later = await prepared(db, NOW + timedelta(days=3))  # another day's bucket still sees the first ones
    assert await later.write_raw(rows) == 0
    result = await later.aggregate(ACCOUNT)
    assert (result.taken, result.folded) == (4, 4) and not db.rows("raw_rows")
    assert await later.write_raw(rows) == 3  # folded and gone from raw: new again, as in PostgreSQL ...
    assert (await later.aggregate(ACCOUNT)).folded == 0  # ... but never counted twice
    assert sum(d.received for d in await later.daily(7, date(2024, 1, 1), date(2024, 12, 31))) == 4


def random_mail(rng: random.Random, count: int) -> list[RawRow]:
    people = [f"p{i}@example.org" for i in range(8)]
    start = datetime(2024, 10, 28, tzinfo=UTC)  # spans the end of DST on 2024-11-03 in New York
    rows = []
    for n in range(count):
        at = start + timedelta(minutes=rng.randrange(60 * 24 * 20))
        direction = rng.choice(["sent", "received"])
        rows.append(raw(n, at, direction, who=rng.choice(people), to=tuple(rng.sample(people, rng.randint(1, 3)))
                        if direction == "sent" else ()))
    return rows


def expected_days(rows: list[RawRow]) -> dict[date, tuple[int, int, int, list[int]]]:
    by_day: dict[date, list[RawRow]] = defaultdict(list)
    for r in {r.msg_key: r for r in rows}.values():
        by_day[r.sent_at.astimezone(ZoneInfo(NY)).date()].append(r)
    out = {}
    for day, found in by_day.items():
        people = {r.from_address for r in found if r.direction == "received"} | {
            a for r in found if r.direction == "sent" for a in r.to_addresses}
        hours = Counter(r.sent_at.astimezone(ZoneInfo(NY)).hour for r in found if r.direction == "received")
        out[day] = (sum(r.direction == "received" for r in found), sum(r.direction == "sent" for r in found),
                    len(people), [hours[h] for h in range(24)])
    return out


@pytest.mark.parametrize("seed", range(3))
async def test_rollups_match_a_brute_force_count_whatever_the_batches(seed: int) -> None:
    rng = random.Random(seed)
    rows = random_mail(rng, 60)
    s = await prepared(FakeDb())
    for i in range(0, len(rows), 17):
        await s.write_raw(rows[i:i + 17])
        await s.aggregate(ACCOUNT, batch_size=rng.randint(1, 20))
    await s.write_raw(rng.sample(rows, 10))  # harvested again after their fold
    assert (await s.aggregate(ACCOUNT)).folded == 0
    daily = await s.daily(7, date(2024, 10, 1), date(2024, 12, 31))
    assert {d.day: (d.received, d.sent, d.correspondents, list(d.received_by_hour)) for d in daily} == expected_days(rows)
    weeks = await s.weekly(7, date(2024, 10, 1), date(2024, 12, 31))
    assert sum(w.received + w.sent for w in weeks) == len(rows)
    assert all(w.start.weekday() == 0 and sum(w.received_by_weekday) == w.received for w in weeks)
    people = await s.correspondents(7, date(2024, 10, 1), date(2024, 12, 31), "month")
    assert sum(p.received for p in people) == sum(r.direction == "received" for r in rows)


async def test_a_reply_counts_once_whichever_is_folded_first() -> None:
    asked = raw(1, datetime(2024, 11, 12, 14, tzinfo=UTC))
    answer = raw(2, datetime(2024, 11, 12, 16, tzinfo=UTC), "sent", irt=("<m1@x>",))
    results = []
    for order in ([asked, answer], [answer, asked]):
        s = await prepared(FakeDb())
        for row in order:
            await s.write_raw([row])
            await s.aggregate(ACCOUNT)
        (day,) = await s.daily(7, date(2024, 11, 12), date(2024, 11, 12))
        card = await s.card(7, "Ann@Example.org", now=NOW)
        assert card is not None
        results.append((day.yours, card.replies.yours.count, card.replies.yours.median))
    assert results[0] == results[1] == (Quantiles(1, 7200.0, 7200.0), 1, 7200.0)


async def test_a_crash_at_any_write_then_a_new_run_gives_the_same_state() -> None:
    rows = random_mail(random.Random(5), 12) + [raw(100, datetime(2024, 11, 5, tzinfo=UTC), "sent", irt=("<m1@x>",))]
    clean_db = FakeDb()
    clean = await prepared(clean_db)
    await clean.write_raw(rows)
    await clean.aggregate(ACCOUNT)
    writes = clean_db.writes
    assert writes > 100
    for crash in range(len(rows) + 1, writes + 1, 2):  # every other write after write_raw's
        db = FakeDb()
        s = await prepared(db)
        await s.write_raw(rows)
        db.fail_at = crash
        with pytest.raises(CassandraUnavailable):
            await s.aggregate(ACCOUNT)
        db.fail_at = None
        await s.aggregate(ACCOUNT)
        assert snapshot(db) == snapshot(clean_db), f"crash at write {crash}"


async def test_owed_and_awaiting_leave_out_answered_automated_and_recent() -> None:
    s = await prepared(FakeDb())
    await s.write_raw([
        raw(1, NOW - timedelta(days=3)),  # owed
        raw(2, NOW - timedelta(days=4), automated=True),  # a machine: never owed
        raw(3, NOW - timedelta(hours=2)),  # too recent
        raw(4, NOW - timedelta(days=5)), raw(5, NOW - timedelta(days=4), "sent", irt=("<m4@x>",)),  # answered
        raw(6, NOW - timedelta(days=6), "sent", who="bob@example.org"),  # awaiting
        raw(7, NOW - timedelta(days=40)),  # beyond the lookback
    ])
    await s.aggregate(ACCOUNT)
    owed = await s.owed(7, now=NOW)
    assert [(p.msg_key, p.correspondent, p.waiting) for p in owed] == [
        (message_key("<m1@x>").hex(), "ann@example.org", timedelta(days=3))]
    # Oldest first; the answer to ann is itself waiting for her.
    assert [p.correspondent for p in await s.awaiting(7, now=NOW)] == ["bob@example.org", "ann@example.org"]


async def test_a_failure_is_flagged_once_where_the_domain_usually_passes() -> None:
    s = await prepared(FakeDb())
    start = datetime(2024, 11, 1, tzinfo=UTC)
    await s.write_raw([raw(n, start + timedelta(hours=n), dkim="pass") for n in range(5)])
    await s.aggregate(ACCOUNT)
    forged = raw(50, start + timedelta(days=2), dkim="fail")
    await s.write_raw([forged])
    await s.aggregate(ACCOUNT)
    (flag,) = await s.auth_flags(7)
    assert (flag.domain, flag.failed, flag.correspondent) == ("example.org", ("dkim",), "ann@example.org")
    (domain,) = await s.sender_domains(7)
    assert (domain.messages, domain.dkim.checked, domain.dkim.passed) == (6, 6, 5)
    early = raw(60, start, who="eve@other.test", dkim="fail")  # nothing known about other.test: no flag
    await s.write_raw([early, forged])
    await s.aggregate(ACCOUNT)
    assert len(await s.auth_flags(7)) == 1


async def test_relationships_rank_people_and_skip_machines() -> None:
    s = await prepared(FakeDb())
    rows = [raw(n, NOW - timedelta(days=n), who="ann@example.org") for n in range(1, 6)]
    rows += [raw(10 + n, NOW - timedelta(days=n, hours=1), "sent", who="ann@example.org") for n in range(1, 4)]
    rows += [raw(20 + n, NOW - timedelta(days=n), who="news@example.net", automated=True) for n in range(1, 10)]
    await s.write_raw(rows)
    await s.aggregate(ACCOUNT)
    ranked = await s.relationships(7, now=NOW)
    assert [r.correspondent for r in ranked] == ["ann@example.org", "news@example.net"]
    ann, news = ranked
    assert (ann.received, ann.sent, ann.last_30, news.automated, news.strength) == (5, 3, 8, True, 0.0)
    assert ann.reciprocity == pytest.approx(2 * 3 / 8)
    assert [r.correspondent for r in await s.relationships(7, now=NOW, order="volume", limit=1, offset=1)] == [
        "ann@example.org"]


async def test_forget_account_leaves_nothing_of_it() -> None:
    db = FakeDb()
    s = await prepared(db)
    other = AccountRef(8, "you@example.test", "UTC")
    await s.write_raw(random_mail(random.Random(1), 20) + [raw(99, NOW, account=other)])
    await s.aggregate(ACCOUNT)
    await s.write_raw([raw(200, NOW)])  # not folded yet
    await s.forget_account(7)
    leftovers = {t: r for t in db.tables if (r := [x for x in db.rows(t) if x.get("account_id") == 7])}
    assert leftovers == {}
    assert await s.card(7, "p1@example.org", now=NOW) is None
    assert db.rows("raw_rows") and await s.sweep() == 0


# -- against a real cluster ---------------------------------------------------------------------------

def cluster(test: Any) -> Any:
    """A case for a real cluster: heavy (make test-heavy and CI, where .ci/run starts a node), and
    skipped where no node is named."""
    return pytest.mark.heavy(pytest.mark.skipif(not CLUSTER, reason=SKIP_REASON)(test))


@cluster
async def test_cluster_round_trip() -> None:
    async with cassandra_store(CLUSTER, InsightSettings()) as s:
        rows = random_mail(random.Random(2), 30)
        assert await s.write_raw(rows) == 30
        assert await s.write_raw(rows) == 0
        result = await s.aggregate(ACCOUNT, batch_size=7)
        assert (result.taken, result.folded) == (30, 30)
        daily = await s.daily(7, date(2024, 10, 1), date(2024, 12, 31))
        assert {d.day: (d.received, d.sent, d.correspondents, list(d.received_by_hour))
                for d in daily} == expected_days(rows)
        await s.forget_account(7)
        assert await s.daily(7, date(2024, 10, 1), date(2024, 12, 31)) == []


@cluster
async def test_cluster_migrate_twice_is_harmless() -> None:
    from inboxlens.metrics.cassandra.store import migrate_cassandra
    from .cassandra_support import cluster_config
    async with cassandra_store(CLUSTER, InsightSettings()) as s:
        await migrate_cassandra(cluster_config(CLUSTER, s._cql.keyspace))
        assert await s.sender_domains(7) == []
