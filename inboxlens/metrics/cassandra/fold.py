"""The Cassandra store's pure parts: buckets, index entries, reply choice and day folds.

Nothing here talks to a cluster. ``cassandra_aggregate`` reads partitions and hands their
rows to these functions; what they return is written back as whole rows (never as
increments), which is what makes a repeated fold harmless. The formulas shared with the
PostgreSQL backend stay in ``insights``; the meaning of every number is docs/insights.md.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Iterable, Literal, Sequence
from zoneinfo import ZoneInfo

from inboxlens.metrics.model import (CHECKS, AccountRef, AuthFlag, CheckCount, CorrespondentRollup, DayRollup, Direction, DomainAuth, Period, PeriodRollup, Quantiles, RawRow)
from inboxlens.metrics.insights import unusual_failure
from inboxlens.metrics.keys import gm_thread_key, thread_key
from inboxlens.metrics.keys import message_id_key as message_key  # a parent is found by its Message-ID alone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
RAW_TTL = timedelta(days=7)
# A raw row lives 7 days after its write, so at most 8 UTC day buckets hold live rows:
# today's and the seven before. Older buckets are empty (expired) and never read.
RAW_BUCKETS = 8
HOURS = 24
ReplyDirection = Literal["yours", "theirs"]


def to_us(at: datetime) -> int:
    """Microseconds since the epoch: exact, unlike CQL's millisecond timestamp."""
    if at.tzinfo is None:
        raise ValueError("a naive datetime has no instant; harvest hands aware ones")
    delta = at - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def raw_bucket(at: datetime) -> int:
    """The UTC day (days since the epoch) a raw row was written on: its partition."""
    return (at - EPOCH).days


def live_raw_buckets(now: datetime) -> list[int]:
    """Every bucket that can still hold an unexpired raw row, oldest first."""
    today = raw_bucket(now)
    return list(range(today - RAW_BUCKETS + 1, today + 1))


def month_start(day: date) -> date:
    return day.replace(day=1)


def period_start(day: date, period: Period) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())
    return month_start(day) if period == "month" else day


def period_end(start: date, period: Period) -> date:
    """The last day of the period that begins on start."""
    if period == "week":
        return start + timedelta(days=6)
    if period == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return start


def months(first: date, last: date) -> list[date]:
    """The first day of every month from first's to last's: correspondent_days partitions."""
    found, current = [], month_start(first)
    while current <= last:
        found.append(current)
        current = period_end(current, "month") + timedelta(days=1)
    return found


def local_days(first: datetime, last: datetime, zone: str) -> list[date]:
    """Every local date from first's to last's in the zone: day_messages partitions to scan."""
    tz = ZoneInfo(zone)
    day, end = first.astimezone(tz).date(), last.astimezone(tz).date()
    return [day + timedelta(days=n) for n in range((end - day).days + 1)]


# -- the message index ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """What outlives a raw row: one row of message_index, day_messages and thread_messages."""

    msg_key: bytes
    sent_us: int
    day: date  # local date in the account's zone
    hour: int  # local hour, 0..23
    direction: Direction
    automated: bool
    correspondents: tuple[str, ...]  # From when received; To then Cc, in order, when sent
    parent_keys: tuple[bytes, ...] = ()
    gm_thread_id: int | None = None
    from_domain: str | None = None
    dkim: str | None = None
    spf: str | None = None
    dmarc: str | None = None
    answered: bool = False  # someone answered it (owed/awaiting); only ever set to true
    # From day_threads (None for messages folded before it existed, and in the other tables):
    thread_key: bytes | None = None  # keys.thread_key
    to_me: bool | None = None  # received: your address in To or Cc
    message_id: str | None = None

    @property
    def sent_at(self) -> datetime:
        return from_us(self.sent_us)

    @property
    def correspondent(self) -> str | None:
        return self.correspondents[0] if self.correspondents else None


def entry_of(row: RawRow, account: AccountRef) -> Entry:
    local = row.sent_at.astimezone(ZoneInfo(account.time_zone))
    received = row.direction == "received"
    return Entry(row.msg_key, to_us(row.sent_at), local.date(), local.hour, row.direction, row.automated,
                 correspondents_of(row, account.address), parent_keys_of(row), row.gm_thread_id,
                 domain_of(row.from_address) if received else None, row.dkim, row.spf, row.dmarc,
                 thread_key=thread_key(row.msg_key, row.in_reply_to, row.refs, row.gm_thread_id),
                 to_me=addressed_to(row, account.address) if received else None, message_id=row.message_id)


def addressed_to(row: RawRow, own: str) -> bool:
    """Does the message name you in To or Cc (not only Bcc, not only a list you are on)?"""
    return own.lower() in (a.lower() for a in row.to_addresses + row.cc_addresses)


def correspondents_of(row: RawRow, own: str) -> tuple[str, ...]:
    candidates = (row.from_address,) if row.direction == "received" else row.to_addresses + row.cc_addresses
    distinct = dict.fromkeys(a.lower() for a in candidates if a)
    return tuple(a for a in distinct if a != own.lower())


