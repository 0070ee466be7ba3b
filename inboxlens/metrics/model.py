"""What the metrics stores hold and answer: plain frozen values, backend-neutral.

Every ``MetricsStore`` (``inboxlens.metrics.store``) speaks in these types, so the web
API, the dashboard and the contract tests never know which backend answered.
Addresses (correspondents) are lower-cased; message keys are harvest's 16-byte
``msg_key`` (a hash of the Message-ID), shown as hex.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal, Sequence

from inboxlens.config.schema import WEEKDAYS, InsightsConfig

Period = Literal["day", "week", "month"]
Order = Literal["strength", "recency", "volume"]
Direction = Literal["sent", "received"]

# Reply-time buckets: upper bounds in seconds ("<1h", "1-4h", "4-24h", "1-3d", "3-7d", ">7d").
BUCKET_LABELS = ("<1h", "1-4h", "4-24h", "1-3d", "3-7d", ">7d")
BUCKET_BOUNDS = (3600, 4 * 3600, 24 * 3600, 3 * 86400, 7 * 86400)


@dataclass(frozen=True)
class AccountRef:
    """The account a store works for: its own address never counts as a correspondent."""

    id: int
    address: str
    time_zone: str = "UTC"


@dataclass(frozen=True)
class RawRow:
    """One harvested message's header metadata, as harvest hands it to a store."""

    account_id: int
    msg_key: bytes
    mailbox: str
    uid: int
    message_id: str | None
    in_reply_to: tuple[str, ...]
    refs: tuple[str, ...]
    subject: str
    from_address: str | None
    from_name: str | None
    to_addresses: tuple[str, ...]
    cc_addresses: tuple[str, ...]
    sent_at: datetime
    internal_date: datetime
    date_reliable: bool
    direction: Direction
    automated: bool
    list_id: str | None = None
    dkim: str | None = None
    spf: str | None = None
    dmarc: str | None = None
    dkim_domains: tuple[str, ...] = ()
    gm_thread_id: int | None = None
    dkim_signatures: tuple[str, ...] = ()  # "domain/selector"


@dataclass(frozen=True)
class FoldResult:
    taken: int = 0  # raw rows consumed
    folded: int = 0  # of those, messages counted for the first time
    days: frozenset[date] = frozenset()  # local dates whose rollups changed
    correspondents: frozenset[str] = frozenset()  # whose insights were recomputed

    @property
    def duplicates(self) -> int:
        return self.taken - self.folded

    def __add__(self, other: FoldResult) -> FoldResult:
        return FoldResult(self.taken + other.taken, self.folded + other.folded, self.days | other.days,
                          self.correspondents | other.correspondents)


@dataclass(frozen=True)
class Quantiles:
    """Reply times (seconds) of one direction: how many, median and 90th percentile."""

    count: int = 0
    median: float | None = None
    p90: float | None = None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Quantiles:
        if not seconds:
            return cls()
        ordered = sorted(seconds)
        return cls(len(ordered), percentile(ordered, 0.5), percentile(ordered, 0.9))


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


@dataclass(frozen=True)
class DayRollup:
    day: date
    received: int
    sent: int
    correspondents: int
    received_by_hour: tuple[int, ...]  # 24 local hours, [0] = 00:00-00:59
    sent_by_hour: tuple[int, ...]
    yours: Quantiles = Quantiles()  # your replies sent this day: how long you took
    theirs: Quantiles = Quantiles()  # replies you received this day: how long they took


@dataclass(frozen=True)
class PeriodRollup:
    start: date  # the Monday of an ISO week, or the first of a month
    received: int
    sent: int
    correspondents: int  # distinct over the whole period
    received_by_hour: tuple[int, ...]
    sent_by_hour: tuple[int, ...]
    received_by_weekday: tuple[int, ...]  # [0] = Monday ... [6] = Sunday
    sent_by_weekday: tuple[int, ...]
    yours: Quantiles = Quantiles()
    theirs: Quantiles = Quantiles()


@dataclass(frozen=True)
class CorrespondentRollup:
    start: date  # the day, the Monday of the ISO week, or the first of the month
    correspondent: str
    received: int  # messages from them
    sent: int  # messages to them (To or Cc)
    active_days: int
    yours: Quantiles = Quantiles()
    theirs: Quantiles = Quantiles()


@dataclass(frozen=True)
class WorkingHours:
    """When replies count as taking time, for the business-hours variant (account's zone)."""

    start: time = time(9)
    end: time = time(17)
    weekdays: frozenset[int] = frozenset(range(5))  # Monday = 0

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError("working hours must start before they end")
        if not self.weekdays or not self.weekdays <= set(range(7)):
            raise ValueError("working weekdays must be a non-empty subset of 0 (Monday) .. 6")


