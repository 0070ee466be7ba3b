"""The MetricsStore contract: every backend through the same cases, with known answers.

Backends: PostgreSQL (always), Cassandra over the strict in-memory driver fake (always),
and a real Cassandra cluster when INBOXLENS_TEST_CASSANDRA names one (skipped otherwise).

The story (``story()``) is a small realistic mailbox in Berlin, its answers worked out
by hand from docs/insights.md and written here as numbers: a colleague with a quick
back-and-forth, a friend you owe two answers, a newsletter (a machine: never owed), a
client who has not answered you, a Gmail thread without In-Reply-To, and a bank whose
mail always passes DKIM and DMARC until one message does not.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from inboxlens.metrics.model import (CARD_LIST, AccountRef, BUCKET_LABELS, CheckCount, InsightSettings, Quantiles, RawRow, ReplyTimes)
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.metrics.store import MetricsStore
from inboxlens.db.migrate import migrate

from .cassandra_support import SKIP_REASON, FakeDb, cassandra_store, fake_store

UTC = timezone.utc
ZONE = "Europe/Berlin"
OWN = "me@home.test"
NOW = datetime(2024, 6, 20, 12, tzinfo=UTC)  # a Thursday; Berlin is UTC+2
SETTINGS = InsightSettings()  # 09:00-17:00 Monday-Friday; owed after 1 day, awaiting after 3, 30 days back
EVER = (date(2000, 1, 1), date(2100, 1, 1))
CLUSTER = os.environ.get("INBOXLENS_TEST_CASSANDRA", "")


@dataclass
class Backend:
    store: MetricsStore
    new_account: Callable[[str, str], Awaitable[AccountRef]]


# The real cluster's cases are heavy: make test runs without a Cassandra node (starting one takes
# a minute of a 2-core machine), make test-heavy and CI with one.
@pytest.fixture(params=["postgresql", "cassandra-fake", pytest.param("cassandra", marks=pytest.mark.heavy)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "postgresql":
        dsn = request.getfixturevalue("pg_db")
        await migrate(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        yield Backend(PgMetricsStore(pool, SETTINGS), lambda address, zone: _pg_account(pool, address, zone))
        await pool.close()
    elif request.param == "cassandra-fake":
        yield Backend(await fake_store(FakeDb(), SETTINGS, NOW), _numbered())
    else:
        if not CLUSTER:
            pytest.skip(SKIP_REASON)
        async with cassandra_store(CLUSTER, SETTINGS) as store:
            yield Backend(store, _numbered())


async def _pg_account(pool: asyncpg.Pool, address: str, zone: str) -> AccountRef:
    user = await pool.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", address)
    account = await pool.fetchval("INSERT INTO mail_accounts (user_id, address, provider, time_zone) "
                                  "VALUES ($1, $2, 'test', $3) RETURNING id", user, address, zone)
    return AccountRef(int(account), address, zone)


def _numbered() -> Callable[[str, str], Awaitable[AccountRef]]:
    ids = iter(range(1, 1000))

    async def new(address: str, zone: str) -> AccountRef:
        return AccountRef(next(ids), address, zone)
    return new


# -- the story --------------------------------------------------------------------------------------

def key(message_id: str) -> bytes:
    return hashlib.sha256(b"id\0" + message_id.encode()).digest()[:16]


def at(day: int, hour: int, minute: int = 0, month: int = 6) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=UTC)


def message(account: AccountRef, mid: str, when: datetime, who: str, direction: str = "received", *,
            irt: str | None = None, thread: int | None = None, automated: bool = False,
            auth: tuple[str | None, str | None, str | None] = (None, None, None)) -> RawRow:
    sender = account.address if direction == "sent" else who
    to = (who,) if direction == "sent" else (account.address,)
    return RawRow(account.id, key(mid), "INBOX", 1, mid, (irt,) if irt else (), (), "not kept", sender, None, to, (),
                  when, when, True, direction, automated, None, *auth, (), thread)  # type: ignore[arg-type]


PASS = ("pass", "pass", "pass")


def story(a: AccountRef) -> list[RawRow]:
    alice, bob, news, carol = "alice@work.test", "bob@friend.test", "news@list.test", "carol@client.test"
    dave, bank = "dave@gmail.test", "advisor@bank.test"
    return [
        # Alice: asks Monday 09:00 local, answered in 30 min; she answers in 2 h; you answer the
        # next morning (22.5 h, 6.5 working hours); her Wednesday message is still open.
        message(a, "a1@work.test", at(17, 7), alice, auth=PASS),
        message(a, "a2@home.test", at(17, 7, 30), alice, "sent", irt="a1@work.test"),
        message(a, "a3@work.test", at(17, 9, 30), alice, irt="a2@home.test", auth=PASS),
        message(a, "a4@home.test", at(18, 8), alice, "sent", irt="a3@work.test"),
        message(a, "a5@work.test", at(19, 6), alice, auth=PASS),
        # Bob: one message in May (outside the 30-day lookback), one on June 10: owed.
        message(a, "b1@friend.test", at(1, 10, month=5), bob),
        message(a, "b2@friend.test", at(10, 10), bob),
        # A newsletter: a machine, never owed, strength 0.
        message(a, "n1@list.test", at(18, 5), news, automated=True),
        # Carol has not answered your June 12 message: awaiting.
        message(a, "c1@home.test", at(12, 10), carol, "sent"),
        # Dave: a Gmail thread without In-Reply-To; he answers after a day, you after 15 days.
        message(a, "d1@home.test", at(3, 10), dave, "sent", thread=777),
        message(a, "d2@gmail.test", at(4, 10), dave, thread=777),
        message(a, "d3@home.test", at(19, 10), dave, "sent", thread=777),
        # The bank: six messages passing everything, then one failing DKIM and DMARC (April).
        *(message(a, f"k{i}@bank.test", at(14 + i, 10, month=4), bank, auth=PASS) for i in range(6)),
        message(a, "k6@bank.test", at(20, 10, month=4), bank, auth=("fail", "pass", "fail")),
    ]


def times(count: int, median: float, p90: float, within_hour: float, buckets: dict[str, int]) -> ReplyTimes:
    return ReplyTimes(count, median, p90, within_hour, tuple(buckets.get(label, 0) for label in BUCKET_LABELS))


async def told(backend: Backend, rows: list[RawRow], *, folds: int = 1, address: str = OWN) -> AccountRef:
    """Write and aggregate the story for a new account, in ``folds`` chunks, newest first."""
    account = await backend.new_account(address, ZONE)
    chunks = [story(account)[::-1][i::folds] for i in range(folds)] if not rows else [rows]
    for chunk in chunks:
        await backend.store.write_raw([replace(r, account_id=account.id) for r in chunk])
        await backend.store.aggregate(account)
    return account


# -- known answers ----------------------------------------------------------------------------------

async def test_reply_times_of_a_colleague_and_a_gmail_thread(backend: Backend) -> None:
    account = await told(backend, [])
    alice = await backend.store.card(account.id, "Alice@Work.test", now=NOW)
    assert alice is not None
    # You: 1800 s and 81000 s (90th percentile: 1800 + 0.9 * 79200); Alice: 7200 s.
    assert alice.replies.yours == times(2, 41400, 73080, 0.5, {"<1h": 1, "4-24h": 1})
    assert alice.replies.theirs == times(1, 7200, 7200, 0.0, {"1-4h": 1})
    # Working hours only: Monday 09:00-09:30, and Monday 11:30-17:00 + Tuesday 09:00-10:00.
    assert alice.replies.yours_business == times(2, 12600, 21240, 0.5, {"<1h": 1, "4-24h": 1})
    assert alice.replies.theirs_business == times(1, 7200, 7200, 0.0, {"1-4h": 1})
    dave = await backend.store.card(account.id, "dave@gmail.test", now=NOW)
    assert dave is not None
    assert dave.replies.theirs == times(1, 86400, 86400, 0.0, {"1-3d": 1})
    assert dave.replies.yours == times(1, 1296000, 1296000, 0.0, {">7d": 1})
    # Tue 12-17, Wed-Fri, a full week, Mon-Tue, Wed 09-12: 5 + 24 + 40 + 16 + 3 hours.
    assert dave.replies.yours_business.median == 88 * 3600
    assert dave.replies.theirs_business.median == 8 * 3600  # Mon 12-17, Tue 09-12


async def test_owed_and_awaiting(backend: Backend) -> None:
    account = await told(backend, [])
    owed = await backend.store.owed(account.id, now=NOW)
    assert [(p.correspondent, p.sent_at, p.waiting) for p in owed] == [
        ("bob@friend.test", at(10, 10), timedelta(days=10, hours=2)),
        ("alice@work.test", at(19, 6), timedelta(hours=30))]
    assert (owed[0].msg_key, owed[0].message_id) == (key("b2@friend.test").hex(), "b2@friend.test")
    awaiting = await backend.store.awaiting(account.id, now=NOW)
    assert [(p.correspondent, p.sent_at, p.msg_key) for p in awaiting] == [
        ("carol@client.test", at(12, 10), key("c1@home.test").hex())]
    # A day later Alice's Tuesday answer has waited three days too: she owes you one.
    later = await backend.store.awaiting(account.id, now=NOW + timedelta(days=1))
    assert [p.correspondent for p in later] == ["carol@client.test", "alice@work.test"]


async def test_relationships_by_strength_recency_and_volume(backend: Backend) -> None:
    account = await told(backend, [])
    found = await backend.store.relationships(account.id, now=NOW, limit=10)
    assert [(r.correspondent, r.strength) for r in found] == [
        ("alice@work.test", 68.58), ("dave@gmail.test", 60.69), ("bob@friend.test", 30.52),
        ("carol@client.test", 28.7), ("advisor@bank.test", 25.2), ("news@list.test", 0.0)]
    alice = found[0]
    assert (alice.first_contact, alice.last_contact, alice.received, alice.sent) == (at(17, 7), at(19, 6), 3, 2)
    assert (alice.last_30, alice.last_90, alice.last_365, alice.reciprocity) == (5, 5, 5, 0.8)
    assert alice.hours == tuple(1 if h in (8, 9, 11) else 0 for h in range(24))  # 06:00, 07:00, 09:30 UTC
    bob = found[2]
    assert (bob.last_30, bob.last_90, bob.reciprocity, bob.automated) == (1, 2, 0.0, False)
    assert found[-1].automated
    recency = await backend.store.relationships(account.id, now=NOW, order="recency", limit=3)
    assert [r.correspondent for r in recency] == ["dave@gmail.test", "alice@work.test", "news@list.test"]
    volume = await backend.store.relationships(account.id, now=NOW, order="volume", limit=2, offset=1)
    assert [r.correspondent for r in volume] == ["alice@work.test", "dave@gmail.test"]  # after the bank's 7


async def test_sender_authenticity_flags_the_odd_one_out(backend: Backend) -> None:
    account = await told(backend, [])
    domains = {d.domain: d for d in await backend.store.sender_domains(account.id)}
    bank = domains["bank.test"]
    assert (bank.messages, bank.dkim, bank.spf, bank.dmarc) == (7, CheckCount(7, 6), CheckCount(7, 7), CheckCount(7, 6))
    assert bank.last_seen == at(20, 10, month=4)
    assert (domains["work.test"].messages, domains["work.test"].dkim) == (3, CheckCount(3, 3))
    assert domains["friend.test"].dkim == CheckCount(0, 0)
    [flag] = await backend.store.auth_flags(account.id)
    assert (flag.msg_key, flag.domain, flag.correspondent, flag.failed) == (
        key("k6@bank.test").hex(), "bank.test", "advisor@bank.test", ("dkim", "dmarc"))
    card = await backend.store.card(account.id, "advisor@bank.test", now=NOW)
    assert card is not None and card.domain == bank and [f.msg_key for f in card.flags] == [flag.msg_key]


async def test_day_and_week_rollups_with_replies(backend: Backend) -> None:
    account = await told(backend, [])
    [monday] = await backend.store.daily(account.id, date(2024, 6, 17), date(2024, 6, 17))
    assert (monday.received, monday.sent, monday.correspondents) == (2, 1, 1)
    assert (monday.yours, monday.theirs) == (Quantiles(1, 1800, 1800), Quantiles(1, 7200, 7200))
    [week] = await backend.store.weekly(account.id, date(2024, 6, 17), date(2024, 6, 17))
    assert (week.received, week.sent, week.correspondents) == (4, 3, 3)
    assert week.yours == Quantiles(3, 81000, 1053000)  # 1800, 81000, 1296000
    assert week.received_by_weekday == (2, 1, 1, 0, 0, 0, 0) and week.sent_by_weekday == (1, 1, 1, 0, 0, 0, 0)
    [june] = await backend.store.monthly(account.id, date(2024, 6, 1), date(2024, 6, 1))
    assert (june.received, june.sent, june.theirs.count, june.yours.count) == (6, 5, 2, 3)
    people = await backend.store.correspondents(account.id, *EVER, period="week", correspondent="alice@work.test")
    assert [(p.start, p.received, p.sent, p.active_days, p.yours.count) for p in people] == [
        (date(2024, 6, 17), 3, 2, 3, 2)]


# -- exactly once, in any order ---------------------------------------------------------------------

async def answers(backend: Backend, account: AccountRef) -> tuple[Any, ...]:
    s = backend.store
    return (await s.daily(account.id, *EVER), await s.weekly(account.id, *EVER), await s.monthly(account.id, *EVER),
            await s.correspondents(account.id, *EVER), await s.relationships(account.id, now=NOW, limit=100),
            [await s.card(account.id, who, now=NOW) for who in ("alice@work.test", "dave@gmail.test")],
            await s.owed(account.id, now=NOW), await s.awaiting(account.id, now=NOW),
            await s.sender_domains(account.id))


async def test_the_same_answers_whatever_the_order_and_however_often(backend: Backend) -> None:
    once = await told(backend, [])
    reference = await answers(backend, once)
    # Replies folded before their parents, in three folds. (Authenticity flags are decided
    # when a message is folded, against what was folded by then: they may differ, by design.)
    piecemeal = await told(backend, [], folds=3, address="me.too@home.test")
    assert await answers(backend, piecemeal) == reference  # no answer carries an account id
    # Everything harvested again after the fold, and aggregated twice more: nothing changes.
    await backend.store.write_raw([replace(r, account_id=piecemeal.id) for r in story(piecemeal)])
    again = await backend.store.aggregate(piecemeal)
    assert again.folded == 0
    await backend.store.aggregate(piecemeal)
    assert await answers(backend, piecemeal) == reference


async def test_accounts_are_kept_apart_and_forgotten_whole(backend: Backend) -> None:
    mine = await told(backend, [])
    other = await backend.new_account("other@home.test", "America/New_York")
    await backend.store.write_raw([message(other, "o1@x.test", at(18, 12), "alice@work.test", auth=PASS)])
    await backend.store.aggregate(other)
    [theirs] = await backend.store.relationships(other.id, now=NOW)
    assert (theirs.correspondent, theirs.received) == ("alice@work.test", 1)
    assert len(await backend.store.relationships(mine.id, now=NOW, limit=100)) == 6
    await backend.store.forget_account(mine.id)
    assert await backend.store.relationships(mine.id, now=NOW) == []
    assert await backend.store.daily(mine.id, *EVER) == []
    assert await backend.store.card(mine.id, "alice@work.test", now=NOW) is None
    assert await backend.store.owed(mine.id, now=NOW) == [] and await backend.store.auth_flags(mine.id) == []
    assert await backend.store.sender_domains(mine.id) == []
    assert len(await backend.store.daily(other.id, *EVER)) == 1  # the other account is untouched


async def test_writing_raw_rows_twice_stores_them_once(backend: Backend) -> None:
    account = await backend.new_account(OWN, ZONE)
    rows = story(account)
    assert await backend.store.write_raw(rows) == len(rows)
    assert await backend.store.write_raw(rows[:5]) == 0
    result = await backend.store.aggregate(account)
    assert (result.folded, result.duplicates) == (len(rows), 0)
    assert "alice@work.test" in result.correspondents


async def test_a_reply_counts_for_the_person_answered_even_when_written_to_another(backend: Backend) -> None:
    account = await backend.new_account(OWN, ZONE)
    await backend.store.write_raw([
        message(account, "e1@erin.test", at(5, 10), "erin@erin.test"),
        message(account, "r1@home.test", at(6, 11), "frank@work.test", "sent", irt="e1@erin.test")])
    await backend.store.aggregate(account)
    people = await backend.store.correspondents(account.id, *EVER)
    assert [(p.start, p.correspondent, p.received, p.sent, p.active_days, p.yours) for p in people] == [
        (date(2024, 6, 5), "erin@erin.test", 1, 0, 1, Quantiles()),
        (date(2024, 6, 6), "erin@erin.test", 0, 0, 0, Quantiles(1, 90000, 90000)),
        (date(2024, 6, 6), "frank@work.test", 0, 1, 1, Quantiles())]
    [_, thursday] = await backend.store.daily(account.id, *EVER)
    assert (thursday.correspondents, thursday.yours.count) == (1, 1)
    [week] = await backend.store.weekly(account.id, *EVER)
    assert week.correspondents == 2
    [erin] = await backend.store.correspondents(account.id, *EVER, period="month", correspondent="erin@erin.test")
    assert (erin.received, erin.active_days, erin.yours.count) == (1, 1, 1)
    assert await backend.store.owed(account.id, now=NOW) == []


async def test_a_fold_recomputes_only_the_correspondents_its_rows_touch(backend: Backend) -> None:
    account = await told(backend, [])
    before = {r.correspondent: r for r in await backend.store.relationships(account.id, now=NOW, limit=100)}
    alice = await backend.store.card(account.id, "alice@work.test", now=NOW)
    assert alice is not None and alice.replies.theirs.count == 1
    await backend.store.write_raw([message(account, "a6@work.test", at(20, 8), "alice@work.test",
                                           irt="a4@home.test", auth=PASS)])
    result = await backend.store.aggregate(account)
    assert (result.folded, result.correspondents) == (1, frozenset({"alice@work.test"}))
    after = {r.correspondent: r for r in await backend.store.relationships(account.id, now=NOW, limit=100)}
    assert after.pop("alice@work.test").received == before.pop("alice@work.test").received + 1
    assert after == before
    alice = await backend.store.card(account.id, "alice@work.test", now=NOW)
    assert alice is not None and alice.replies.theirs.count == 2  # a6 answers a4 after 24 h


async def test_a_card_lists_the_ten_waiting_longest_and_counts_them_all(backend: Backend) -> None:
    account = await backend.new_account(OWN, ZONE)
    gina = "gina@many.test"
    await backend.store.write_raw([message(account, f"g{i}@many.test", at(2 + i, 10), gina) for i in range(12)]
                                  + [message(account, f"s{i}@home.test", at(2 + i, 11), gina, "sent")
                                     for i in range(11)])
    await backend.store.aggregate(account)
    card = await backend.store.card(account.id, gina, now=NOW)
    assert card is not None
    assert (card.owed_total, card.awaiting_total) == (12, 11)
    assert [p.sent_at for p in card.owed] == [at(2 + i, 10) for i in range(CARD_LIST)]
    assert [p.sent_at for p in card.awaiting] == [at(2 + i, 11) for i in range(CARD_LIST)]
    assert len(await backend.store.owed(account.id, now=NOW)) == 12  # the owed list itself is whole


async def test_postgresql_stores_business_hours_at_the_fold_and_redoes_them_for_a_new_zone(pg_db: str) -> None:
    """The fold stores each reply's working-hours time; after the account's zone changes a
    card works them out when read, and the next fold stores them in the new zone."""
    await migrate(pg_db)
    async with asyncpg.create_pool(pg_db, min_size=1, max_size=2) as pool:
        store = PgMetricsStore(pool, SETTINGS)
        account = await _pg_account(pool, OWN, ZONE)
        await store.write_raw(story(account))
        await store.aggregate(account)

        async def stored() -> list[float]:
            return [r[0] for r in await pool.fetch(
                "SELECT business_seconds FROM message_replies WHERE account_id = $1 AND correspondent = "
                "'alice@work.test' AND direction = 'yours' ORDER BY 1", account.id)]

        assert await stored() == [1800, 23400]  # Monday 09:00-09:30; Monday 11:30-17:00 + Tuesday 09:00-10:00
        alice = await store.card(account.id, "alice@work.test", now=NOW)
        assert alice is not None and alice.replies.yours_business.median == 12600
        # In Tokyo (UTC+9) Monday 07:00 UTC is 16:00: a1 -> a2 is 30 working minutes, a3 -> a4
        # (Mon 18:30 to Tue 17:00) is 8 hours.
        in_tokyo = times(2, 15300, 26100, 0.5, {"<1h": 1, "4-24h": 1})
        await pool.execute("UPDATE mail_accounts SET time_zone = 'Asia/Tokyo' WHERE id = $1", account.id)
        alice = await store.card(account.id, "alice@work.test", now=NOW)
        assert alice is not None and alice.replies.yours_business == in_tokyo
        await store.aggregate(replace(account, time_zone="Asia/Tokyo"))  # nothing new: it redoes the replies
        assert await stored() == [1800, 28800]
        assert await pool.fetchval("SELECT business_hours FROM metrics_state WHERE account_id = $1",
                                   account.id) == "Asia/Tokyo 09:00:00-17:00:00 01234"
        alice = await store.card(account.id, "alice@work.test", now=NOW)
        assert alice is not None and alice.replies.yours_business == in_tokyo


# -- owed and awaiting, as a person counts them (issue 13.6) ---------------------------------------

def mail(account: AccountRef, mid: str, when: datetime, sender: str, to: tuple[str, ...], cc: tuple[str, ...] = (),
         *, refs: tuple[str, ...] = (), irt: str | None = None) -> RawRow:
    """A message as headers say it; sent when the sender is the account's own address."""
    direction = "sent" if sender == account.address else "received"
    return RawRow(account.id, key(mid), "INBOX", 1, mid, (irt,) if irt else (), refs, "not kept", sender, None, to,
                  cc, when, when, True, direction, False)  # type: ignore[arg-type]