def parent_keys_of(row: RawRow) -> tuple[bytes, ...]:
    ids = row.in_reply_to or row.refs[-1:]
    return tuple(dict.fromkeys(message_key(m) for m in ids))


def domain_of(address: str | None) -> str | None:
    _, at, domain = (address or "").rpartition("@")
    return domain.lower() if at and domain else None


# -- replies and answers -------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """One reply message, counted on its own local day (day_replies, contact_replies)."""

    reply_key: bytes
    day: date
    direction: ReplyDirection
    correspondent: str | None
    asked_us: int
    answered_us: int

    @property
    def seconds(self) -> float:
        return max(self.answered_us - self.asked_us, 0) / 1_000_000


def choose_parent(reply: Entry, parents: Iterable[Entry]) -> Entry | None:
    """Of the indexed parents of the other direction, the latest not after the reply, else the earliest."""
    other = [p for p in parents if p.direction != reply.direction]
    before = [p for p in other if p.sent_us <= reply.sent_us]
    if before:
        return max(before, key=lambda p: (p.sent_us, p.msg_key))
    return min(other, key=lambda p: (p.sent_us, p.msg_key), default=None)


def thread_parent(reply: Entry, thread: Iterable[Entry]) -> Entry | None:
    """For a message without In-Reply-To or References: the latest earlier one of the other direction."""
    if reply.parent_keys or reply.gm_thread_id is None:
        return None
    earlier = [m for m in thread if m.direction != reply.direction and m.sent_us < reply.sent_us]
    return max(earlier, key=lambda m: (m.sent_us, m.msg_key), default=None)


def reply_of(reply: Entry, parent: Entry) -> Reply:
    yours = reply.direction == "sent"
    correspondent = parent.correspondent if yours else reply.correspondent
    return Reply(reply.msg_key, reply.day, "yours" if yours else "theirs", correspondent, parent.sent_us,
                 reply.sent_us)


def newly_answered(new: Entry, parents: Sequence[Entry], children: Sequence[Entry],
                   thread: Sequence[Entry]) -> list[Entry]:
    """Entries the arrival of new answers, and new itself if something already answers it."""
    answered = [p for p in parents if p.direction != new.direction]
    answered += [m for m in thread if m.direction != new.direction and m.sent_us < new.sent_us]
    if any(c.direction != new.direction for c in children) or any(
            m.direction != new.direction and m.sent_us > new.sent_us for m in thread):
        answered.append(new)
    return [e for e in {e.msg_key: e for e in answered}.values() if not e.answered]


def thread_of(e: Entry) -> bytes:
    """Its thread key; for a message folded before day_threads, the best its index row allows."""
    if e.thread_key is not None:
        return e.thread_key
    return gm_thread_key(e.gm_thread_id) if e.gm_thread_id is not None else e.msg_key


def still_waiting(e: Entry, latest_sent: tuple[int, bytes] | None, latest_received: tuple[int, bytes] | None) -> bool:
    """Given the (sent_us, msg_key) of the latest message of each direction in its thread: is
    a received message still owed (nothing you sent at its second or later), a sent one still
    the thread's latest (nothing received at its second or later, nothing sent later)?"""
    if e.direction == "received":
        return latest_sent is None or latest_sent[0] < e.sent_us
    if latest_received is not None and latest_received[0] >= e.sent_us:
        return False
    return latest_sent is None or latest_sent <= (e.sent_us, e.msg_key)


# -- day rollups -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DayRow:
    """One row of day_rollups: whole counts and every reply time, so periods can be summed."""

    day: date
    received: int
    sent: int
    correspondents: int
    received_by_hour: tuple[int, ...]
    sent_by_hour: tuple[int, ...]
    yours: tuple[float, ...] = ()  # seconds, sorted
    theirs: tuple[float, ...] = ()


@dataclass(frozen=True)
class CorrespondentDay:
    """One row of correspondent_days."""

    day: date
    correspondent: str
    received: int
    sent: int
    yours: tuple[float, ...] = ()
    theirs: tuple[float, ...] = ()


def fold_day(day: date, entries: Sequence[Entry], replies: Sequence[Reply]) -> tuple[DayRow, list[CorrespondentDay]]:
    """A day's rollup rows from every message and reply the index holds for it."""
    hours = {"received": [0] * HOURS, "sent": [0] * HOURS}
    people: dict[str, dict[str, int]] = defaultdict(lambda: {"received": 0, "sent": 0})
    for e in entries:
        hours[e.direction][e.hour] += 1
        for c in e.correspondents:
            people[c][e.direction] += 1
    times = _reply_times(replies)
    row = DayRow(day, sum(hours["received"]), sum(hours["sent"]), len(people), tuple(hours["received"]),
                 tuple(hours["sent"]), times[None, "yours"], times[None, "theirs"])
    # A reply counts for the person answered even when written to someone else: their row
    # that day then holds the reply time and no message (docs/insights.md).
    for c in {r.correspondent for r in replies if r.correspondent is not None}:
        people.setdefault(c, {"received": 0, "sent": 0})
    return row, [CorrespondentDay(day, c, n["received"], n["sent"], times[c, "yours"], times[c, "theirs"])
                 for c, n in sorted(people.items())]


