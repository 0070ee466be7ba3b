"""The Cassandra store's per-correspondent summaries, and relationships built from them.

A ``contacts`` row summarises one correspondent's messages of one local year; it is
recomputed whole from that (correspondent, year) partition of ``contact_messages`` when a
fold touches it. Relationships sum a correspondent's years and take the "last N days"
volumes from ``correspondent_days`` when read, since they depend on now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Callable, Sequence

from inboxlens.metrics import insights
from inboxlens.metrics.cassandra.fold import HOURS, CorrespondentDay, from_us
from inboxlens.metrics.model import Direction, Order, Relationship

WINDOWS = (30, 90, 365)  # days, counting today, of Relationship.last_30/last_90/last_365


@dataclass(frozen=True)
class ContactMessage:
    """One row of contact_messages: a message from or to one correspondent."""

    sent_us: int
    direction: Direction
    automated: bool
    hour: int  # local


@dataclass(frozen=True)
class ContactYear:
    correspondent: str
    year: int
    received: int
    sent: int
    received_automated: int
    first_us: int
    last_us: int
    received_by_hour: tuple[int, ...]


def fold_contact_year(correspondent: str, year: int, messages: Sequence[ContactMessage]) -> ContactYear | None:
    if not messages:
        return None
    received = [m for m in messages if m.direction == "received"]
    hours = [0] * HOURS
    for m in received:
        hours[m.hour] += 1
    return ContactYear(correspondent, year, len(received), len(messages) - len(received),
                       sum(1 for m in received if m.automated), min(m.sent_us for m in messages),
                       max(m.sent_us for m in messages), tuple(hours))


def relationship(years: Sequence[ContactYear], recent: Sequence[CorrespondentDay], now: datetime,
                 today: date) -> Relationship:
    """One correspondent's relationship: years all theirs, recent their days of the last 365."""
    received = sum(y.received for y in years)
    last = from_us(max(y.last_us for y in years))
    volumes = [_messages_since(recent, today - timedelta(days=n - 1), today) for n in WINDOWS]
    in_year = [d for d in recent if today - timedelta(days=364) <= d.day <= today]
    reciprocity = insights.reciprocity(sum(d.sent for d in in_year), sum(d.received for d in in_year))
    automated = 2 * sum(y.received_automated for y in years) > received
    strength = insights.strength(volumes[0], volumes[1], volumes[2], reciprocity,
                                 (now - last).total_seconds() / 86400, automated)
    return Relationship(years[0].correspondent, from_us(min(y.first_us for y in years)), last, received,
                        sum(y.sent for y in years), volumes[0], volumes[1], volumes[2], round(reciprocity, 4), strength,
                        _hours(years), automated)


def _messages_since(days: Sequence[CorrespondentDay], first: date, today: date) -> int:
    return sum(d.received + d.sent for d in days if first <= d.day <= today)


def _hours(years: Sequence[ContactYear]) -> tuple[int, ...]:
    return tuple(sum(y.received_by_hour[h] for y in years) for h in range(HOURS))


_ORDERS: dict[Order, Callable[[Relationship], tuple[float, ...]]] = {
    "strength": lambda r: (-r.strength, -r.last_contact.timestamp()),
    "recency": lambda r: (-r.last_contact.timestamp(),),
    "volume": lambda r: (-r.last_365, -(r.received + r.sent)),
}


def page(relationships: Sequence[Relationship], order: Order, limit: int, offset: int) -> list[Relationship]:
    """Best first by the order asked for (ties by address, so pages never overlap)."""
    key = _ORDERS[order]
    ranked = sorted(relationships, key=lambda r: (key(r), r.correspondent))
    return ranked[offset:offset + limit]
