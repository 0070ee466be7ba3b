"""Rendering the dashboard from values: what the live tests cannot easily bring about."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from inboxlens.metrics.model import Pending
from inboxlens.web.pages.render import CSS
from inboxlens.web.pages.dashboard import PENDING_SHOWN, Insights, Mailbox, render

NOW = datetime(2024, 7, 1, 12, 0, tzinfo=timezone.utc)


def mailbox(**changes: Any) -> Mailbox:
    account = {"id": 7, "address": "me@example.test", "status": "active", "last_sync_at": None,
               "messages_seen": 0, "failures": 0, "last_error": None, **changes}
    return Mailbox(account, ZoneInfo("Europe/Paris"), date(2024, 7, 1), None)


def test_a_metrics_store_that_does_not_answer_still_shows_the_sync_state() -> None:
    text = render([mailbox(last_sync_at=datetime(2024, 7, 1, 8, 40, tzinfo=timezone.utc), messages_seen=12345)],
                  NOW, 90, None)
    assert "The metrics store did not answer" in text and "<svg" not in text
    assert "<dt>Last sync</dt><dd>2024-07-01 10:40 CEST (3 h 20 min ago)</dd>" in text
    assert "<dt>Messages seen</dt><dd>12,345</dd>" in text


def test_a_missing_token_offers_reconnect_and_errors_are_escaped() -> None:
    text = render([mailbox(status="missing token", failures=3, last_error="<Oops&Co>")], NOW, 90, 7)
    assert '<a class="button" data-tz href="/reconnect/7">Reconnect</a>' in text
    assert "failed 3 time(s) in a row: &lt;Oops&amp;Co&gt;; InboxLens tries again by itself" in text
    assert '<a href="/dashboard">All mailboxes</a>' in text


def test_an_address_is_escaped() -> None:
    text = render([mailbox(address="a<b>&\"c\"@example.test")], NOW, 30, None)
    assert "a&lt;b&gt;&amp;&quot;c&quot;@example.test" in text and "<b>" not in text


def test_long_owed_and_awaiting_lists_show_the_twenty_waiting_longest() -> None:
    owed = [Pending(f"{i:032x}", f"p{i}@example.test", NOW - timedelta(days=20 - i / 2), timedelta(days=20 - i / 2))
            for i in range(PENDING_SHOWN + 5)]
    box = Mailbox(mailbox().account, ZoneInfo("Europe/Paris"), date(2024, 7, 1), Insights([], [], [], owed, owed[:3]))
    text = render([box], NOW, 30, None)
    shown = [line.split("</td>")[0] for line in text.split('<tr data-msg="')[1:]]
    assert len(shown) == PENDING_SHOWN + 3
    assert shown[0].endswith("p0@example.test") and shown[PENDING_SHOWN - 1].endswith(f"p{PENDING_SHOWN - 1}@example.test")
    assert text.count('<p class="more">… and 5 more, newer than these.</p>') == 1


def test_before_the_first_sync_empty_lists_say_not_synced_yet() -> None:
    empty = Insights([], [], [], [], [])
    fresh = Mailbox(mailbox().account, ZoneInfo("Europe/Paris"), date(2024, 7, 1), empty)
    synced = Mailbox(mailbox(last_sync_at=NOW).account, ZoneInfo("Europe/Paris"), date(2024, 7, 1), empty)
    assert "Not synced yet" in render([fresh], NOW, 30, None) and "You owe nobody" not in render([fresh], NOW, 30, None)
    assert "You owe nobody a reply" in render([synced], NOW, 30, None)


def _luminance(hex_colour: str) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(int(hex_colour[i:i + 2], 16) / 255) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_header_links_meet_wcag_aa_contrast_on_the_navy_header() -> None:
    background = re.search(r"header\{[^}]*background:(#[0-9a-f]{6})", CSS)
    links = re.search(r"header a,header span\{color:(#[0-9a-f]{6})\}", CSS)
    assert background and links, "the header's link colour must be set, not the browser's default blue"
    light, dark = sorted((_luminance(links[1]), _luminance(background[1])), reverse=True)
    assert (light + 0.05) / (dark + 0.05) >= 4.5


def test_a_mailbox_page_names_its_address_once_and_the_overview_heads_each_section() -> None:
    own = render([mailbox()], NOW, 30, 7)  # the page's title (h1) names it already
    assert "<h2>" not in own and own.count("me@example.test") == 0
    overview = render([mailbox(), mailbox(id=8, address="you@example.test")], NOW, 30, None)
    assert overview.count('<h2><a href="/dashboard/7">me@example.test</a></h2>') == 1
    assert '<h2><a href="/dashboard/8">you@example.test</a></h2>' in overview


def test_with_no_provider_the_home_page_says_how_to_add_one() -> None:
    from inboxlens.web.pages.render import welcome
    text = welcome([], "https://inbox.example.test")
    assert "<code>https://inbox.example.test/oauth/google/callback</code>" in text
    assert "docs/providers.md" in text and "inboxlens doctor" in text
    assert "/connect/" not in text
    assert '<a class="button" data-tz href="/connect/corp">Connect Corp</a>' in welcome([("corp", "Corp")], "")


def test_sender_checks_that_are_off_are_said_with_how_to_turn_them_on() -> None:
    off = render([mailbox(provider="corp", authenticity_off=True)], NOW, 30, None)
    assert "<dt>Sender checks</dt>" in off and "providers.corp.trusted_authserv_ids" in off
    assert "Sender checks" not in render([mailbox(provider="google", authenticity_off=False)], NOW, 30, None)