def threads(a: AccountRef) -> list[RawRow]:
    me, ann, joe, kim, lee, max_, nia = (a.address, "ann@ann.test", "joe@joe.test", "kim@kim.test", "lee@lee.test",
                                         "max@max.test", "nia@nia.test")
    return [
        # Ann writes to a list you are on (you are in no To or Cc: never owed), then to a
        # colleague with you in Cc (owed; addresses compare in any case).
        mail(a, "x1@ann.test", at(15, 9), ann, ("team@lists.test",)),
        mail(a, "x2@ann.test", at(15, 10), ann, ("colleague@team.test",), (me.upper(),)),
        # Joe asks, Kim adds to it, you answer Kim only: Joe's is answered too (you wrote later
        # in the thread); your answer is the thread's latest: awaited, from Kim (the first To).
        mail(a, "t1@joe.test", at(10, 9), joe, (me,)),
        mail(a, "t2@kim.test", at(11, 9), kim, (me,), (joe,), refs=("t1@joe.test",), irt="t1@joe.test"),
        mail(a, "t3@home.test", at(12, 9), me, (kim,), (joe,), refs=("t1@joe.test", "t2@kim.test"),
             irt="t2@kim.test"),
        # You write to Lee and follow up three days later: one thread awaited, by its latest.
        mail(a, "f1@home.test", at(5, 9), me, (lee,)),
        mail(a, "f2@home.test", at(8, 9), me, (lee,), refs=("f1@home.test",), irt="f1@home.test"),
        # You write to Max (Nia in Cc); Nia answers in the thread: it is hers now, and owed.
        mail(a, "w1@home.test", at(6, 9), me, (max_,), (nia,)),
        mail(a, "w2@nia.test", at(7, 9), nia, (me,), refs=("w1@home.test",)),
    ]


