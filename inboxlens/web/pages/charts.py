"""Charts as inline SVG, drawn on the server: messages per day, and reply times per week.

Pure functions from rollups to an SVG string. No script and no ``style`` attribute (the
page's CSP, ``style-src 'self'``, refuses inline styles; presentation attributes such as
``fill`` are not styles and are allowed), nothing loaded from anywhere. Every text is
escaped, and coordinates are rounded to two decimals, so the same data always gives the
same bytes. Each chart names itself in a ``<title>`` and an ``aria-label`` and sums up
its data in a ``<desc>``; every bar carries its exact value in a ``<title>`` (a tooltip)
and in ``data-value``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from html import escape
from typing import Callable, Sequence

from inboxlens.metrics.model import DayRollup, PeriodRollup

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 30, 26  # margins: y labels, -, legend, x labels
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
MAX_X_LABELS = 7
INK, GRID = "#4a5263", "#dde1e7"
COLOURS = {"received": "#3b5bdb", "sent": "#f08c00", "yours": "#2f9e44", "theirs": "#ae3ec9"}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Tops of the reply-time axis, in seconds: each half is a round duration too.
DURATION_TOPS = (60, 600, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 12 * 3600, 86400, 2 * 86400, 4 * 86400,
                 8 * 86400, 14 * 86400, 28 * 86400, 56 * 86400)
OUTLIER_RATIO = 4.0  # a bar this many times the next one is an outlier ...
MIN_BARS_FOR_OUTLIERS = 4  # ... when there are enough bars for "the rest" to mean something


@dataclass(frozen=True)
class Slot:
    """One position on the x axis: its full name (in tooltips) and its axis label."""

    name: str
    short: str


@dataclass(frozen=True)
class Series:
    key: str  # "received", "sent", "yours", "theirs": the bars' class and colour
    label: str  # in the legend and tooltips
    values: tuple[float | None, ...]  # one per slot; None or 0 draws no bar


@dataclass(frozen=True)
class Axis:
    top: float  # the value at the top of the plot
    ticks: tuple[float, ...]
    fmt: Callable[[float], str]


def human_duration(seconds: float) -> str:
    """Like "45 s", "12 min", "3 h 20 min", "2 d 4 h": two units at most, rounded down."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total} s"
    minutes, hours, days = total // 60 % 60, total // 3600 % 24, total // 86400
    if total < 3600:
        return f"{total // 60} min"
    if total < 86400:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{days} d {hours} h" if hours else f"{days} d"


def count(value: float) -> str:
    return f"{round(value):,}"


def count_axis(peak: float) -> Axis:
    """From 0 to the smallest 1, 2 or 5 × 10ⁿ at or above the peak."""
    top = 1
    while top < peak:
        top = top * 5 // 2 if str(top)[0] == "2" else top * 2
    half = top / 2
    return Axis(top, (0, half, top) if half == int(half) else (0, top), count)


def readable_peak(values: Sequence[float | None]) -> float:
    """The largest value, unless a few outliers dwarf the rest: then the largest of the rest.

    A bar more than OUTLIER_RATIO times the next is left out of the scale (drawn to the top
    and labelled with its value), so one six-day median does not flatten every other week.
    """
    drawn = sorted(v for v in values if v)
    while len(drawn) >= MIN_BARS_FOR_OUTLIERS and drawn[-1] > OUTLIER_RATIO * drawn[-2]:
        drawn.pop()
    return drawn[-1] if drawn else 0.0


def duration_axis(peak: float) -> Axis:
    top = next((t for t in DURATION_TOPS if t >= peak), DURATION_TOPS[-1])
    while top < peak:
        top += DURATION_TOPS[-1]
    return Axis(top, (0, top / 2, top), human_duration)


def volume_chart(days: Sequence[DayRollup], first: date, last: date) -> str:
    """Messages received and sent on each local day from first to last."""
    by_day = {d.day: d for d in days}
    dates = _dates(first, last)
    received = tuple(float(by_day[d].received) if d in by_day else None for d in dates)
    sent = tuple(float(by_day[d].sent) if d in by_day else None for d in dates)
    total_in, total_out = sum(v or 0 for v in received), sum(v or 0 for v in sent)
    title = f"Messages per day, {first.isoformat()} to {last.isoformat()}"
    summary = f"{count(total_in)} received and {count(total_out)} sent in {len(dates)} days."
    return bar_chart(title, summary, [Slot(d.isoformat(), _short(d)) for d in dates],
                     [Series("received", "Received", received), Series("sent", "Sent", sent)],
                     count_axis(max([v or 0 for v in received + sent], default=0)), "No messages in this period.")


