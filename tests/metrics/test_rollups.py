"""Rollups against a brute-force recomputation (hypothesis), across time zones and DST.

Random messages around DST changes are harvested in random chunks (some of them again,
as a new UIDVALIDITY would), aggregated in random batch sizes, sometimes twice, and every
daily, weekly and monthly number is compared with one computed here from the messages
alone with zoneinfo. One migrated database serves every example (truncated between them).

The helpers here (``Message``, ``store``, ``Expected``) serve the functional tests too.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import TypeVar
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inboxlens.metrics.postgres import rollups
from inboxlens.metrics.model import Quantiles
from inboxlens.db.migrate import migrate

UTC = timezone.utc
OWN = "me@example.test"
_keys = itertools.count(1)
R = TypeVar("R")


@dataclass(frozen=True)
class Message:
    """What a raw_headers row says that rollups read."""

    sent_at: datetime
    direction: str  # 'sent' or 'received'
    from_address: str | None = None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    message_id: str | None = None
    in_reply_to: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()
    key: bytes = field(default_factory=lambda: hashlib.sha256(b"test%d" % next(_keys)).digest()[:16])

    def correspondents(self, own: str) -> set[str]:
        found = [self.from_address] if self.direction == "received" else [*self.to, *self.cc]
        return {a.lower() for a in found if a and a.lower() != own}


async def add_account(conn: asyncpg.Connection | asyncpg.Pool, address: str = OWN, time_zone: str = "UTC") -> int:
    user = await conn.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", address)
    return int(await conn.fetchval("INSERT INTO mail_accounts (user_id, address, provider, time_zone) "
                                   "VALUES ($1, $2, 'test', $3) RETURNING id", user, address, time_zone))


async def store(conn: asyncpg.Connection | asyncpg.Pool, account_id: int, messages: Iterable[Message]) -> None:
    """Write raw rows as harvest does: a message already stored (same key) is skipped."""
    rows = [(account_id, m.key, "INBOX", uid, m.message_id, list(m.in_reply_to), list(m.refs), m.from_address,
             list(m.to), list(m.cc), m.sent_at, m.direction) for uid, m in enumerate(messages, 1)]
    await conn.executemany(
        "INSERT INTO raw_headers (account_id, msg_key, mailbox, uid, message_id, in_reply_to, refs, from_address, "
        "to_addresses, cc_addresses, sent_at, internal_date, date_reliable, direction, automated) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, true, $12, false) ON CONFLICT DO NOTHING", rows)


def key_of(message_id: str) -> bytes:
    """harvest's msg_key for a message with this Message-ID."""
    return hashlib.sha256(b"id\0" + message_id.encode()).digest()[:16]


@dataclass(frozen=True)
class Reply:
    kind: str  # 'yours' or 'theirs'
    correspondent: str | None
    seconds: int


def match_replies(unique: dict[bytes, Message], own: str) -> dict[bytes, Reply]:
    """docs/insights.md's reply matching, by Message-ID only, written out plainly."""
    found = {}
    for key, r in unique.items():
        ids = r.in_reply_to or r.refs[-1:]
        parents = [unique[key_of(i)] for i in ids if key_of(i) in unique]
        parents = [p for p in parents if p.direction != r.direction]
        if not parents:
            continue
        before = [p for p in parents if p.sent_at <= r.sent_at]
        p = max(before, key=lambda m: m.sent_at) if before else min(parents, key=lambda m: m.sent_at)
        who = sorted(p.correspondents(own) if r.direction == "sent" else r.correspondents(own))
        found[key] = Reply("yours" if r.direction == "sent" else "theirs", who[0] if who else None,
                           max(0, round((r.sent_at - p.sent_at).total_seconds())))
    return found


