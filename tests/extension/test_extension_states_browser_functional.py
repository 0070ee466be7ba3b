"""The extension in headless Chromium when the server says 429 or cannot be reached.

The extension talks to the real server through a small proxy of this test's own (only here, never
shipped): it forwards everything, except that it can answer one card request with 429 and a
Retry-After, and it can stop listening. Checked, in the Gmail fixture page and the side panel:

- 429: the badge says "busy, retrying" and the panel "Slowing down"; the service worker sends nothing
  to the server until Retry-After has passed, however often the page asks (the conversation is
  switched back and forth meanwhile), and the card arrives once it has;
- a mailbox that needs reconnecting: the options page and the panel say so, the panel with a link to
  the web app;
- unreachable: the badges say "server unreachable", the panel names the server it cannot reach, and
  the toolbar shows "!".
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.extension.test_extension_browser_functional import (
    ALICE, GMAIL, ORIGIN, badges, chromium_with_extension, mail, mail_site, service_worker, until,
    web_settings,  # noqa: F401  (a fixture)
)
from tests.web.conftest import Stack, account_id, connect, new_token
from tests.web.test_browser_functional import Page, open_tab
from tests.web.test_browser_functional import pytestmark as browser_marks
from tests.web.test_dashboard_functional import fold

pytestmark = browser_marks

RETRY_AFTER = 6  # seconds the proxy's 429 asks for
CARD = re.compile(r"^/api/v1/accounts/\d+/correspondents/")
DANA = "dana.o'neil&co@elsewhere.test"
NEWCOMER = "newcomer@later.test"
HOP_BY_HOP = {"connection", "content-length", "content-encoding", "transfer-encoding", "keep-alive", "host"}


@dataclass
class Proxy:
    """Forwards to the real server; `throttle_next_card` answers the next card GET with 429 itself."""

    upstream: str
    url: str = ""
    throttle_next_card: bool = False
    seen: list[tuple[float, str, str, int]] = field(default_factory=list)  # (loop time, method, path, status)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        now = asyncio.get_running_loop().time()
        if self.throttle_next_card and request.method == "GET" and CARD.match(request.path):
            self.throttle_next_card = False
            self.seen.append((now, request.method, request.path, 429))
            return web.json_response({"error": {"code": "rate_limited", "message": "wait"}}, status=429, headers={
                "Retry-After": str(RETRY_AFTER), "Access-Control-Allow-Origin": ORIGIN,
                "Access-Control-Expose-Headers": "Retry-After", "Vary": "Origin"})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with aiohttp.ClientSession() as client, client.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=await request.read(),
                allow_redirects=False) as answer:
            body = await answer.read()
            self.seen.append((now, request.method, request.path, answer.status))
            return web.Response(status=answer.status, body=body, headers={
                k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP})

    def after(self, moment: float) -> list[tuple[float, str, str, int]]:
        return [s for s in self.seen if s[0] > moment]


@asynccontextmanager
async def proxy_to(upstream: str) -> AsyncIterator[tuple[Proxy, web.AppRunner]]:
    proxy = Proxy(upstream)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proxy.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield proxy, runner
    finally:
        await runner.cleanup()


async def set_up(cdp: Any, server: str, token: str) -> Page:
    """The options page, as a user: the server's URL and the token, Save; its answer must be 'Connected'."""
    options = await open_tab(cdp)
    assert await options.goto(f"{ORIGIN}/options.html") == f"{ORIGIN}/options.html"
    await options.evaluate(f"document.getElementById('server').value = {server!r}")
    await options.evaluate("document.getElementById('token').focus()")
    await options.send("Input.insertText", {"text": token})
    await options.click("#save")
    answer = await until(lambda: options.evaluate(
        "(r => r.querySelector('.ok, .problem') && r.innerText)(document.getElementById('result'))"), "Save")
    assert answer.startswith(f"Connected as {ALICE}"), answer
    return options


async def badge_of(page: Page, address: str) -> str | None:
    return next((b["text"] for b in await badges(page) if b["email"] == address and b["text"] not in (None, "…")),
                None)


async def switch_to(page: Page, thread: str) -> None:
    """`thread` shown anew (through another URL): the content script asks again for what it does not hold
    (its answers are kept per URL, transient failures excepted)."""
    await page.evaluate("document.querySelectorAll('span.gD').forEach(e => e.setAttribute('data-old', ''))")
    await page.evaluate("location.hash = '#inbox/thread-x'")
    await page.evaluate(f"location.hash = '#inbox/{thread}'")
    await until(lambda: page.evaluate("!!document.querySelector('span.gD:not([data-old])')"), f"{thread} anew")


