"""PostgreSQL: the insights read from what ``rollups`` folded (docs/insights.md).

What does not depend on "now" was kept up to date by the fold, for the touched
correspondents only (``contacts``, ``message_replies``, ``sender_domains``,
``auth_flags``); volumes in the last N days, strength and owed replies are computed
here, when asked, with the formulas in ``insights``.

A card reads one correspondent's facts in one statement, and keeps them until its account's
next fold: every fold batch bumps ``metrics_state.runs`` and stamps ``last_aggregated_at``
in the transaction that changes what a card reads, so a card asks only for those (one
primary-key lookup) while they stay the same, and works out what depends on "now" (who
waits, and how long; strength) from what it kept.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Awaitable, Callable, TypeAlias, TypeVar
from zoneinfo import ZoneInfo

import asyncpg

from inboxlens.metrics import insights
from inboxlens.metrics.postgres import rollups
from inboxlens.metrics.model import (CARD_LIST, AuthFlag, Card, CheckCount, DomainAuth, InsightSettings, Order, Pending, Relationship, ReplyStats)

# $1 account, $2 today (local), and {who}: all correspondents, or $3's.
_RELATIONSHIPS_OF = """
SELECT k.correspondent, k.first_contact, k.last_contact, k.received, k.sent, k.automated_received, k.hours, k.version,
       coalesce(sum(d.received + d.sent) FILTER (WHERE d.day > $2::date - 30), 0) AS last_30,
       coalesce(sum(d.received + d.sent) FILTER (WHERE d.day > $2::date - 90), 0) AS last_90,
       coalesce(sum(d.received + d.sent), 0) AS last_365,
       coalesce(sum(d.sent), 0) AS sent_365, coalesce(sum(d.received), 0) AS received_365
FROM contacts k
LEFT JOIN correspondent_daily d ON d.account_id = k.account_id AND d.correspondent = k.correspondent
                                AND d.day > $2::date - 365 AND d.day <= $2::date
WHERE k.account_id = $1 AND {who}
GROUP BY k.account_id, k.correspondent
"""
_RELATIONSHIPS = _RELATIONSHIPS_OF.format(who="($3::text IS NULL OR k.correspondent = lower($3))")

# Message m still waits (docs/insights.md), each test one index lookup ($1 is the account).
# Owed (received): from a person, to you (To or Cc; unknown before migration 012), and you
# wrote nothing in its thread at its second or later. Awaiting (sent): the latest of its
# thread: nothing received at its second or later, nothing you sent later (at the same
# second, the greater msg_key is the later). Either way, nothing of the other direction
# names it as parent (reply_parents: a btree probe, then the replies' own rows).
_WAITING = """\
CASE m.direction
    WHEN 'received' THEN NOT m.automated AND m.to_me IS NOT FALSE
        AND NOT EXISTS (SELECT 1 FROM message_index r WHERE r.account_id = $1 AND r.thread_key = m.thread_key
                        AND r.direction = 'sent' AND r.sent_at >= m.sent_at)
    WHEN 'sent' THEN NOT EXISTS (SELECT 1 FROM message_index r WHERE r.account_id = $1 AND r.thread_key = m.thread_key
                                 AND r.direction = 'received' AND r.sent_at >= m.sent_at)
        AND NOT EXISTS (SELECT 1 FROM message_index r WHERE r.account_id = $1 AND r.thread_key = m.thread_key
                        AND r.direction = 'sent' AND (r.sent_at, r.msg_key) > (m.sent_at, m.msg_key))
    ELSE false END
  AND NOT EXISTS (SELECT 1 FROM reply_parents p JOIN message_index r ON r.account_id = $1 AND r.msg_key = p.msg_key
                  WHERE p.account_id = $1 AND p.parent_key = m.msg_key AND r.direction <> m.direction)"""

# $1 account, $2 oldest, $3 newest, $4 'received' (owed) or 'sent' (awaiting). A message's
# correspondent is its sender, or its first To (else Cc): each waits under one name.
_PENDING = f"""
SELECT m.msg_key, m.correspondents[1] AS correspondent, m.sent_at, m.message_id
FROM message_index m
WHERE m.account_id = $1 AND m.direction = $4 AND cardinality(m.correspondents) > 0
  AND m.sent_at BETWEEN $2 AND $3
  AND {_WAITING}
