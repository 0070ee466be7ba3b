"""Requests nobody is logged in for are cheap and bounded (issue 12.7), and request edges (12.8).

Anonymous /login hits leave only short-lived rows and get 429 past the per-address burst;
a logged-in user is not limited by it; a chunked API body over 16 KiB is refused on its
bytes; ids are ASCII digits only; pages and /readyz answer what they should.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, AsyncIterator

import pytest

from tests.web.conftest import Stack, api, connect, new_token, page

BURST = 5


@pytest.fixture
def web_settings() -> dict[str, Any]:
    return {"anonymous_burst": BURST, "anonymous_requests_per_minute": 1}


async def test_anonymous_logins_leave_no_long_lived_rows_and_get_429_past_the_limit(stack: Stack) -> None:
    answers = []
    async with stack.browser() as browser:
        for _ in range(BURST + 3):
            browser.cookie_jar.clear()  # each hit a new visitor, as a flood would be
            answers.append((await browser.get("/login/test", allow_redirects=False)).status)
        spoofed = await browser.get("/login/test", allow_redirects=False, headers={"X-Forwarded-For": "203.0.113.9"})
    assert answers == [303] * BURST + [429] * 3
    assert spoofed.status == 429 and int(spoofed.headers["Retry-After"]) >= 1  # no trusted proxy: header ignored
    db = await stack.db()
    try:
        lives = await db.fetch("SELECT expires_at - created_at AS life FROM web_sessions")
    finally:
        await db.close()
    assert len(lives) == BURST and all(r["life"] <= timedelta(minutes=10, seconds=5) for r in lives)


async def test_a_logged_in_user_is_not_held_back_by_the_anonymous_limit(stack: Stack) -> None:
    async with stack.browser() as browser:
        await connect(stack, browser, "dana@example.test")  # two anonymous requests: connect, callback
        for _ in range(BURST + 2):
            assert (await browser.get("/")).status == 200
        db = await stack.db()
        try:
            [life] = await db.fetch("SELECT expires_at - created_at AS life FROM web_sessions")
        finally:
            await db.close()
    assert life["life"] > timedelta(days=13)  # logged in: the configured 14 days


async def chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 10_000):
        yield b"x" * 10_000


async def test_a_chunked_body_over_the_limit_is_refused_on_its_bytes(stack: Stack) -> None:
    async with stack.browser() as browser:
        await connect(stack, browser, "erin@example.test")
        token = await new_token(browser)
        response = await browser.get("/api/v1/me", data=chunks(200_000), headers={"Authorization": f"Bearer {token}"})
        body = await response.json()
        small = await browser.get("/api/v1/me", data=chunks(10_000), headers={"Authorization": f"Bearer {token}"})
    assert (response.status, body["error"]["code"]) == (413, "payload_too_large")
    assert small.status == 200


async def test_ids_are_ascii_digits_only(stack: Stack) -> None:
    async with stack.browser() as browser:
        await connect(stack, browser, "fay@example.test")  # account 1
        token = await new_token(browser)
        ok, _ = await api(browser, "GET", "/accounts/1/owed", token)
        arabic, body = await api(browser, "GET", "/accounts/\u0661/owed", token)
        dashboard = await browser.get("/dashboard/\u0661")
    assert ok.status == 200 and (arabic.status, body["error"]["code"]) == (404, "not_found")
    assert dashboard.status == 404


async def test_unknown_pages_and_methods_get_styled_pages(stack: Stack) -> None:
    async with stack.browser() as browser:
        missing = await browser.get("/no/such/page")
        wrong = await browser.put("/settings")
        missing_text = await page(missing)
    assert missing.status == 404 and "There is no page here." in missing_text and "<header>" in missing_text
    assert wrong.status == 405 and "Allow" in wrong.headers and "<header>" in await page(wrong)


async def test_readyz_reports_each_part(stack: Stack) -> None:
    async with stack.browser() as browser:
        ready = await browser.get("/readyz")
        assert (ready.status, await ready.json()) == (200, {"status": "ready", "checks": {
            "vault": "ok", "database": "ok", "metrics": "ok"}})
        await stack.vault.stop()
        down = await browser.get("/readyz")
        body = await down.json()
    assert down.status == 503 and body["status"] == "unready"
    assert body["checks"]["vault"].startswith("down (") and body["checks"]["database"] == "ok"