async def panel_state(panel: Page) -> Any:
    return await panel.evaluate("(p => p && [p.dataset.state, p.textContent])"
                                "(document.querySelector('#panel .problem'))")


@pytest.mark.slow
async def test_429_and_an_unreachable_server_in_the_page_and_the_panel(stack: Stack, tmp_path: Path) -> None:
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE, "UTC")
        alice = await account_id(stack, ALICE)
        history, _ = mail(alice, datetime.now(UTC))
        await fold(stack, alice, ALICE, history, tz="UTC")
        token = await new_token(browser, "chromium")

    loop = asyncio.get_running_loop()
    async with proxy_to(stack.web.url) as (proxy, runner), mail_site(tmp_path) as port, \
            chromium_with_extension(port) as cdp:
        worker = await service_worker(cdp)
        await set_up(cdp, proxy.url, token)
        gmail = await open_tab(cdp)
        await gmail.send("DOM.enable")
        assert await gmail.goto(GMAIL) == GMAIL

        async def first_thread_painted() -> list[dict[str, Any]] | None:
            found = await badges(gmail)
            return found if found and all(b["text"] not in (None, "…") for b in found) else None

        painted = await until(first_thread_painted, "the first conversation's badges")
        assert "busy, retrying" not in {b["text"] for b in painted}, painted
        panel = await open_tab(cdp)
        await panel.goto(f"{ORIGIN}/panel.html")

        # (429) The next card request is answered 429, Retry-After: 6 (Dana's, in thread-2).
        proxy.throttle_next_card = True
        await gmail.evaluate("location.hash = '#inbox/thread-2'")
        assert await until(lambda: badge_of(gmail, DANA), "Dana's badge") == "busy, retrying"
        [(throttled_at, _, path, status)] = [s for s in proxy.seen if s[3] == 429]
        assert status == 429 and path.endswith(f"/correspondents/{DANA}"), path  # request.path is decoded
        state = await until(lambda: panel_state(panel), "the panel's rate-limited state")
        assert state[0] == "rate_limited" and "tries again in about" in state[1], state

        # Asked again and again while it waits: nothing reaches the server before Retry-After has passed.
        asked_while_paused = 0

        async def newcomer_answered() -> str | None:
            nonlocal asked_while_paused
            await switch_to(gmail, "thread-3")
            text = await until(lambda: badge_of(gmail, NEWCOMER), "the newcomer's badge")
            if text == "busy, retrying":
                asked_while_paused += 1
                return None
            return text

        assert await until(newcomer_answered, "the card after Retry-After", timeout=RETRY_AFTER + 20) == "no history"
        assert asked_while_paused >= 1
        later = proxy.after(throttled_at)
        assert later, "nothing reached the server after the pause"
        assert min(t for t, *_ in later) >= throttled_at + RETRY_AFTER, (throttled_at, later)

        # (needs reconnecting) The mailbox's grant is gone: the options page and the panel say so, with a link.
        db = await stack.db()
        await db.execute("UPDATE mail_accounts SET status = 'reauth_required' WHERE id = $1", alice)
        await db.close()
        options = await set_up(cdp, proxy.url, token)  # set up again: forgets the cached /me and cards
        assert f"{ALICE} (test, reauth_required) needs reconnecting on the server" in \
            await options.evaluate("document.getElementById('result').innerText")
        await switch_to(gmail, "thread-2")
        assert await until(lambda: badge_of(gmail, DANA), "Dana's badge") != "busy, retrying"
        notice = await until(lambda: panel.evaluate(
            "(p => p && [p.textContent, p.querySelector('a')?.href])"
            "(document.querySelector('#panel [data-state=needs_reconnect]'))"), "the panel's reconnect notice")
        assert notice == [f"Your mailbox {ALICE} needs reconnecting: InboxLens cannot read new mail. "
                          "Reconnect it on the InboxLens server", f"{proxy.url}/"], notice

        # (unreachable) The proxy stops listening; set up again (which empties the card cache), then look.
        await set_up(cdp, proxy.url, token)
        await runner.cleanup()
        await switch_to(gmail, "thread-3")  # another URL than the last: the content script asks anew
        assert await until(lambda: badge_of(gmail, NEWCOMER), "the badge, server gone") == "server unreachable"
        state = await until(lambda: panel_state(panel), "the panel's unreachable state")
        assert state[0] == "unreachable" and proxy.url in state[1], state
        assert await until(lambda: worker.evaluate("chrome.action.getBadgeText({})"), "the toolbar") == "!"

        # The worker complained only as the browser does about answers it could not load (the 429, the refusals).
        assert all("Failed to load resource" in c for c in worker.complaints()), worker.complaints()
        assert loop.time() > throttled_at + RETRY_AFTER