ORDER BY m.sent_at, m.msg_key
"""

# The account's zone, the zone and working hours its replies' business_seconds are in, and
# where its folds are (each batch bumps runs and stamps last_aggregated_at); and the stamp of
# the card's profile block (profiles.read.ProfileCache: the owner's profile version and the
# mailbox's opt-in), read here so that a card whose profiles did not change costs no round trip.
_STATE = """
SELECT a.time_zone, s.business_hours, s.runs, s.last_aggregated_at,
       a.user_id, a.public_profiles, coalesce(v.version, 0) AS profile_version
FROM mail_accounts a LEFT JOIN metrics_state s ON s.account_id = a.id
LEFT JOIN profile_versions v ON v.user_id = a.user_id WHERE a.id = $1
"""
REPLY_CACHE = 4096  # correspondents whose reply times a web process keeps
CARD_CACHE = 4096  # correspondents whose card facts a web process keeps
MAX_KEPT_WAITING = 1_000  # a card with more messages waiting in the window is read anew each time
MAX_KEPT_WAITING_ALL = 100_000  # waiting messages kept over all cards (a few hundred bytes each)

# $1 account, $2 correspondent, $3 whether the stored business_seconds are in the zone and
# hours of now: the times only where they are not (timestamps cost more to read than floats).
_REPLY_TIMES = """
SELECT direction, (extract(epoch FROM answered_at) - extract(epoch FROM asked_at))::float8 AS seconds,
       CASE WHEN $3 THEN business_seconds END AS business_seconds,
       CASE WHEN NOT $3 OR business_seconds IS NULL THEN asked_at END AS asked_at,
       CASE WHEN NOT $3 OR business_seconds IS NULL THEN answered_at END AS answered_at
FROM message_replies WHERE account_id = $1 AND correspondent = $2
"""

Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"  # where a query runs: the pool, or a connection the caller holds
T = TypeVar("T")
Extra: TypeAlias = Callable[[asyncpg.Connection, asyncpg.Record], Awaitable[T]]  # see PgInsights.card_with

_DOMAINS = """
SELECT domain, messages, dkim_checked, dkim_pass, spf_checked, spf_pass, dmarc_checked, dmarc_pass, last_seen
FROM sender_domains WHERE account_id = $1 AND ($2::text IS NULL OR domain = $2) ORDER BY messages DESC, domain
"""

# A page of _PENDING ($5 rows from $6 on) and how many there are in all, in one query.
_PENDING_PAGE = f"""
SELECT p.*, count(*) OVER () AS total FROM ({_PENDING}) p ORDER BY p.sent_at, p.msg_key LIMIT $5 OFFSET $6
"""
_PENDING_COUNT = f"SELECT count(*) FROM ({_PENDING}) p"

# $1 account, $2 page size, $3 offset.
_DOMAINS_PAGE = """
SELECT domain, messages, dkim_checked, dkim_pass, spf_checked, spf_pass, dmarc_checked, dmarc_pass, last_seen,
       count(*) OVER () AS total
FROM sender_domains WHERE account_id = $1 ORDER BY messages DESC, domain LIMIT $2 OFFSET $3
"""

_FLAGS = """
SELECT msg_key, domain, correspondent, sent_at, failed FROM auth_flags
WHERE account_id = $1 AND ($3::text IS NULL OR correspondent = $3) ORDER BY sent_at DESC, msg_key LIMIT $2
"""

# One correspondent's card facts in one statement, none when they have no contacts row: the
# relationship row, their domain's counts ($5, NULL for none), every message of theirs still
# waiting that was sent at $4 or later (the lookback's start; no end, so that kept facts
# serve a later "now" too) and the $6 newest flags. $1 account, $2 today (local), $3 the
# correspondent. Each condition is an equality or a range: one plan serves every card.
_CARD = f"""
SELECT k.*, d.domain, d.messages, d.dkim_checked, d.dkim_pass, d.spf_checked, d.spf_pass, d.dmarc_checked,
       d.dmarc_pass, d.last_seen,
       ARRAY(SELECT ROW(m.direction, m.sent_at, m.msg_key, m.message_id) FROM message_index m
             WHERE m.account_id = $1 AND m.sent_at >= $4 AND m.correspondents[1] = $3::text AND {_WAITING}
             ORDER BY m.sent_at, m.msg_key) AS waiting,
       ARRAY(SELECT ROW(f.msg_key, f.domain, f.correspondent, f.sent_at, f.failed) FROM auth_flags f
             WHERE f.account_id = $1 AND f.correspondent = $3 ORDER BY f.sent_at DESC, f.msg_key LIMIT $6) AS flags