async def test_owed_and_awaiting_follow_threads_and_who_was_asked(backend: Backend) -> None:
    account = await told(backend, threads(AccountRef(0, OWN, ZONE)))
    owed = await backend.store.owed(account.id, now=NOW)
    assert [(p.correspondent, p.message_id) for p in owed] == [("nia@nia.test", "w2@nia.test"),
                                                               ("ann@ann.test", "x2@ann.test")]
    awaiting = await backend.store.awaiting(account.id, now=NOW)
    assert [(p.correspondent, p.message_id, p.sent_at) for p in awaiting] == [
        ("lee@lee.test", "f2@home.test", at(8, 9)), ("kim@kim.test", "t3@home.test", at(12, 9))]
    # A card counts what the lists hold under its name, and nothing else.
    people = [r.correspondent for r in await backend.store.relationships(account.id, now=NOW, limit=100)]
    assert "joe@joe.test" in people and "max@max.test" in people
    for who in people:
        card = await backend.store.card(account.id, who, now=NOW)
        assert card is not None
        assert (card.owed_total, card.awaiting_total) == (sum(p.correspondent == who for p in owed),
                                                          sum(p.correspondent == who for p in awaiting)), who
        assert [p.message_id for p in card.owed + card.awaiting] == [
            p.message_id for p in owed + awaiting if p.correspondent == who]
    page, total = await backend.store.awaiting_page(account.id, now=NOW, limit=1, offset=1)
    assert ([p.message_id for p in page], total) == (["t3@home.test"], 2)


