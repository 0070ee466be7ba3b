"""The formulas behind the insights, shared by every MetricsStore backend.

Pure functions over numbers a store already holds; docs/insights.md says what they
mean. Stores gather the inputs (in SQL or CQL) and call these, so both backends give
the same answers.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Iterable
from zoneinfo import ZoneInfo

from .model import (USUAL_MIN_CHECKED, USUAL_PASS_RATE, CheckCount, ReplyStats, ReplyTimes, WorkingHours)

VOLUME_SATURATION = 400  # weighted messages a year at which the volume part is full
RECENCY_DAYS = 30.0  # recency halves (e-folds) every this many days


def reciprocity(sent: int, received: int) -> float:
    total = sent + received
    return 2 * min(sent, received) / total if total else 0.0


def strength(last_30: int, last_90: int, last_365: int, reciprocity_: float, days_since_last: float,
             automated: bool) -> float:
    """0..100: 50 % how much you write either way (recent weighs more), 30 % balance, 20 % recency."""
    if automated:
        return 0.0
    weighted = 4 * last_30 + 2 * (last_90 - last_30) + (last_365 - last_90)
    volume = min(1.0, math.log1p(max(weighted, 0)) / math.log1p(VOLUME_SATURATION))
    recency = math.exp(-max(days_since_last, 0.0) / RECENCY_DAYS)
    return round(100 * (0.5 * volume + 0.3 * reciprocity_ + 0.2 * recency), 2)


def business_seconds(start: datetime, end: datetime, time_zone: str, hours: WorkingHours) -> float:
    """Seconds between start and end that fall in working hours, in the zone's local time.

    Each local day's working window lies within that day, so the working seconds up to an
    instant are those of the days before it (a per-year running sum) plus what of its own
    day's window has passed: a lookup per end, whatever the span (a card sums thousands).
    """
    if end <= start:
        return 0.0
    zone = ZoneInfo(time_zone)
    first, done_first = _worked_by(start, zone, time_zone, hours)
    last, done_last = _worked_by(end, zone, time_zone, hours)
    between = sum(_calendar(time_zone, hours, year)[2][-1] for year in range(first, last))
    return max(between + done_last - done_first, 0.0)


def _worked_by(instant: datetime, zone: ZoneInfo, time_zone: str, hours: WorkingHours) -> tuple[int, float]:
    """(local year, working seconds of that year up to the instant)."""
    local = instant.astimezone(zone)
    opens, closes, before = _calendar(time_zone, hours, local.year)
    i = local.timetuple().tm_yday - 1
    return local.year, before[i] + min(max(instant.timestamp() - opens[i], 0.0), closes[i] - opens[i])


@lru_cache(maxsize=256)
def _calendar(time_zone: str, hours: WorkingHours, year: int) -> tuple[list[float], list[float], list[float]]:
    """Per day of a local year: its window's opening and closing (POSIX seconds, so a DST
    change inside a window counts as the hour it really is) and the working seconds of the
    year before that day; the last running sum is the year's total."""
    zone = ZoneInfo(time_zone)
    opens: list[float] = []
    closes: list[float] = []
    before = [0.0]
    day = date(year, 1, 1)
    while day.year == year:
        open_ = datetime.combine(day, hours.start, zone).timestamp()
        close = datetime.combine(day, hours.end, zone).timestamp() if day.weekday() in hours.weekdays else open_
        close = max(close, open_)  # a window inside a DST gap can close "before" it opens: none
        opens.append(open_)
        closes.append(close)
        before.append(before[-1] + close - open_)
        if day == date.max:
            break
        day += timedelta(days=1)
    return opens, closes, before


def reply_stats(replies: Iterable[tuple[str, datetime, datetime]], time_zone: str,
                hours: WorkingHours) -> ReplyStats:
    """From (direction, parent sent_at, reply sent_at): 'yours' = you answered, 'theirs' = they did."""
    plain: dict[str, list[float]] = {"yours": [], "theirs": []}
    business: dict[str, list[float]] = {"yours": [], "theirs": []}
    for direction, asked, answered in replies:
        plain[direction].append(max((answered - asked).total_seconds(), 0.0))
        business[direction].append(business_seconds(asked, answered, time_zone, hours))
    return ReplyStats(ReplyTimes.of(plain["yours"]), ReplyTimes.of(plain["theirs"]),
                      ReplyTimes.of(business["yours"]), ReplyTimes.of(business["theirs"]))


def unusual_failure(total: CheckCount, verdict: str | None) -> bool:
    """Does this message's verdict fail a check the domain's other messages usually pass?"""
    if verdict is None or verdict == "pass":
        return False
    others = total.checked - 1  # this message is in the total and did not pass
    return others >= USUAL_MIN_CHECKED and total.passed / others >= USUAL_PASS_RATE