FROM ({_RELATIONSHIPS_OF.format(who="k.correspondent = lower($3)")}) k
LEFT JOIN sender_domains d ON d.account_id = $1 AND d.domain = $5
"""


@dataclass(frozen=True)
class _Waiting:
    """One direction's waiting messages, oldest first: when each was sent (to bisect), and each."""

    times: tuple[datetime, ...]
    messages: tuple[tuple[str, datetime, str | None], ...]  # hex msg_key, sent_at, Message-ID

    @classmethod
    def of(cls, rows: list[tuple[str, datetime, bytes, str | None]], direction: str) -> _Waiting:
        mine = [(key.hex(), at, message_id) for d, at, key, message_id in rows if d == direction]
        return cls(tuple(at for _, at, _ in mine), tuple(mine))


@dataclass(frozen=True)
class _Facts:
    """What a card read from PostgreSQL, valid while its ``stamp`` is the account's."""

    stamp: tuple[Any, ...]  # (zone, business hours, fold runs, last fold, local day)
    since: datetime  # the "now" they were read at: waiting messages from since - lookback on
    row: dict[str, Any]  # the relationship's columns (not the waiting and flag arrays: those are below)
    domain: DomainAuth | None
    flags: tuple[AuthFlag, ...]
    waiting: dict[str, _Waiting]  # by direction: 'received' (owed), 'sent' (awaiting)