async def test_threads_are_found_whatever_the_order_of_folding(backend: Backend) -> None:
    once = await told(backend, threads(AccountRef(0, OWN, ZONE)))
    reversed_ = await backend.new_account("me.too@home.test", ZONE)
    for row in threads(reversed_)[::-1]:  # every reply folded before what it answers
        await backend.store.write_raw([row])
        await backend.store.aggregate(reversed_)

    async def pending(account: AccountRef) -> tuple[list[tuple[str, str | None]], ...]:
        return tuple([(p.correspondent, p.message_id) for p in found] for found in (
            await backend.store.owed(account.id, now=NOW), await backend.store.awaiting(account.id, now=NOW)))
    assert await pending(reversed_) == await pending(once)




async def test_a_card_follows_every_fold_and_a_later_now(backend: Backend) -> None:
    """A card may keep what it read until its account's next fold (PostgreSQL does): an answer
    that names someone else still settles what a card owes, and time alone moves a message
    into the owed list (a day after it came) or out of it (past the lookback), either way."""
    account = await backend.new_account(OWN, ZONE)
    joe, kim, soon = "joe@joe.test", "kim@kim.test", NOW + timedelta(minutes=20)  # the same day in Berlin
    await backend.store.write_raw([
        mail(account, "old@joe.test", NOW - SETTINGS.lookback + timedelta(minutes=10), joe, (OWN,)),
        mail(account, "q1@joe.test", NOW - timedelta(hours=23, minutes=50), joe, (OWN,)),
        mail(account, "q2@kim.test", NOW - timedelta(hours=23, minutes=40), kim, (OWN,), (joe,),
             refs=("q1@joe.test",), irt="q1@joe.test")])
    await backend.store.aggregate(account)

    async def owed(now: datetime) -> list[str | None]:
        card = await backend.store.card(account.id, joe, now=now)
        assert card is not None and card.owed_total == len(card.owed)
        return [p.message_id for p in card.owed]

    assert await owed(soon) == ["q1@joe.test"]  # a day old now; the oldest is past the lookback
    assert await owed(NOW) == ["old@joe.test"]
    assert await owed(soon) == ["q1@joe.test"]
    # You answer Kim only, in Joe's thread: Joe's message is answered, though Joe is not named.
    await backend.store.write_raw([mail(account, "q3@home.test", NOW - timedelta(hours=1), OWN, (kim,),
                                        refs=("q1@joe.test", "q2@kim.test"), irt="q2@kim.test")])
    await backend.store.aggregate(account)
    assert await owed(soon) == []


