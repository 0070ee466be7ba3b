"""The formulas behind the insights, shared by every MetricsStore backend.

Pure functions over numbers a store already holds; docs/insights.md says what they
mean. Stores gather the inputs (in SQL or CQL) and call these, so both backends give
the same answers.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Iterable
from zoneinfo import ZoneInfo

from inboxlens.metrics.model import (USUAL_MIN_CHECKED, USUAL_PASS_RATE, CheckCount, ReplyStats, ReplyTimes, WorkingHours)

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


EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)  # instants are clamped into these years for
LATEST = datetime(2999, 12, 31, tzinfo=timezone.utc)  # business hours: a Date header can say anything
MAX_SPAN = timedelta(days=3653)  # a longer span counts ten years of working time
KEPT_YEARS = 32  # year tables a clock keeps itself (more come from _calendar's bounded cache)


class WorkingClock:
    """Working seconds in one zone's working hours, by lookup.

    Each local day's working window lies within that day, so the working seconds up to an
    instant are those of the days before it (a running sum per year, ``_calendar``) plus
    what of its own day's window has passed: two lookups per span, whatever its length (a
    card sums thousands of replies with one clock). Instants are clamped to 1900-2999 and a
    span to ten years, so a forged date costs no more than a plausible one.
    """

    def __init__(self, time_zone: str, hours: WorkingHours) -> None:
        self.zone, self.time_zone, self.hours = ZoneInfo(time_zone), time_zone, hours
        self._years: dict[int, _Year] = {}

    def between(self, start: datetime, end: datetime) -> float:
        start, end = min(max(start, EARLIEST), LATEST), min(max(end, EARLIEST), LATEST)
        if end <= start:
            return 0.0
        end = min(end, start + MAX_SPAN)
        first, done_first = self._worked_by(start)
        last, done_last = self._worked_by(end)
        whole_years = sum(self._year(year)[3][-1] for year in range(first, last))
        return max(whole_years + done_last - done_first, 0.0)

    def _worked_by(self, instant: datetime) -> tuple[int, float]:
        """(local year, working seconds of that year up to the instant)."""
        local = instant.astimezone(self.zone)
        first_day, opens, closes, before = self._year(local.year)
        i = local.toordinal() - first_day
        open_ = opens[i]
        return local.year, before[i] + min(max(instant.timestamp() - open_, 0.0), closes[i] - open_)

    def _year(self, year: int) -> _Year:
        found = self._years.get(year)
        if found is None:
            found = _calendar(self.time_zone, self.hours, year)
            if len(self._years) < KEPT_YEARS:
                self._years[year] = found
        return found


_Year = tuple[int, list[float], list[float], list[float]]


@lru_cache(maxsize=256)
def _calendar(time_zone: str, hours: WorkingHours, year: int) -> _Year:
    """The ordinal of 1 January, then per day of the local year: its window's opening and
    closing (POSIX seconds, so a DST change inside a window counts as the hour it really
    is) and the working seconds of the year before that day; the last running sum is the
    year's total."""
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
        day += timedelta(days=1)
    return date(year, 1, 1).toordinal(), opens, closes, before


def reply_stats(replies: Iterable[tuple[str, datetime, datetime]], time_zone: str,
                hours: WorkingHours) -> ReplyStats:
    """From (direction, parent sent_at, reply sent_at): 'yours' = you answered, 'theirs' = they did."""
    clock = WorkingClock(time_zone, hours)
    return reply_stats_of((direction, (answered - asked).total_seconds(), clock.between(asked, answered))
                          for direction, asked, answered in replies)


def reply_stats_of(replies: Iterable[tuple[str, float, float]]) -> ReplyStats:
    """From (direction, seconds, seconds in working hours), each reply worked out already."""
    plain: dict[str, list[float]] = {"yours": [], "theirs": []}
    business: dict[str, list[float]] = {"yours": [], "theirs": []}
    for direction, seconds, working in replies:
        plain[direction].append(max(seconds, 0.0))
        business[direction].append(working)
    return ReplyStats(ReplyTimes.of(plain["yours"]), ReplyTimes.of(plain["theirs"]),
                      ReplyTimes.of(business["yours"]), ReplyTimes.of(business["theirs"]))


def unusual_failure(total: CheckCount, verdict: str | None) -> bool:
    """Does this message's verdict fail a check the domain's other messages usually pass?"""
    if verdict is None or verdict == "pass":
        return False
    others = total.checked - 1  # this message is in the total and did not pass
    return others >= USUAL_MIN_CHECKED and total.passed / others >= USUAL_PASS_RATE
