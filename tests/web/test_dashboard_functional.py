"""The dashboard through the real stack: web process, vault, PostgreSQL, metrics folded from raw rows."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from inboxlens.metrics.model import AccountRef, RawRow
from inboxlens.metrics.postgres.store import PgMetricsStore
from tests.web.conftest import Stack, account_id, connect, csrf_of, page, raw

ALICE, BOB = "alice@dash.test", "bob@dash.test"
FRIEND, COLLEAGUE = "friend@friends.test", "colleague@corp.test"
ODD = "dana.o'neil&co@elsewhere.test"  # a legal address that must be escaped
BOBS_FRIEND = "only-bob-knows@secret.test"
TZ = "Asia/Tokyo"
SVG = "{http://www.w3.org/2000/svg}"


def alice_mail(account: int, now: datetime) -> list[RawRow]:
    """Ten letters from a friend, each answered in 2 h, and their last one (a reply after 10 h) not yet;
    three unanswered to a colleague (5, 20 and 40 days ago); one unanswered from ODD (2 days ago)."""
    rows = []
    for n in range(1, 11):
        asked = now - timedelta(days=n, hours=3)
        rows += [raw(account, ALICE, f"<f{n}@friends.test>", asked, received_from=FRIEND),
                 raw(account, ALICE, f"<a{n}@dash.test>", asked + timedelta(hours=2), sent_to=FRIEND,
                     in_reply_to=f"<f{n}@friends.test>")]
    answered = now - timedelta(days=2, hours=1)  # our reply to f2
    rows.append(raw(account, ALICE, "<f-last@friends.test>", answered + timedelta(hours=10), received_from=FRIEND,
                    in_reply_to="<a2@dash.test>"))
    rows += [raw(account, ALICE, f"<c{d}@dash.test>", now - timedelta(days=d), sent_to=COLLEAGUE) for d in (5, 20, 40)]
    rows.append(raw(account, ALICE, "<odd@elsewhere.test>", now - timedelta(days=2), received_from=ODD))
    return rows


async def fold(stack: Stack, account: int, own: str, rows: list[RawRow], tz: str = TZ) -> None:
    pool = await asyncpg.create_pool(stack.dsn, min_size=1, max_size=2)
    try:
        store = PgMetricsStore(pool)
        await store.write_raw(rows)
        await store.aggregate(AccountRef(account, own, tz))
    finally:
        await pool.close()


async def sql(stack: Stack, query: str, *args: object) -> None:
    db = await stack.db()
    try:
        await db.execute(query, *args)
    finally:
        await db.close()


def section(text: str, account: int) -> str:
    match = re.search(rf'<section class="mailbox" id="account-{account}" data-account="{account}">(.*?)</section>',
                      text)
    assert match, f"no section for account {account}"
    return match.group(1)


def parts(section_text: str) -> dict[str, str]:
    """The section's text under each <h3> heading."""
    pieces = re.split(r"<h3>(.*?)</h3>", section_text)
    return {"": pieces[0], **dict(zip(pieces[1::2], pieces[2::2]))}


def bars(svg: str, kind: str) -> dict[str, float]:
    root = ET.fromstring(svg)
    return {r.get("data-slot", ""): float(r.get("data-value", "")) for r in root.iter(f"{SVG}rect")
            if kind in (r.get("class") or "").split()}


def svg_in(text: str) -> str:
    [svg] = re.findall(r"<svg .*?</svg>", text)
    return svg


def local_day(at: datetime) -> date:
    return at.astimezone(ZoneInfo(TZ)).date()


def week_of(at: datetime) -> str:
    day = local_day(at)
    return f"week of {(day - timedelta(days=day.weekday())).isoformat()}"


def per_day(rows: list[RawRow], direction: str, since: date) -> dict[str, float]:
    days = Counter(local_day(r.sent_at).isoformat() for r in rows if r.direction == direction)
    return {d: float(n) for d, n in days.items() if d >= since.isoformat()}


