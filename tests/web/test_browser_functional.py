"""Onboarding in a real browser: headless Chromium clicks connect → consent → dashboard once.

The browser is Debian's chromium (`apt-get install chromium`), driven over the Chrome DevTools
protocol by the small client below, on aiohttp's websocket (no Playwright). Only stable CDP
domains are used (Target, Page, Runtime, Log, Network, Input), so the test keeps working as
Debian moves chromium to a new major version, and nothing is downloaded: Playwright would add
a 160 MB driver pinned to one Chromium revision that Debian's does not follow.

Every wait is bounded (STEP seconds) and reads from the event log, never sleeps. Screenshots of
the two pages are left in the test's tmp_path for a human to look at.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.web.conftest import Stack

CHROMIUM = Path("/usr/bin/chromium")
CAROL = "carol@example.test"
TIME_ZONE = "Asia/Tokyo"  # the browser's, through TZ: the page's JS puts it on the connect link
STEP = 20.0  # seconds: the bound on any single wait
FLAGS = (
    # As root, in a container, with no network but PyPI/Debian/npm.
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-default-browser-check", "--disable-dev-shm-usage", "--window-size=1200,800",
    "--remote-debugging-port=0",  # any free port; chromium prints the websocket URL on stderr
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the stack runs its children as other users: needs root"),
    # In CI a missing browser is a failure (see _require_chromium), not a quiet skip.
    pytest.mark.skipif(not CHROMIUM.exists() and not _in_ci(),
                       reason=f"{CHROMIUM} is missing: apt-get install chromium"),
]


class DevToolsError(Exception):
    pass


class DevTools:
    """A minimal DevTools protocol client: one browser websocket, flat sessions, an event log.

    Events are kept in order; ``wait`` looks at those received since a ``mark`` first, so an
    event that arrives before anyone waits for it is not missed.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._new_event = asyncio.Event()
        self._closed: Exception | None = None
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                if "id" in data:
                    reply = self._replies.pop(data["id"], None)
                    if reply is not None and not reply.done():
                        if "error" in data:
                            reply.set_exception(DevToolsError(data["error"]))
                        else:
                            reply.set_result(data.get("result", {}))
                else:
                    self.events.append(data)
                    self._new_event.set()
        finally:
            self._closed = DevToolsError("the DevTools connection closed")
            for reply in self._replies.values():
                if not reply.done():
                    reply.set_exception(self._closed)
            self._new_event.set()

    async def close(self) -> None:
        self._reader.cancel()
        with suppress(asyncio.CancelledError):
            await self._reader

    async def send(self, method: str, params: dict[str, Any] | None = None, *,
                   session: str | None = None) -> dict[str, Any]:
        if self._closed is not None:
            raise self._closed
        number = next(self._ids)
        reply = self._replies[number] = asyncio.get_running_loop().create_future()
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_json(message)
        try:
            return await asyncio.wait_for(reply, STEP)
        finally:
            self._replies.pop(number, None)

    def mark(self) -> int:
        return len(self.events)

    async def wait(self, method: str, since: int, session: str,
                   match: Callable[[dict[str, Any]], bool] = lambda params: True) -> dict[str, Any]:
        """The first event `method` of `session` at or after `since` whose params `match`."""
        seen = since
        async with asyncio.timeout(STEP):
            while True:
                for event in self.events[seen:]:
                    if event["method"] == method and event.get("sessionId") == session and match(event["params"]):
                        return event["params"]
                seen = len(self.events)
                if self._closed is not None:
                    raise self._closed
                self._new_event.clear()
                await self._new_event.wait()