async def test_a_card_of_an_account_forgotten_and_folded_again_shows_only_its_new_mail(backend: Backend) -> None:
    account = await backend.new_account(OWN, ZONE)
    joe = "joe@joe.test"
    for mid in ("r1@joe.test", "r2@joe.test"):  # one fold each time, as many folds each time
        await backend.store.write_raw([mail(account, mid, NOW - timedelta(days=2), joe, (OWN,))])
        await backend.store.aggregate(account)
        card = await backend.store.card(account.id, joe, now=NOW)
        assert card is not None and [p.message_id for p in card.owed] == [mid]
        await backend.store.forget_account(account.id)
        assert await backend.store.card(account.id, joe, now=NOW) is None


async def test_the_kept_cards_are_bounded_by_the_messages_they_hold(backend: Backend,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL keeps a card's waiting messages until the next fold: over all cards their count
    is bounded (MAX_KEPT_WAITING_ALL), not only the number of cards, and each is counted once."""
    if not isinstance(backend.store, PgMetricsStore):
        pytest.skip("only PostgreSQL keeps cards")
    from inboxlens.metrics.postgres import insights
    monkeypatch.setattr(insights, "MAX_KEPT_WAITING_ALL", 5)
    account = await backend.new_account(OWN, ZONE)
    people = [f"p{i}@people.test" for i in range(4)]
    await backend.store.write_raw([mail(account, f"m{i}-{n}@people.test", NOW - timedelta(hours=30 + n), who, (OWN,))
                                   for i, who in enumerate(people) for n in range(2)])
    await backend.store.aggregate(account)
    kept = backend.store._insights  # type: ignore[attr-defined]
    for who in people + people[:1]:  # the first again: replaced, not counted twice
        card = await backend.store.card(account.id, who, now=NOW)
        assert card is not None and card.owed_total == 2
        assert kept._kept_waiting == sum(insights._count(f) for f in kept._cards.values()) <= 5
    assert len(kept._cards) == 2