async def test_the_dashboard_shows_sync_state_charts_correspondents_and_owed_replies(stack: Stack) -> None:
    now = datetime.now(timezone.utc)
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE, TZ)
        alice = await account_id(stack, ALICE)
        rows = alice_mail(alice, now)
        await fold(stack, alice, ALICE, rows)
        synced = datetime(2024, 5, 1, 23, 30, tzinfo=timezone.utc)  # 08:30 the next day in Tokyo
        await sql(stack, "UPDATE mail_accounts SET last_sync_at = $2 WHERE id = $1", alice, synced)
        await sql(stack, "INSERT INTO harvest_state (account_id, messages_seen) VALUES ($1, 1234)", alice)
        response = await browser.get("/dashboard")
        text = await page(response)
    assert response.status == 200, text
    assert "<title>Dashboard · InboxLens</title>" in text
    assert '<link rel="stylesheet" href="/static/dashboard.css">' in text
    found = parts(section(text, alice))

    # Sync state, in the mailbox's time zone.
    assert "<dt>Status</dt><dd>Active</dd>" in found[""]
    assert "<dt>Last sync</dt><dd>2024-05-02 08:30 JST (" in found[""]
    assert "<dt>Messages seen</dt><dd>1,234</dd>" in found[""]
    assert "Reconnect" not in found[""]
    today = local_day(now)
    assert re.search(r'data-total="received">(\d+)<', found[""]).group(1) == str(sum(r.direction == "received"
                                                                                       for r in rows))

    # Messages per day: every day's bars carry that day's counts.
    volume = svg_in(found["Messages per day"])
    since = today - timedelta(days=89)
    assert bars(volume, "received") == per_day(rows, "received", since)
    assert bars(volume, "sent") == per_day(rows, "sent", since)

    # Reply times per week: ours are all 2 h, theirs the one 10 h reply.
    replies = svg_in(found["Reply times"])
    ours = [r for r in rows if r.direction == "sent" and r.in_reply_to]
    assert bars(replies, "yours") == {week_of(r.sent_at): 7200.0 for r in ours}
    [theirs] = [r for r in rows if r.direction == "received" and r.in_reply_to]
    assert bars(replies, "theirs") == {week_of(theirs.sent_at): 36000.0}
    assert "<title>" in replies and "10 h" in replies

    # Top correspondents, strongest first, escaped.
    top = re.findall(r'<tr data-correspondent="([^"]+)"><td>', found["Top correspondents"])
    assert top == [FRIEND, COLLEAGUE, "dana.o&#x27;neil&amp;co@elsewhere.test"]
    assert ODD not in text

    # Owed replies (oldest first: ODD 2 days ago, the friend's 10 h reply ~1.6 days ago) and awaiting.
    owed = re.findall(r'<tr data-msg="[0-9a-f]+"><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td>',
                      found["You owe a reply"])
    assert [who for who, _, _ in owed] == ["dana.o&#x27;neil&amp;co@elsewhere.test", FRIEND]
    assert owed[0][2].startswith("2 d") and owed[1][2].startswith("1 d 1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d JST", owed[0][1])
    awaiting = re.findall(r'<tr data-msg="[0-9a-f]+"><td>([^<]+)</td>', found["Waiting for a reply"])
    answered = {r.in_reply_to[0] for r in rows if r.direction == "received" and r.in_reply_to}
    unanswered = sorted((r for r in rows if r.direction == "sent" and r.message_id not in answered
                         and now - timedelta(days=30) <= r.sent_at <= now - timedelta(days=3)), key=lambda r: r.sent_at)
    assert awaiting == [r.to_addresses[0] for r in unanswered]
    assert awaiting[0] == COLLEAGUE and awaiting.count(COLLEAGUE) == 2  # 20 and 5 days ago, not 40 (too old)


async def test_a_shorter_window_and_one_mailbox_alone(stack: Stack) -> None:
    now = datetime.now(timezone.utc)
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE, TZ)
        alice = await account_id(stack, ALICE)
        rows = alice_mail(alice, now)
        await fold(stack, alice, ALICE, rows)
        text = await page(await browser.get(f"/dashboard/{alice}?days=30"))
        assert (await browser.get("/dashboard?days=7")).status == 200  # an unknown window shows the default
        for bad in ("/dashboard/999999", "/dashboard/x", "/dashboard/%2F..%2F"):
            assert (await browser.get(bad)).status == 404, bad
    assert f"<title>{ALICE} · InboxLens</title>" in text and '<a href="/dashboard">All mailboxes</a>' in text
    volume = svg_in(parts(section(text, alice))["Messages per day"])
    since = local_day(now) - timedelta(days=29)
    assert bars(volume, "sent") == per_day(rows, "sent", since)
    assert local_day(now - timedelta(days=40)).isoformat() not in bars(volume, "sent")
    assert f'<a href="/dashboard/{alice}?days=30" aria-current="page">30 days</a>' in text