def reply_chart(weeks: Sequence[PeriodRollup], first: date, last: date) -> str:
    """Median reply time, yours and theirs, of each ISO week whose Monday is from first to last."""
    by_week = {w.start: w for w in weeks}
    mondays = _dates(first - timedelta(days=first.weekday()), last)[::7]
    yours = tuple(_median(by_week.get(m), "yours") for m in mondays)
    theirs = tuple(_median(by_week.get(m), "theirs") for m in mondays)
    mine, their = (sum(getattr(w, k).count for w in weeks if w.start in mondays) for k in ("yours", "theirs"))
    title = f"Median reply time per week, weeks of {first.isoformat()} to {last.isoformat()}"
    summary = f"You replied {count(mine)} times and were replied to {count(their)} times in {len(mondays)} weeks."
    return bar_chart(title, summary, [Slot(f"week of {m.isoformat()}", _short(m)) for m in mondays],
                     [Series("yours", "Your replies", yours), Series("theirs", "Their replies", theirs)],
                     duration_axis(readable_peak(yours + theirs)), "No replies in this period.")


def bar_chart(title: str, summary: str, slots: Sequence[Slot], series: Sequence[Series], axis: Axis,
              empty: str) -> str:
    """Grouped bars, one group per slot, one bar per series; `empty` is said when there is no bar."""
    bars = [_bar(i, j, slot, s, axis, len(series), len(slots))
            for j, s in enumerate(series) for i, slot in enumerate(slots) if s.values[i]]
    body = "".join(bars) if bars else _note(empty)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'role="img" aria-label="{escape(title)}" font-family="system-ui, sans-serif" font-size="11">'
            f"<title>{escape(title)}</title><desc>{escape(summary)}</desc>"
            f"{_grid(axis)}{_legend(series)}{_x_labels(slots)}{body}</svg>")


def _bar(i: int, j: int, slot: Slot, series: Series, axis: Axis, per_slot: int, slots: int) -> str:
    value = series.values[i] or 0.0
    width = PLOT_W / slots * 0.8 / per_slot
    x = LEFT + PLOT_W / slots * (i + 0.1) + j * width
    height = min(value, axis.top) / axis.top * PLOT_H
    tip = f"{slot.name}: {series.label.lower()} {axis.fmt(value)}"
    rect = (f'<rect class="bar {series.key}" x="{_n(x)}" y="{_n(TOP + PLOT_H - height)}" width="{_n(width)}" '
            f'height="{_n(height)}" fill="{COLOURS[series.key]}" data-slot="{escape(slot.name)}" '
            f'data-value="{_n(value)}"><title>{escape(tip)}</title></rect>')
    if value <= axis.top:
        return rect
    # Off the scale: drawn to the top, its value written on it.
    return rect + (f'<text class="outlier" x="{_n(x + width / 2)}" y="{_n(TOP + 10)}" text-anchor="middle" '
                   f'fill="#ffffff" font-size="10">{escape(axis.fmt(value))}</text>')


def _grid(axis: Axis) -> str:
    lines = []
    for tick in axis.ticks:
        y = _n(TOP + PLOT_H - tick / axis.top * PLOT_H)
        lines.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="{GRID}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{y}" dy="4" text-anchor="end" fill="{INK}">'
                     f"{escape(axis.fmt(tick))}</text>")
    return "".join(lines)


def _legend(series: Sequence[Series]) -> str:
    parts = []
    for j, s in enumerate(series):
        x = LEFT + j * 130
        parts.append(f'<rect x="{x}" y="8" width="12" height="12" fill="{COLOURS[s.key]}"/>'
                     f'<text class="legend" x="{x + 18}" y="18" fill="{INK}">{escape(s.label)}</text>')
    return "".join(parts)


def _x_labels(slots: Sequence[Slot]) -> str:
    every = max(1, -(-len(slots) // MAX_X_LABELS))
    return "".join(f'<text class="slot" x="{_n(LEFT + PLOT_W / len(slots) * (i + 0.5))}" y="{HEIGHT - 8}" '
                   f'text-anchor="middle" fill="{INK}">{escape(slot.short)}</text>'
                   for i, slot in enumerate(slots) if i % every == 0)


def _note(text: str) -> str:
    return (f'<text class="empty" x="{LEFT + PLOT_W // 2}" y="{TOP + PLOT_H // 2}" text-anchor="middle" '
            f'fill="{INK}" font-size="14">{escape(text)}</text>')


def _dates(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _short(day: date) -> str:
    return f"{day.day} {MONTHS[day.month - 1]}"


def _median(week: PeriodRollup | None, side: str) -> float | None:
    return getattr(week, side).median if week is not None else None


def _n(value: float) -> str:
    """Two decimals at most, no trailing zeros: the same number is always the same text."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