@dataclass(frozen=True)
class InsightSettings:
    working_hours: WorkingHours = WorkingHours()
    owed_after: timedelta = timedelta(days=1)  # a human's message unanswered this long is owed
    awaiting_after: timedelta = timedelta(days=3)  # your message unanswered this long is awaiting
    lookback: timedelta = timedelta(days=30)  # older unanswered messages are let go

    @classmethod
    def from_config(cls, config: InsightsConfig) -> "InsightSettings":
        """As the metrics stores take them (the loader checked the values)."""
        days = frozenset(WEEKDAYS.index(d.lower()) for d in config.work_days)
        hours = WorkingHours(time.fromisoformat(config.work_start), time.fromisoformat(config.work_end), days)
        return cls(hours, timedelta(hours=config.owed_after_hours), timedelta(hours=config.awaiting_after_hours),
                   timedelta(days=config.lookback_days))


@dataclass(frozen=True)
class ReplyTimes:
    """One direction's reply times to one person (or overall)."""

    count: int = 0
    median: float | None = None  # seconds
    p90: float | None = None  # seconds, 90th percentile (as Quantiles)
    within_hour: float | None = None  # share answered within an hour, 0..1
    buckets: tuple[int, ...] = (0,) * len(BUCKET_LABELS)

    @classmethod
    def of(cls, seconds: Sequence[float]) -> ReplyTimes:
        if not seconds:
            return cls()
        ordered = sorted(seconds)
        counts = [0] * len(BUCKET_LABELS)
        for s in ordered:
            counts[bucket(s)] += 1
        return cls(len(ordered), percentile(ordered, 0.5), percentile(ordered, 0.9),
                   sum(1 for s in ordered if s < 3600) / len(ordered), tuple(counts))


def bucket(seconds: float) -> int:
    return bisect.bisect_right(BUCKET_BOUNDS, seconds)  # the first bound above it: buckets include their lower bound


@dataclass(frozen=True)
class ReplyStats:
    yours: ReplyTimes = ReplyTimes()  # how fast you answer them
    theirs: ReplyTimes = ReplyTimes()  # how fast they answer you
    yours_business: ReplyTimes = ReplyTimes()  # counting working hours only
    theirs_business: ReplyTimes = ReplyTimes()


@dataclass(frozen=True)
class Relationship:
    correspondent: str
    first_contact: datetime
    last_contact: datetime
    received: int  # all time
    sent: int
    last_30: int  # messages either way in the last 30/90/365 days
    last_90: int
    last_365: int
    reciprocity: float  # 0 (one-way) .. 1 (balanced), over the last 365 days
    strength: float  # 0 .. 100, see docs/insights.md
    hours: tuple[int, ...]  # their messages by hour of day, your time zone, [0] = 00:00-00:59
    automated: bool  # most of what they send is from a machine


@dataclass(frozen=True)
class Pending:
    """A message waiting for an answer: owed by you (received) or awaited from them (sent, the
    latest message of its thread). correspondent: its sender, or its first To (else Cc)."""

    msg_key: str  # hex
    correspondent: str
    sent_at: datetime
    waiting: timedelta
    message_id: str | None = None  # its Message-ID without angle brackets (None: it had none, or indexed before 012)


CHECKS = ("dkim", "spf", "dmarc")
USUAL_PASS_RATE = 0.9  # a domain "usually passes" a check at this rate or above ...
USUAL_MIN_CHECKED = 5  # ... over at least this many other messages with a verdict for it


@dataclass(frozen=True)
class CheckCount:
    checked: int = 0  # messages with a verdict for this check
    passed: int = 0  # of those, "pass"

    @property
    def rate(self) -> float | None:
        return self.passed / self.checked if self.checked else None


@dataclass(frozen=True)
class DomainAuth:
    """Received messages whose From is at this domain, and how their checks went."""

    domain: str
    messages: int
    dkim: CheckCount
    spf: CheckCount
    dmarc: CheckCount
    last_seen: datetime


@dataclass(frozen=True)
class AuthFlag:
    """A message that failed a check its sender's domain usually passes."""

    msg_key: str  # hex
    domain: str
    correspondent: str
    sent_at: datetime
    failed: tuple[str, ...]  # of "dkim", "spf", "dmarc"


CARD_LIST = 10  # owed, awaiting and flagged messages a card lists at most (with the totals)


@dataclass(frozen=True)
class Card:
    """Everything the extension's overlay shows about one address, bounded in size: the
    CARD_LIST owed and awaiting messages waiting longest (and how many wait in all), and the
    CARD_LIST newest flagged ones."""

    relationship: Relationship
    replies: ReplyStats
    owed: tuple[Pending, ...] = ()
    awaiting: tuple[Pending, ...] = ()
    domain: DomainAuth | None = None
    flags: tuple[AuthFlag, ...] = field(default=())
    owed_total: int = 0
    awaiting_total: int = 0

    @classmethod
    def capped(cls, relationship: Relationship, replies: ReplyStats, owed: Sequence[Pending],
               awaiting: Sequence[Pending], domain: DomainAuth | None, flags: Sequence[AuthFlag]) -> Card:
        """From the whole lists, oldest first (flags newest first)."""
        return cls(relationship, replies, tuple(owed[:CARD_LIST]), tuple(awaiting[:CARD_LIST]), domain,
                   tuple(flags[:CARD_LIST]), len(owed), len(awaiting))