async def test_another_users_mailbox_is_never_shown(stack: Stack) -> None:
    now = datetime.now(timezone.utc)
    async with stack.browser() as alice_browser, stack.browser() as bob_browser:
        await connect(stack, alice_browser, ALICE, TZ)
        await connect(stack, bob_browser, BOB, "UTC")
        alice, bob = await account_id(stack, ALICE), await account_id(stack, BOB)
        await fold(stack, alice, ALICE, alice_mail(alice, now))
        await fold(stack, bob, BOB, [raw(bob, BOB, "<s@secret.test>", now - timedelta(days=3),
                                         received_from=BOBS_FRIEND)], "UTC")
        bobs = await page(await bob_browser.get("/dashboard"))
        alices = await page(await alice_browser.get("/dashboard"))
        peek = await bob_browser.get(f"/dashboard/{alice}")
        peek_text = await page(peek)
    assert BOBS_FRIEND in section(bobs, bob) and 'data-account="' + str(alice) + '"' not in bobs
    assert ALICE not in bobs and FRIEND not in bobs and COLLEAGUE not in bobs
    assert BOB not in alices and BOBS_FRIEND not in alices
    assert peek.status == 404 and ALICE not in peek_text and FRIEND not in peek_text


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/1", "/dashboard?days=30"])
async def test_logged_out_visitors_are_asked_to_log_in(stack: Stack, path: str) -> None:
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE, TZ)
    async with stack.browser() as stranger:
        response = await stranger.get(path, allow_redirects=False)
        text = await page(response)
    assert response.status == 401 and "Please log in first." in text
    assert ALICE not in text and "<section" not in text


async def test_a_mailbox_that_needs_reconnecting_offers_it(stack: Stack) -> None:
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE, TZ)
        alice = await account_id(stack, ALICE)
        await sql(stack, "UPDATE mail_accounts SET status = 'reauth_required' WHERE id = $1", alice)
        await sql(stack, "INSERT INTO harvest_state (account_id, failures, last_error, messages_seen) "
                         "VALUES ($1, 2, 'reauth_required', 10)", alice)
        for path in ("/dashboard", f"/dashboard/{alice}"):
            found = parts(section(await page(await browser.get(path)), alice))[""]
            assert ('<strong class="warn">Reconnect needed</strong> '
                    f'<a class="button" data-tz href="/reconnect/{alice}">Reconnect</a>') in found, path
            assert "failed 2 time(s) in a row: the provider asked for a new consent" in found


async def test_empty_states_read_well(stack: Stack) -> None:
    async with stack.browser() as browser:
        text = await connect(stack, browser, ALICE, TZ)
        alice = await account_id(stack, ALICE)
        found = parts(section(await page(await browser.get("/dashboard")), alice))
        assert "<dt>Last sync</dt><dd>Not yet: the first sync is pending.</dd>" in found[""]
        assert "<dt>Messages seen</dt><dd>0</dd>" in found[""]
        assert "No messages in this period." in found["Messages per day"]
        assert "No replies in this period." in found["Reply times"]
        assert "No correspondents yet." in found["Top correspondents"]
        # Before the first sync an empty list means nothing yet, not "nobody waits" (issue 13.7).
        assert "Not synced yet" in found["You owe a reply"] and "You owe nobody" not in found["You owe a reply"]
        assert "Not synced yet" in found["Waiting for a reply"]

        # Disconnected, the user is still logged in, with nothing to show.
        gone = await browser.post(f"/accounts/{alice}/disconnect", data={"csrf_token": csrf_of(text)})
        assert gone.status == 200
        empty = await page(await browser.get("/dashboard"))
    assert "You have no mailbox connected yet." in empty and '<a href="/">Connect one</a>' in empty
    assert "<section" not in empty


async def test_the_stylesheet_is_served_under_the_csp(stack: Stack) -> None:
    async with aiohttp.ClientSession(stack.web.url) as client:
        response = await client.get("/static/dashboard.css")
        css = await response.text()
    assert response.status == 200 and response.content_type == "text/css" and "svg.chart" in css
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