@dataclass
class Expected:
    """The rollups recomputed from the messages alone (each key counted once)."""

    days: dict[date, rollups.DayRollup]
    people: dict[tuple[date, str], tuple[int, int, Quantiles, Quantiles]]
    weeks: dict[date, rollups.PeriodRollup]
    months: dict[date, rollups.PeriodRollup]

    @classmethod
    def of(cls, messages: Iterable[Message], time_zone: str, own: str = OWN) -> Expected:
        zone = ZoneInfo(time_zone)
        unique = {m.key: m for m in messages}
        replies = match_replies(unique, own)
        local = [(m, m.sent_at.astimezone(zone), replies.get(m.key)) for m in unique.values()]
        people: Counter[tuple[date, str, str]] = Counter(
            (at.date(), who, m.direction) for m, at, _ in local for who in m.correspondents(own))
        answered: defaultdict[tuple[date, str, str], list[int]] = defaultdict(list)
        for _, at, reply in local:
            if reply and reply.correspondent:
                answered[at.date(), reply.correspondent, reply.kind].append(reply.seconds)
        return cls(_rollups(local, own, lambda d: d, _day),
                   {(d, who): (people[d, who, "received"], people[d, who, "sent"],
                               Quantiles.of(answered[d, who, "yours"]), Quantiles.of(answered[d, who, "theirs"]))
                    for d, who, _ in [*people, *answered]},
                   _rollups(local, own, lambda d: d - timedelta(days=d.weekday()), _period),
                   _rollups(local, own, lambda d: d.replace(day=1), _period))


Local = tuple[Message, datetime, "Reply | None"]


def _rollups(local: list[Local], own: str, start_of: Callable[[date], date],
             make: Callable[[date, list[Local], str], R]) -> dict[date, R]:
    groups: defaultdict[date, list[Local]] = defaultdict(list)
    for m, at, reply in local:
        groups[start_of(at.date())].append((m, at, reply))
    return {start: make(start, group, own) for start, group in sorted(groups.items())}


def _histogram(values: Iterable[int], size: int) -> tuple[int, ...]:
    counts = Counter(values)
    return tuple(counts[i] for i in range(size))


def _day(day: date, group: list[Local], own: str) -> rollups.DayRollup:
    received = [at for m, at, _ in group if m.direction == "received"]
    sent = [at for m, at, _ in group if m.direction == "sent"]
    people = set().union(*(m.correspondents(own) for m, _, _ in group))
    replies = [r for _, _, r in group if r is not None]
    return rollups.DayRollup(day, len(received), len(sent), len(people),
                             _histogram((at.hour for at in received), 24), _histogram((at.hour for at in sent), 24),
                             Quantiles.of([r.seconds for r in replies if r.kind == "yours"]),
                             Quantiles.of([r.seconds for r in replies if r.kind == "theirs"]))


def _period(start: date, group: list[Local], own: str) -> rollups.PeriodRollup:
    day = _day(start, group, own)
    received = [at for m, at, _ in group if m.direction == "received"]
    sent = [at for m, at, _ in group if m.direction == "sent"]
    return rollups.PeriodRollup(start, day.received, day.sent, day.correspondents, day.received_by_hour,
                                day.sent_by_hour, _histogram((at.weekday() for at in received), 7),
                                _histogram((at.weekday() for at in sent), 7), day.yours, day.theirs)


async def assert_rollups(pool: asyncpg.Pool, account_id: int, expected: Expected) -> None:
    first, last = date(2000, 1, 1), date(2100, 1, 1)
    assert {d.day: d for d in await rollups.daily(pool, account_id, first, last)} == expected.days
    found = await rollups.correspondents(pool, account_id, first, last)
    assert {(c.start, c.correspondent): (c.received, c.sent, c.yours, c.theirs) for c in found} == expected.people
    assert {w.start: w for w in await rollups.weekly(pool, account_id, first, last)} == expected.weeks
    assert {m.start: m for m in await rollups.monthly(pool, account_id, first, last)} == expected.months


# -- the property ---------------------------------------------------------------------------------

# Each zone with instants (UTC) of its 2024 DST changes; Berlin's spring change is a month's last day.
ZONES = {
    "Europe/Berlin": (datetime(2024, 3, 31, 1, tzinfo=UTC), datetime(2024, 10, 27, 1, tzinfo=UTC)),
    "America/New_York": (datetime(2024, 3, 10, 7, tzinfo=UTC), datetime(2024, 11, 3, 6, tzinfo=UTC)),
    "Australia/Lord_Howe": (datetime(2024, 4, 6, 15, tzinfo=UTC), datetime(2024, 10, 5, 15, 30, tzinfo=UTC)),
    "UTC": (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 12, 31, 12, tzinfo=UTC)),
}
PEOPLE = ("ann@example.test", "Ann@Example.test", "bob@example.test", "carol@other.test", OWN, "ME@example.test", "")


