"""The API's rate limit, per token and per session, with a small configured rate."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import Stack, api, connect, new_token

BURST = 3


@pytest.fixture
def web_settings() -> dict[str, Any]:
    return {"api_requests_per_minute": 2, "api_burst": BURST}


async def test_a_token_past_its_burst_gets_429_with_retry_after(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, "alice@example.test")
        first, second = await new_token(browser, "one"), await new_token(browser, "two")
        statuses = [(await api(browser, "GET", "/me", first))[0].status for _ in range(BURST)]
        limited, body = await api(browser, "GET", "/me", first)
        other, _ = await api(browser, "GET", "/me", second)  # a bucket of its own
        session, _ = await api(browser, "GET", "/me")  # and the dashboard's session another
        document, _ = await api(browser, "GET", "/openapi.json", first)  # needs no token: not limited
    assert statuses == [200] * BURST
    assert (limited.status, body["error"]["code"]) == (429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 30  # one request refills in 30 s at 2 a minute
    assert (other.status, session.status, document.status) == (200, 200, 200)


async def test_the_session_has_its_own_limit(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, "alice@example.test")
        statuses = [(await api(browser, "GET", "/me"))[0].status for _ in range(BURST + 1)]
    assert statuses == [200] * BURST + [429]
