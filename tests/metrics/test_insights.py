"""Business-hours reply times: the per-year calendar against a day-by-day count (hypothesis)."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from inboxlens.metrics.insights import WorkingClock
from inboxlens.metrics.model import WorkingHours

ZONES = ("Europe/Berlin", "America/New_York", "UTC", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Chatham",
         "America/St_Johns", "Australia/Sydney")
NINE_TO_FIVE = WorkingHours()


def day_by_day(start: datetime, end: datetime, time_zone: str, hours: WorkingHours) -> float:
    """Every local day's window, clipped to [start, end], added up one day at a time.

    In POSIX seconds: subtracting two datetimes of the same zone would count wall-clock time and
    make a window across a DST change an hour too long or short (the old implementation did)."""
    if end <= start:
        return 0.0
    zone = ZoneInfo(time_zone)
    day, last, total = start.astimezone(zone).date() - timedelta(days=1), end.astimezone(zone).date(), 0.0
    while day <= last:
        if day.weekday() in hours.weekdays:
            open_, close = (datetime.combine(day, t, zone).timestamp() for t in (hours.start, hours.end))
            total += max(min(end.timestamp(), close) - max(start.timestamp(), open_), 0.0)
        day += timedelta(days=1)
    return total


def business_seconds(start: datetime, end: datetime, time_zone: str, hours: WorkingHours) -> float:
    return WorkingClock(time_zone, hours).between(start, end)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.mark.parametrize("start, end, zone, hours, expected", [
    # Friday 16:00 to Monday 10:00 in Berlin: one hour on Friday, one on Monday.
    (utc(2026, 11, 27, 15), utc(2026, 11, 30, 9), "Europe/Berlin", NINE_TO_FIVE, 2 * 3600),
    # Across New Year and a whole week-end: Thu 31 Dec 2026 16:00 to Mon 4 Jan 2027 09:30 (UTC).
    (utc(2026, 12, 31, 16), utc(2027, 1, 4, 9, 30), "UTC", NINE_TO_FIVE, 3600 + 8 * 3600 + 1800),
    # Berlin springs forward at 02:00 on Sunday 29 March 2026: a 01:00-04:00 window lasts 2 hours
    # (the old day-by-day code subtracted two Berlin wall clocks here and said 3) ...
    (utc(2026, 3, 28, 12), utc(2026, 3, 30, 0), "Europe/Berlin", WorkingHours(time(1), time(4), frozenset({6})),
     2 * 3600),
    # ... and falls back on Sunday 25 October 2026: the same window lasts 4 hours.
    (utc(2026, 10, 24, 12), utc(2026, 10, 26, 0), "Europe/Berlin", WorkingHours(time(1), time(4), frozenset({6})),
     4 * 3600),
    # A window opening in the spring-forward gap (02:30, read as 01:30 UTC) and closing at 03:00 (01:00 UTC)
    # closes before it opens: no time in it.
    (utc(2026, 3, 28), utc(2026, 3, 30), "Europe/Berlin", WorkingHours(time(2, 30), time(3), frozenset({6})), 0),
    # Backwards or empty spans take no time.
    (utc(2026, 11, 30, 12), utc(2026, 11, 30, 10), "UTC", NINE_TO_FIVE, 0),
    # Two whole years of 9-5 on weekdays in UTC: 2025 and 2026 have 261 weekdays each.
    (utc(2025, 1, 1), utc(2027, 1, 1), "UTC", NINE_TO_FIVE, 2 * 261 * 8 * 3600),
])
def test_business_seconds_by_hand(start: datetime, end: datetime, zone: str, hours: WorkingHours, expected: float):
    assert business_seconds(start, end, zone, hours) == expected


instants = st.datetimes(min_value=datetime(2019, 1, 1), max_value=datetime(2031, 12, 31), timezones=st.just(timezone.utc))
hours_ = st.tuples(st.integers(0, 1438), st.integers(1, 1439), st.sets(st.integers(0, 6), min_size=1)).filter(
    lambda t: t[0] < t[1]).map(lambda t: WorkingHours(time(*divmod(t[0], 60)), time(*divmod(t[1], 60)), frozenset(t[2])))


@settings(max_examples=300, deadline=None)
@given(start=instants, span=st.timedeltas(timedelta(0), timedelta(days=1200)), zone=st.sampled_from(ZONES),
       hours=hours_)
def test_business_seconds_equals_the_day_by_day_count(start: datetime, span: timedelta, zone: str,
                                                      hours: WorkingHours):
    end = start + span
    note(f"{start=} {end=} {zone=} {hours=}")
    assert business_seconds(start, end, zone, hours) == pytest.approx(day_by_day(start, end, zone, hours), abs=1e-3)


@pytest.mark.parametrize("start, end", [
    (utc(2026, 11, 27, 15), datetime(9999, 12, 31, 23, 30, tzinfo=timezone.utc)),  # a forged reply date
    (datetime(1000, 1, 1, tzinfo=timezone.utc), utc(2026, 11, 30, 9)),  # a forged parent date
    (datetime(1, 1, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc)),
])
def test_a_forged_date_neither_fails_nor_counts_more_than_ten_years(start: datetime, end: datetime):
    worked = business_seconds(start, end, "Pacific/Kiritimati", NINE_TO_FIVE)  # UTC+14: the overflow side
    assert 0 < worked <= 3653 / 7 * 5 * 8 * 3600 + 8 * 3600
