"""SIGTERM: web stops accepting, lets in-flight requests finish within web.shutdown_seconds,
and exits 0 when all did, 75 (EX_TEMPFAIL) when it had to cut some off (issue 11.5)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest

from tests.web.conftest import Stack

WAIT = 10.0


async def _until(condition: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _callback_in_flight(stack: Stack, browser: aiohttp.ClientSession) -> asyncio.Task[int]:
    """A sign-in callback waiting on the provider's (delayed) token endpoint."""
    stack.oauth.login = "gus@example.test"
    start = await browser.get("/connect/test", allow_redirects=False)
    callback = (await browser.get(start.headers["Location"], allow_redirects=False)).headers["Location"]

    async def finish() -> int:
        return (await browser.get(callback, allow_redirects=False)).status

    task = asyncio.create_task(finish())
    await _until(lambda: len(stack.oauth.token_requests) == 1, "the token request")
    return task


async def _refuses_connections(stack: Stack) -> bool:
    try:
        async with aiohttp.ClientSession() as fresh:
            await fresh.get(stack.web.url + "/healthz")
    except aiohttp.ClientConnectionError:
        return True
    return False


async def test_sigterm_drains_the_request_in_flight_and_exits_0(stack: Stack) -> None:
    stack.oauth.delay = 1.0
    async with stack.browser() as browser:
        in_flight = await _callback_in_flight(stack, browser)
        assert stack.web.process is not None
        stack.web.process.send_signal(signal.SIGTERM)
        await stack.web.wait_for_log("stopping: no new connections; 1 request(s) in flight get 10 s")
        assert await _refuses_connections(stack)
        assert await asyncio.wait_for(in_flight, WAIT) == 303  # it finished: connected, redirected home
    assert await asyncio.wait_for(stack.web.process.wait(), WAIT) == 0
    assert "every request finished" in stack.web.log()


@pytest.fixture
def web_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"shutdown_seconds": 0.5 if "cut_off" in request.node.name else 10.0}


async def test_a_request_past_the_deadline_is_cut_off_and_the_exit_says_so(stack: Stack) -> None:
    stack.oauth.delay = 5.0
    async with stack.browser() as browser:
        in_flight = await _callback_in_flight(stack, browser)
        assert stack.web.process is not None
        stack.web.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(stack.web.process.wait(), WAIT) == 75
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(in_flight, WAIT)
    assert "1 request(s) were cut off" in stack.web.log()