class PgInsights:
    def __init__(self, pool: asyncpg.Pool, settings: InsightSettings) -> None:
        self.pool = pool
        self.settings = settings
        # (account, correspondent) -> (what the account's replies looked like, their reply times)
        self._replies: OrderedDict[tuple[int, str], tuple[tuple[Any, ...], ReplyStats]] = OrderedDict()
        self._cards: OrderedDict[tuple[int, str], _Facts] = OrderedDict()  # (account, correspondent)
        self._kept_waiting = 0  # waiting messages in _cards: bounded by MAX_KEPT_WAITING_ALL too

    async def relationships(self, account_id: int, *, now: datetime, order: Order = "strength", limit: int = 50,
                            offset: int = 0) -> list[Relationship]:
        found = await self._relationships(account_id, now, None)
        return sorted(found, key=_ORDERS[order])[offset:offset + limit]

    async def card(self, account_id: int, correspondent: str, *, now: datetime) -> Card | None:
        return (await self.card_with(account_id, correspondent, now=now))[0]

    async def card_with(self, account_id: int, correspondent: str, *, now: datetime,
                        extra: Extra[T] | None = None) -> tuple[Card | None, T | None]:
        """The card, and what ``extra`` makes of the account's state row (its profile stamp:
        user_id, public_profiles, profile_version) on the card's own connection; ``extra`` is
        called only when there is a card."""
        who = correspondent.lower()
        async with self.pool.acquire() as db:  # one connection for the card's few queries
            state = await db.fetchrow(_STATE, account_id)
            if state is None:
                return None, None
            facts = await self._card_facts(db, account_id, who, state, now)
            if facts is None:
                return None, None
            replies = await self._reply_stats(db, account_id, who, state, facts.row["version"])
            added = await extra(db, state) if extra is not None else None
        owed, owed_total = self._waiting(facts, who, "received", now)
        awaiting, awaiting_total = self._waiting(facts, who, "sent", now)
        return Card(_relationship(facts.row, now), replies, owed, awaiting, facts.domain, facts.flags, owed_total,
                    awaiting_total), added

    async def _card_facts(self, db: Db, account_id: int, who: str, state: asyncpg.Record,
                          now: datetime) -> _Facts | None:
        """The correspondent's facts as kept, or read anew when a fold ran since (or the day,
        the zone or the working hours changed, or the clock went back)."""
        today = now.astimezone(ZoneInfo(str(state["time_zone"]))).date()
        stamp = (state["time_zone"], state["business_hours"], state["runs"], state["last_aggregated_at"], today)
        key = (account_id, who)
        kept = self._cards.get(key)
        if kept is not None and kept.stamp == stamp and kept.since <= now:
            self._cards.move_to_end(key)
            return kept
        facts = await self._read_facts(db, account_id, who, stamp, today, now)
        if facts is not None and state["runs"] is not None and _count(facts) <= MAX_KEPT_WAITING:
            self._kept_waiting += _count(facts) - (_count(self._cards.pop(key)) if key in self._cards else 0)
            self._cards[key] = facts
            while len(self._cards) > CARD_CACHE or self._kept_waiting > MAX_KEPT_WAITING_ALL:
                self._kept_waiting -= _count(self._cards.popitem(last=False)[1])
        return facts

    async def _read_facts(self, db: Db, account_id: int, who: str, stamp: tuple[Any, ...], today: date,
                          now: datetime) -> _Facts | None:
        domain = who.rpartition("@")[2] or None
        row = await db.fetchrow(_CARD, account_id, today, who, now - self.settings.lookback, domain, CARD_LIST)
        if row is None:
            return None
        flags = tuple(AuthFlag(key.hex(), flag_domain, person, at, tuple(failed))
                      for key, flag_domain, person, at, failed in row["flags"])
        waiting = {direction: _Waiting.of(row["waiting"], direction) for direction in ("received", "sent")}
        relationship = {k: v for k, v in row.items() if k not in ("waiting", "flags")}
        return _Facts(stamp, now, relationship, _domain(row) if row["domain"] is not None else None, flags, waiting)

    def _waiting(self, facts: _Facts, who: str, direction: str, now: datetime) -> tuple[tuple[Pending, ...], int]:
        """The CARD_LIST messages of one direction waiting longest now, and how many wait."""
        waiting = facts.waiting[direction]
        first = bisect_left(waiting.times, now - self.settings.lookback)
        end = max(first, bisect_right(waiting.times, now - self._wait(direction)))
        return tuple(Pending(key, who, at, now - at, message_id)
                     for key, at, message_id in waiting.messages[first:min(end, first + CARD_LIST)]), end - first

    async def _reply_stats(self, db: Db, account_id: int, correspondent: str, state: asyncpg.Record,
                           version: int) -> ReplyStats:
        """A correspondent's reply times, kept until a fold touches them (their contacts
        row's version) or the account's zone changes: the busiest have thousands of
        replies, and reading and sorting them is a card's biggest cost. The fold stores
        each reply's working-hours time (replies.fold); until it has for the
        account's zone and hours as they are now, they are worked out here."""
        zone = str(state["time_zone"])
        stamp = (zone, version, state["business_hours"])
        key = (account_id, correspondent)
        kept = self._replies.get(key)
        if kept is not None and kept[0] == stamp:
            self._replies.move_to_end(key)
            return kept[1]
        worked_out = state["business_hours"] == rollups.business_key(zone, self.settings.working_hours)
        rows = await db.fetch(_REPLY_TIMES, account_id, correspondent, worked_out)
        clock = insights.WorkingClock(zone, self.settings.working_hours)

        def working(r: asyncpg.Record) -> float:
            stored = r["business_seconds"]
            return float(stored) if stored is not None else clock.between(r["asked_at"], r["answered_at"])

        stats = insights.reply_stats_of((r["direction"], r["seconds"], working(r)) for r in rows)
        self._replies[key] = (stamp, stats)
        self._replies.move_to_end(key)
        while len(self._replies) > REPLY_CACHE:
            self._replies.popitem(last=False)
        return stats

    async def owed(self, account_id: int, *, now: datetime) -> list[Pending]:
        return await self._pending(account_id, now, "received")

    async def awaiting(self, account_id: int, *, now: datetime) -> list[Pending]:
        return await self._pending(account_id, now, "sent")

    async def pending_page(self, account_id: int, direction: str, *, now: datetime, limit: int,
                           offset: int) -> tuple[list[Pending], int]:
        """A page of owed ('received') or awaiting ('sent') messages, oldest first, and the total."""
        args = (account_id, now - self.settings.lookback, now - self._wait(direction), direction)
        rows = await self.pool.fetch(_PENDING_PAGE, *args, limit, offset)
        total = rows[0]["total"] if rows else (await self.pool.fetchval(_PENDING_COUNT, *args) if offset else 0)
        return [_pending(r, now) for r in rows], int(total)

    async def sender_domains(self, account_id: int, domain: str | None = None, db: Db | None = None
                             ) -> list[DomainAuth]:
        rows = await (db or self.pool).fetch(_DOMAINS, account_id, domain)
        return [_domain(r) for r in rows]

    async def sender_domains_page(self, account_id: int, *, limit: int, offset: int) -> tuple[list[DomainAuth], int]:
        rows = await self.pool.fetch(_DOMAINS_PAGE, account_id, limit, offset)
        total = rows[0]["total"] if rows else (await self.pool.fetchval(
            "SELECT count(*) FROM sender_domains WHERE account_id = $1", account_id) if offset else 0)
        return [_domain(r) for r in rows], int(total)

    async def auth_flags(self, account_id: int, *, limit: int = 100, correspondent: str | None = None,
                         db: Db | None = None) -> list[AuthFlag]:
        rows = await (db or self.pool).fetch(_FLAGS, account_id, limit, correspondent)
        return [AuthFlag(r["msg_key"].hex(), r["domain"], r["correspondent"], r["sent_at"], tuple(r["failed"]))
                for r in rows]

    async def _relationships(self, account_id: int, now: datetime, correspondent: str | None) -> list[Relationship]:
        today = now.astimezone(ZoneInfo(await self._time_zone(account_id))).date()
        rows = await self.pool.fetch(_RELATIONSHIPS, account_id, today, correspondent)
        return [_relationship(r, now) for r in rows]

    async def _pending(self, account_id: int, now: datetime, direction: str) -> list[Pending]:
        rows = await self.pool.fetch(_PENDING, account_id, now - self.settings.lookback, now - self._wait(direction),
                                     direction)
        return [_pending(r, now) for r in rows]

    def _wait(self, direction: str) -> timedelta:
        return self.settings.owed_after if direction == "received" else self.settings.awaiting_after

    async def _time_zone(self, account_id: int) -> str:
        return str(await self.pool.fetchval("SELECT time_zone FROM mail_accounts WHERE id = $1", account_id) or "UTC")


