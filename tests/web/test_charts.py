"""The SVG chart builders: well-formed, proportional, escaped, deterministic, CSP-safe."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest

from inboxlens.metrics.model import DayRollup, PeriodRollup, Quantiles
from inboxlens.web.pages import charts

SVG = "{http://www.w3.org/2000/svg}"
FIRST, LAST = date(2024, 3, 1), date(2024, 3, 30)


def day(on: date, received: int, sent: int, yours: float | None = None) -> DayRollup:
    return DayRollup(on, received, sent, 1, (0,) * 24, (0,) * 24,
                     Quantiles(1, yours, yours) if yours is not None else Quantiles())


def week(monday: date, yours: float | None, theirs: float | None) -> PeriodRollup:
    def q(median: float | None) -> Quantiles:
        return Quantiles(3, median, median) if median is not None else Quantiles()
    return PeriodRollup(monday, 1, 1, 1, (0,) * 24, (0,) * 24, (0,) * 7, (0,) * 7, q(yours), q(theirs))


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    return root


def bars(root: ET.Element, kind: str) -> dict[str, tuple[float, float]]:
    """slot → (value, drawn height) of the bars of one series."""
    return {r.get("data-slot", ""): (float(r.get("data-value", "")), float(r.get("height", "")))
            for r in root.iter(f"{SVG}rect") if kind in (r.get("class") or "").split()}


def test_volume_chart_draws_each_day_in_proportion() -> None:
    root = parse(charts.volume_chart([day(FIRST, 8, 2), day(date(2024, 3, 15), 4, 0), day(LAST, 1, 3)],
                                     FIRST, LAST))
    received, sent = bars(root, "received"), bars(root, "sent")
    assert {k: v for k, (v, _) in received.items()} == {"2024-03-01": 8, "2024-03-15": 4, "2024-03-30": 1}
    assert {k: v for k, (v, _) in sent.items()} == {"2024-03-01": 2, "2024-03-30": 3}  # no bar for a zero
    per_message = received["2024-03-01"][1] / 8
    assert per_message > 0
    for value, height in [*received.values(), *sent.values()]:
        assert height == pytest.approx(value * per_message, abs=0.01)
    # The axis goes up to 10 (the next 1-2-5 step above 8): 8 messages fill 80 % of the plot.
    assert received["2024-03-01"][1] == pytest.approx(0.8 * charts.PLOT_H, abs=0.01)
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "tick"] == ["0", "5", "10"]


def test_volume_chart_says_what_it_shows() -> None:
    root = parse(charts.volume_chart([day(FIRST, 8, 2), day(LAST, 1, 3)], FIRST, LAST))
    title = root.findtext(f"{SVG}title")
    assert title == root.get("aria-label") == "Messages per day, 2024-03-01 to 2024-03-30"
    assert root.findtext(f"{SVG}desc") == "9 received and 5 sent in 30 days."
    tips = [r.findtext(f"{SVG}title") for r in root.iter(f"{SVG}rect") if r.get("data-slot") == "2024-03-30"]
    assert tips == ["2024-03-30: received 1", "2024-03-30: sent 3"]
    legend = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "legend"]
    assert legend == ["Received", "Sent"]
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "slot"]
    assert labels[0] == "1 Mar" and len(labels) <= charts.MAX_X_LABELS


def test_days_outside_the_range_are_not_drawn() -> None:
    root = parse(charts.volume_chart([day(FIRST - timedelta(days=1), 5, 5), day(FIRST, 1, 0)], FIRST, FIRST))
    assert set(bars(root, "bar")) == {"2024-03-01"}


@pytest.mark.parametrize("days", [[], [day(FIRST, 0, 0)]])
def test_an_empty_chart_says_so(days: list[DayRollup]) -> None:
    root = parse(charts.volume_chart(days, FIRST, LAST))
    assert bars(root, "bar") == {}
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "empty"] == ["No messages in this period."]
    assert root.findtext(f"{SVG}desc") == "0 received and 0 sent in 30 days."


def test_reply_chart_shows_weekly_medians_as_durations() -> None:
    mondays = [date(2024, 2, 26) + timedelta(weeks=n) for n in range(5)]
    weeks = [week(mondays[0], 2 * 3600, 4 * 86400), week(mondays[2], 1800, None)]
    root = parse(charts.reply_chart(weeks, date(2024, 2, 28), mondays[-1]))  # any day of the first week
    yours, theirs = bars(root, "yours"), bars(root, "theirs")
    assert yours == {"week of 2024-02-26": (7200, pytest.approx(7200 / (4 * 86400) * charts.PLOT_H, abs=0.01)),
                     "week of 2024-03-11": (1800, pytest.approx(1800 / (4 * 86400) * charts.PLOT_H, abs=0.01))}
    assert theirs == {"week of 2024-02-26": (4 * 86400, charts.PLOT_H)}
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "tick"] == ["0 s", "2 d", "4 d"]
    tips = [r.findtext(f"{SVG}title") for r in root.iter(f"{SVG}rect") if "yours" in (r.get("class") or "")]
    assert tips == ["week of 2024-02-26: your replies 2 h", "week of 2024-03-11: your replies 30 min"]
    assert root.findtext(f"{SVG}desc") == "You replied 6 times and were replied to 3 times in 5 weeks."


def test_one_long_outlier_keeps_the_other_weeks_readable_and_is_labelled() -> None:
    mondays = [date(2024, 2, 26) + timedelta(weeks=n) for n in range(6)]
    medians = [3600, 2 * 3600, 1800, 6.4 * 86400, 5400, 2700]  # one 6.4-day week among hours
    root = parse(charts.reply_chart([week(m, v, None) for m, v in zip(mondays, medians)], mondays[0], mondays[-1]))
    drawn = bars(root, "yours")
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "tick"] == ["0 s", "1 h", "2 h"]
    assert drawn["week of 2024-02-26"][1] == pytest.approx(charts.PLOT_H / 2, abs=0.01)  # 1 h of a 2 h scale
    assert drawn["week of 2024-03-18"] == (6.4 * 86400, charts.PLOT_H)  # the outlier: to the top ...
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "outlier"]
    assert labels == ["6 d 9 h"]  # ... and its value written on it


def test_without_a_real_outlier_the_scale_covers_every_bar() -> None:
    mondays = [date(2024, 2, 26) + timedelta(weeks=n) for n in range(4)]
    root = parse(charts.reply_chart([week(m, v, None) for m, v in zip(mondays, [3600, 7200, 5400, 4 * 3600])],
                                    mondays[0], mondays[-1]))
    assert max(h for _, h in bars(root, "yours").values()) == pytest.approx(charts.PLOT_H)
    assert not [t for t in root.iter(f"{SVG}text") if t.get("class") == "outlier"]


def test_reply_chart_without_replies() -> None:
    root = parse(charts.reply_chart([week(date(2024, 3, 4), None, None)], date(2024, 3, 4), date(2024, 3, 4)))
    assert bars(root, "bar") == {}
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "empty"] == ["No replies in this period."]


def test_text_is_escaped() -> None:
    evil = '<script>alert("x")</script> & \'more\''
    svg = charts.bar_chart(evil, evil, [charts.Slot(evil, evil)], [charts.Series("sent", evil, (1.0,))],
                           charts.count_axis(1), evil)
    assert "<script>" not in svg
    root = parse(svg)
    assert root.findtext(f"{SVG}title") == root.get("aria-label") == evil
    assert [r.get("data-slot") for r in root.iter(f"{SVG}rect") if r.get("data-slot")] == [evil]


def test_no_inline_style_no_script_no_outside_reference() -> None:
    svg = charts.volume_chart([day(FIRST + timedelta(days=n), n, n % 3) for n in range(30)], FIRST, LAST)
    for element in parse(svg).iter():
        assert element.tag.split("}")[1] not in ("script", "style", "image", "use", "a", "foreignObject")
        assert "style" not in element.attrib
        assert not any(name.endswith("href") for name in element.attrib)


def test_same_data_same_bytes() -> None:
    days = [day(FIRST + timedelta(days=n), n * 7 % 11, n % 4) for n in range(30)]
    assert charts.volume_chart(days, FIRST, LAST) == charts.volume_chart(list(reversed(days)), FIRST, LAST)


@pytest.mark.parametrize("peak, top, ticks", [(0, 1, (0, 1)), (1, 1, (0, 1)), (2, 2, (0, 1, 2)), (3, 5, (0, 5)),
                                              (8, 10, (0, 5, 10)), (11, 20, (0, 10, 20)), (51, 100, (0, 50, 100))])
def test_count_axis_rounds_up_to_1_2_5(peak: float, top: int, ticks: tuple[float, ...]) -> None:
    axis = charts.count_axis(peak)
    assert (axis.top, axis.ticks) == (top, ticks)


def test_duration_axis_covers_the_longest_median() -> None:
    assert charts.duration_axis(45).top == 60
    assert charts.duration_axis(3 * 3600).top == 4 * 3600
    assert charts.duration_axis(90 * 86400).top >= 90 * 86400


@pytest.mark.parametrize("seconds, said", [(0, "0 s"), (59.9, "59 s"), (60, "1 min"), (3599, "59 min"),
                                           (3600, "1 h"), (12000, "3 h 20 min"), (86400, "1 d"),
                                           (2 * 86400 + 4 * 3600 + 59, "2 d 4 h"), (-5, "0 s")])
def test_human_duration(seconds: float, said: str) -> None:
    assert charts.human_duration(seconds) == said