class Page:
    """One tab, attached in flat mode."""

    def __init__(self, cdp: DevTools, session: str) -> None:
        self.cdp, self.session = cdp, session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.cdp.send(method, params, session=self.session)

    async def evaluate(self, expression: str) -> Any:
        answer = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise DevToolsError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def navigated(self, since: int, loader: str | None = None) -> str:
        """Wait for the next main-frame navigation after `since` (by `loader`) to commit and load; its URL.

        Redirects commit nothing, so after a click this is the end of the redirect chain.
        """
        frame = (await self.cdp.wait("Page.frameNavigated", since, self.session,
                                     lambda p: "parentId" not in p["frame"]
                                     and loader in (None, p["frame"]["loaderId"])))["frame"]
        await self.cdp.wait("Page.lifecycleEvent", since, self.session,
                            lambda p: p["name"] == "load" and p["loaderId"] == frame["loaderId"])
        return str(frame["url"])

    async def goto(self, url: str) -> str:
        since = self.cdp.mark()
        answer = await self.send("Page.navigate", {"url": url})
        assert "errorText" not in answer, answer
        return await self.navigated(since, answer["loaderId"])

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element, as a person would."""
        box = await self.evaluate(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            if (!el) return null;
            el.scrollIntoView({{block: "center"}});
            const r = el.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
            return {{x, y, hit: el.contains(document.elementFromPoint(x, y))}};
        }})()""")
        assert box is not None, f"nothing matches {selector}"
        assert box["hit"], f"{selector} is covered by another element"
        mouse = {"x": box["x"], "y": box["y"], "button": "left", "clickCount": 1}
        await self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": box["x"], "y": box["y"]})
        await self.send("Input.dispatchMouseEvent", {"type": "mousePressed", **mouse})
        await self.send("Input.dispatchMouseEvent", {"type": "mouseReleased", **mouse})

    async def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode((await self.send("Page.captureScreenshot", {"format": "png"}))["data"]))

    def complaints(self, since: int = 0) -> list[str]:
        """Console messages, uncaught errors and browser log entries (CSP violations among them)."""
        found = []
        for event in self.cdp.events[since:]:
            params = event["params"]
            if event.get("sessionId") != self.session:
                continue
            if event["method"] == "Runtime.consoleAPICalled":
                found.append(f"console.{params['type']}: "
                             + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif event["method"] == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(f"page error: {details.get('exception', {}).get('description', details['text'])}")
            elif event["method"] == "Log.entryAdded":
                entry = params["entry"]
                found.append(f"{entry['source']} {entry['level']}: {entry['text']} ({entry.get('url', '')})")
        return found

    def documents(self, since: int) -> list[str]:
        """The URLs the tab requested for its main frame since `since`, redirects included."""
        return [e["params"]["request"]["url"] for e in self.cdp.events[since:]
                if e["method"] == "Network.requestWillBeSent" and e.get("sessionId") == self.session
                and e["params"].get("type") == "Document"]


def _require_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing or not executable; CI must install the Debian package chromium")


async def _devtools_url(stream: asyncio.StreamReader, lines: list[str]) -> str:
    prefix = "DevTools listening on "
    while True:
        line = (await stream.readline()).decode(errors="replace")
        if not line:
            raise DevToolsError("chromium exited before it listened:\n" + "".join(lines))
        lines.append(line)
        if line.startswith(prefix):
            return line[len(prefix):].strip()


async def _drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():  # so that a chatty browser never blocks on a full pipe
        lines.append(line.decode(errors="replace"))


@asynccontextmanager
async def chromium(time_zone: str, *extra: str, headless: str = "--headless") -> AsyncIterator[DevTools]:
    """A headless chromium with a fresh profile, as root, killed (its whole process group) at the end.

    ``extra`` flags follow ours (an extension to load, host mappings); ``--headless=new`` is the
    mode that loads extensions. On a failure the tail of its stderr goes to ours, for pytest to show.
    """
    _require_chromium()
    with tempfile.TemporaryDirectory(prefix="inboxlens-chromium-", ignore_cleanup_errors=True) as home:
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "TZ": time_zone, "LANG": "C.UTF-8"}
        process = await asyncio.create_subprocess_exec(
            str(CHROMIUM), headless, *FLAGS[1:], f"--user-data-dir={home}/profile", *extra, "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=env, start_new_session=True)
        assert process.stderr is not None
        lines: list[str] = []
        drain: asyncio.Task[None] | None = None
        try:
            url = await asyncio.wait_for(_devtools_url(process.stderr, lines), STEP)
            drain = asyncio.create_task(_drain(process.stderr, lines))
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
                    cdp = DevTools(ws)
                    try:
                        yield cdp
                    finally:
                        await cdp.close()
        except BaseException:
            print("chromium's stderr, last lines:\n" + "".join(lines[-30:]), file=sys.stderr)
            raise
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the browser and its zygotes and renderers
            await asyncio.wait_for(process.wait(), STEP)
            if drain is not None:
                await asyncio.wait_for(drain, STEP)


async def _account_rows(stack: Stack) -> list[dict[str, Any]]:
    db = await stack.db()
    try:
        return [dict(r) for r in await db.fetch("SELECT a.address, a.time_zone, a.status, u.email AS user_email "
                                                "FROM mail_accounts a JOIN users u ON u.id = a.user_id")]
    finally:
        await db.close()


async def open_tab(cdp: Any) -> Page:
    """A blank tab, attached, with the events the tests watch (console, network, lifecycle)."""
    tab = await cdp.send("Target.createTarget", {"url": "about:blank"})
    page = Page(cdp, (await cdp.send("Target.attachToTarget", {"targetId": tab["targetId"],
                                                               "flatten": True}))["sessionId"])
    for domain in ("Page", "Runtime", "Log", "Network"):
        await page.send(f"{domain}.enable")
    await page.send("Page.setLifecycleEventsEnabled", {"enabled": True})
    return page


@pytest.mark.slow
async def test_a_browser_clicks_through_connect_consent_and_dashboard(stack: Stack, tmp_path: Path) -> None:
    home_url = stack.web.url + "/"
    stack.oauth.login = CAROL  # the provider approves at once, as Carol
    async with chromium(TIME_ZONE) as cdp:
        page = await open_tab(cdp)
        start = cdp.mark()

        # Home: the welcome page, its script has put the browser's time zone on the connect link.
        assert await page.goto(home_url) == home_url
        assert await page.evaluate("document.querySelector('h1').textContent") == "Welcome"
        link = await page.evaluate("""[...document.querySelectorAll("a[data-tz]")]
                                      .map(a => [a.textContent, a.getAttribute("href")])""")
        assert link == [["Connect Test Mail", "/connect/test?tz=Asia%2FTokyo"]]
        await page.screenshot(tmp_path / "home.png")

        # Connect → the provider's consent (approved at once) → callback → dashboard.
        clicked = cdp.mark()
        await page.click("a[data-tz]")
        landed = await page.navigated(clicked)
        text = await page.evaluate("document.body.innerText")
        assert landed == home_url, f"landed on {landed}:\n{text}\n{stack.web.log()[-3000:]}"
        chain = [(urlsplit(u).netloc, urlsplit(u).path) for u in page.documents(clicked)]
        web, provider = urlsplit(stack.web.url).netloc, urlsplit(stack.oauth.authorize_url).netloc
        assert chain == [(web, "/connect/test"), (provider, "/authorize"), (web, "/oauth/test/callback"), (web, "/")]
        assert page.documents(clicked)[0].endswith("/connect/test?tz=Asia%2FTokyo")

        # The dashboard: Carol's mailbox, in her browser's time zone, with a working-looking Disconnect.
        assert await page.evaluate("document.title") == "Your mailboxes · InboxLens"
        assert await page.evaluate("document.querySelector('h1').textContent") == "Your mailboxes"
        rows = await page.evaluate("""[...document.querySelectorAll("tr[data-account]")].map(tr => [
            tr.cells[0].textContent, tr.querySelector("input[name=time_zone]").value,
            [...tr.querySelectorAll("button, a.button")].map(b => b.textContent)])""")
        assert rows == [[CAROL, TIME_ZONE, ["Save", "Disconnect…"]]], text
        assert await page.evaluate("document.querySelector('header span').textContent") == CAROL
        disconnect = await page.evaluate("""(() => {
            const b = [...document.querySelectorAll("a.button")].find(b => b.textContent === "Disconnect…");
            const r = b.getBoundingClientRect(), style = getComputedStyle(b);
            return {visible: r.width > 0 && r.height > 0 && style.visibility === "visible",
                    form: b.getAttribute("href"), css: style.backgroundColor};
        })()""")
        # it asks first (a page with the one form that disconnects), so a stray click deletes nothing
        assert disconnect["visible"] and disconnect["form"].endswith("/disconnect"), disconnect
        assert disconnect["css"] == "rgb(201, 42, 42)", "the stylesheet did not apply"  # button.danger
        await page.screenshot(tmp_path / "dashboard.png")

        # Nothing was logged on the way: no console message, no script error, no CSP violation.
        assert page.complaints(start) == []

        # ... and this capture does see a CSP violation: an inline script is refused and reported.
        canary = cdp.mark()
        ran = await page.evaluate("""(() => {
            const s = document.createElement("script");
            s.textContent = "window.inlineRan = true";
            document.head.append(s);
            return window.inlineRan === true;
        })()""")
        assert ran is False
        await cdp.wait("Log.entryAdded", canary, page.session,
                       lambda p: "Content Security Policy" in p["entry"]["text"])
        # Looked at again, after more round trips: a late message (a favicon fetch, say) shows too.
        [refused] = page.complaints(start)
        assert "Content Security Policy" in refused, refused

    [row] = await _account_rows(stack)
    assert row == {"address": CAROL, "time_zone": TIME_ZONE, "status": "active", "user_email": CAROL}
