"""The token hand-off, end to end in headless Chromium: Connect in the extension's options, allow in the
server's window (chrome.identity.launchWebAuthFlow), and the service worker holds a working token that
never appeared in a URL, a page or a log.

The window shares the browser profile, so a user logged in to the server sees the approval at once; one
who is not logs in inside the window (the test provider approves at once) and lands on the approval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.extension.test_extension_browser_functional import (
    ORIGIN, chromium_with_extension, service_worker, until, web_settings,  # noqa: F401  (a fixture)
)
from tests.web.conftest import Stack, api, connect
from tests.web.test_browser_functional import Page, open_tab
from tests.web.test_browser_functional import pytestmark as browser_marks

pytestmark = browser_marks

ALICE = "alice@lens.test"


async def window_at(cdp: Any, prefix: str) -> Page:
    """The page target (the hand-off window) once its URL starts with `prefix`, attached."""
    async def found() -> str | None:
        targets = (await cdp.send("Target.getTargets"))["targetInfos"]
        return next((t["targetId"] for t in targets if t["type"] == "page" and t["url"].startswith(prefix)), None)

    target = await until(found, f"a window at {prefix}")
    page = Page(cdp, (await cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"])
    for domain in ("Page", "Runtime", "Log", "Network"):
        await page.send(f"{domain}.enable")
    return page


@pytest.mark.slow
async def test_connect_hands_a_token_to_the_service_worker(stack: Stack) -> None:
    async with stack.browser() as http:
        await connect(stack, http, ALICE)  # Alice exists on the server (she logs in inside the window)
    stack.oauth.login = ALICE
    async with chromium_with_extension(9) as cdp:  # no mail site here: port 9 is never used
        worker = await service_worker(cdp)
        options = await open_tab(cdp)
        assert await options.goto(f"{ORIGIN}/options.html") == f"{ORIGIN}/options.html"
        await options.evaluate(f"document.getElementById('server').value = {stack.web.url!r}")
        await options.click("#handoff")

        window = await window_at(cdp, f"{stack.web.url}/extension/connect")
        login = await until(lambda: window.evaluate(
            "document.readyState === 'complete' && (document.querySelector('a[href^=\"/login/\"]') ? 'login' "
            ": document.getElementById('allow') ? 'allow' : null)"), "the hand-off window's page")
        if login == "login":  # not logged in to the server in this profile yet: log in inside the window
            await window.click("a[href^='/login/']")
            # Loaded, not only parsed: a click measured before the stylesheet applies lands beside the button.
            await until(lambda: window.evaluate(
                "document.readyState === 'complete' && !!document.getElementById('allow')"), "the approval after login")
        text = await window.evaluate("document.querySelector('main').innerText")
        assert "kedfbmhakcljommjfnkjpndeifbjneie" in text and "Allow" in text, text
        await window.click("#allow")

        result = await until(lambda: options.evaluate(
            "(r => r.querySelector('.ok strong, .problem strong') && r.innerText)(document.getElementById('result'))"
            ".replace(/^Waiting.*/, '') || null"), "the options page's answer")
        assert result.startswith(f"Connected as {ALICE}"), result
        token = await worker.evaluate("chrome.storage.local.get(['server', 'token']).then(s => [s.server, s.token])")
        assert token[0] == stack.web.url
        async with aiohttp.ClientSession(stack.web.url) as client:
            response, me = await api(client, "GET", "/me", token[1])
        assert response.status == 200 and me["user"]["email"] == ALICE

        # The token went nowhere but the worker: not in any URL the browser asked for, not in a page, not logged.
        urls = [e["params"]["request"]["url"] for e in cdp.events if e["method"] == "Network.requestWillBeSent"]
        assert any(urlsplit(u).path == "/api/v1/extension/token" for u in urls), urls
        assert not [u for u in urls if token[1] in u]
        assert await options.evaluate(f"document.body.innerText.includes({token[1]!r})") is False
        assert token[1] not in stack.web.log()
        assert worker.complaints() == [] and options.complaints() == []