@st.composite
def mailboxes(draw: st.DrawFn) -> tuple[str, list[Message]]:
    zone = draw(st.sampled_from(sorted(ZONES)))
    change = draw(st.sampled_from(ZONES[zone]))
    instants = st.integers(-3 * 86400, 3 * 86400).map(lambda s: change + timedelta(seconds=s))
    people = st.lists(st.sampled_from(PEOPLE), max_size=3).map(tuple)
    received = st.builds(Message, instants, st.just("received"), st.sampled_from((*PEOPLE, None)))
    sent = st.builds(Message, instants, st.just("sent"), st.just(OWN), people, people)
    drawn = draw(st.lists(st.one_of(received, sent), max_size=40))
    # Every message gets a Message-ID; some answer another one (In-Reply-To, or References only).
    ids = [f"{next(_keys)}@prop.test" for _ in drawn]
    threaded = []
    for m, own_id in zip(drawn, ids):
        parent = draw(st.none() | st.sampled_from(ids)) if ids else None
        by_refs = draw(st.booleans())
        link = {"refs": ("root@prop.test", parent)} if parent and by_refs else {"in_reply_to": (parent,)} if parent else {}
        threaded.append(replace(m, message_id=own_id, key=key_of(own_id), **link))
    return zone, threaded


@dataclass(frozen=True)
class Step:
    """One harvest round: new messages, some old ones again, then batch sizes of aggregate runs."""

    new: int
    again: int
    batches: tuple[int, ...]


steps = st.lists(st.builds(Step, st.integers(0, 40), st.integers(0, 5),
                           st.lists(st.sampled_from((1, 3, 7, rollups.DEFAULT_BATCH)), min_size=1, max_size=2)
                           .map(tuple)), min_size=1, max_size=4)


def _rounds(messages: Sequence[Message], plan: Sequence[Step]) -> Iterator[tuple[list[Message], Step]]:
    """Cut messages into the plan's rounds; the last round takes whatever is left."""
    done = 0
    for i, step in enumerate(plan):
        end = len(messages) if i == len(plan) - 1 else min(len(messages), done + step.new)
        yield [*messages[done:end], *messages[:min(step.again, done)]], step
        done = end


@pytest.fixture
def migrated(pg_db: str) -> str:
    asyncio.run(migrate(pg_db))
    return pg_db


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mailbox=mailboxes(), other=mailboxes(), plan=steps)
def test_rollups_equal_a_brute_force_recount(migrated: str, mailbox: tuple[str, list[Message]],
                                             other: tuple[str, list[Message]], plan: list[Step]) -> None:
    asyncio.run(_check(migrated, mailbox, other, plan))


async def _check(dsn: str, mailbox: tuple[str, list[Message]], other: tuple[str, list[Message]],
                 plan: list[Step]) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        # DELETE, not TRUNCATE: on tables this small it is many times faster (no new files to sync).
        await pool.execute("DELETE FROM users")  # cascades to the accounts and everything of theirs
        account = await add_account(pool, OWN, mailbox[0])
        # Another account, in its own zone, harvested once and aggregated first: it must not leak.
        bystander = await add_account(pool, "someone@example.test", other[0])
        await store(pool, bystander, other[1])
        await rollups.aggregate(pool, bystander)
        for chunk, step in _rounds(mailbox[1], plan):
            await store(pool, account, chunk)
            for batch in step.batches:
                await rollups.aggregate(pool, account, batch_size=batch)
        assert await pool.fetchval("SELECT count(*) FROM raw_headers") == 0
        assert await pool.fetchval("SELECT count(*) FROM message_index WHERE account_id = $1", account) == \
            len({m.key for m in mailbox[1]})
        await assert_rollups(pool, account, Expected.of(mailbox[1], mailbox[0]))
        await assert_rollups(pool, bystander, Expected.of(other[1], other[0], "someone@example.test"))
    finally:
        await pool.close()


def test_fold_result_adds_up() -> None:
    one = rollups.FoldResult(3, 2, frozenset({date(2024, 1, 1)}))
    two = rollups.FoldResult(4, 4, frozenset({date(2024, 1, 2)}))
    assert one + two == rollups.FoldResult(7, 6, frozenset({date(2024, 1, 1), date(2024, 1, 2)}))
    assert (one + two).duplicates == 1