def _reply_times(replies: Sequence[Reply]) -> defaultdict[tuple[str | None, str], tuple[float, ...]]:
    lists: defaultdict[tuple[str | None, str], list[float]] = defaultdict(list)
    for r in replies:
        lists[None, r.direction].append(r.seconds)
        if r.correspondent is not None:
            lists[r.correspondent, r.direction].append(r.seconds)
    return defaultdict(tuple, {k: tuple(sorted(v)) for k, v in lists.items()})


def day_rollup(row: DayRow) -> DayRollup:
    return DayRollup(row.day, row.received, row.sent, row.correspondents, row.received_by_hour, row.sent_by_hour,
                     Quantiles.of(row.yours), Quantiles.of(row.theirs))


def sum_periods(days: Sequence[DayRow], people: Sequence[CorrespondentDay], period: Period) -> list[PeriodRollup]:
    """ISO weeks or months from day rows; distinct correspondents from the correspondent day rows."""
    grouped: dict[date, list[DayRow]] = defaultdict(list)
    for d in days:
        grouped[period_start(d.day, period)].append(d)
    distinct: dict[date, set[str]] = defaultdict(set)
    for p in people:
        if p.received + p.sent:
            distinct[period_start(p.day, period)].add(p.correspondent)
    return [_period(start, grouped[start], len(distinct[start])) for start in sorted(grouped)]


def _period(start: date, days: Sequence[DayRow], correspondents: int) -> PeriodRollup:
    received_weekday, sent_weekday = [0] * 7, [0] * 7
    for d in days:
        received_weekday[d.day.weekday()] += d.received
        sent_weekday[d.day.weekday()] += d.sent
    return PeriodRollup(start, sum(d.received for d in days), sum(d.sent for d in days), correspondents,
                        _add(d.received_by_hour for d in days), _add(d.sent_by_hour for d in days),
                        tuple(received_weekday), tuple(sent_weekday),
                        Quantiles.of([s for d in days for s in d.yours]),
                        Quantiles.of([s for d in days for s in d.theirs]))


def _add(histograms: Iterable[Sequence[int]]) -> tuple[int, ...]:
    total = [0] * HOURS
    for h in histograms:
        total = [a + b for a, b in zip(total, h)]
    return tuple(total)


def correspondent_periods(people: Sequence[CorrespondentDay], period: Period) -> list[CorrespondentRollup]:
    grouped: dict[tuple[date, str], list[CorrespondentDay]] = defaultdict(list)
    for p in people:
        grouped[period_start(p.day, period), p.correspondent].append(p)
    return [CorrespondentRollup(start, who, sum(p.received for p in rows), sum(p.sent for p in rows),
                                sum(1 for p in rows if p.received + p.sent),
                                Quantiles.of([s for p in rows for s in p.yours]),
                                Quantiles.of([s for p in rows for s in p.theirs]))
            for (start, who), rows in sorted(grouped.items())]


# -- sender authenticity ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DomainYear:
    """One row of domain_auth: a From domain's received messages of one (local) year."""

    domain: str
    year: int
    messages: int
    dkim: CheckCount
    spf: CheckCount
    dmarc: CheckCount
    last_us: int


def fold_domain_year(domain: str, year: int, verdicts: Sequence[tuple[int, str | None, str | None, str | None]]
                     ) -> DomainYear:
    """From (sent_us, dkim, spf, dmarc) of each received message of the domain that year."""
    return DomainYear(domain, year, len(verdicts), _count(v[1] for v in verdicts), _count(v[2] for v in verdicts),
                      _count(v[3] for v in verdicts), max((v[0] for v in verdicts), default=0))


def _count(verdicts: Iterable[str | None]) -> CheckCount:
    given = [v for v in verdicts if v is not None]
    return CheckCount(len(given), sum(1 for v in given if v == "pass"))


def domain_total(years: Sequence[DomainYear]) -> DomainAuth:
    def total(check: str) -> CheckCount:
        counts: list[CheckCount] = [getattr(y, check) for y in years]
        return CheckCount(sum(c.checked for c in counts), sum(c.passed for c in counts))
    return DomainAuth(years[0].domain, sum(y.messages for y in years), total("dkim"), total("spf"), total("dmarc"),
                      from_us(max(y.last_us for y in years)))


def flag_of(entry: Entry, total: DomainAuth) -> AuthFlag | None:
    """Decided once, when the entry is folded, against totals that include it."""
    failed = tuple(c for c in CHECKS if unusual_failure(getattr(total, c), getattr(entry, c)))
    if not failed or entry.from_domain is None:
        return None
    return AuthFlag(entry.msg_key.hex(), entry.from_domain, entry.correspondent or "", entry.sent_at, failed)