def _pending(r: Any, now: datetime) -> Pending:
    return Pending(r["msg_key"].hex(), r["correspondent"], r["sent_at"], now - r["sent_at"], r["message_id"])


def _domain(r: Any) -> DomainAuth:
    return DomainAuth(r["domain"], r["messages"], CheckCount(r["dkim_checked"], r["dkim_pass"]),
                      CheckCount(r["spf_checked"], r["spf_pass"]), CheckCount(r["dmarc_checked"], r["dmarc_pass"]),
                      r["last_seen"])


def _count(facts: _Facts) -> int:
    return sum(len(w.times) for w in facts.waiting.values())


def _relationship(r: Any, now: datetime) -> Relationship:
    automated = r["automated_received"] * 2 > r["received"]
    balance = insights.reciprocity(int(r["sent_365"]), int(r["received_365"]))
    since = (now - r["last_contact"]) / timedelta(days=1)
    score = insights.strength(int(r["last_30"]), int(r["last_90"]), int(r["last_365"]), balance, since, automated)
    return Relationship(r["correspondent"], r["first_contact"], r["last_contact"], r["received"], r["sent"],
                        int(r["last_30"]), int(r["last_90"]), int(r["last_365"]), round(balance, 4), score,
                        tuple(r["hours"]), automated)


_ORDERS: dict[str, Any] = {
    "strength": lambda r: (-r.strength, -r.last_contact.timestamp(), r.correspondent),
    "recency": lambda r: (-r.last_contact.timestamp(), r.correspondent),
    "volume": lambda r: (-r.last_365, -(r.received + r.sent), r.correspondent),
}
