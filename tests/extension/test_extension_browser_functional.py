"""The browser extension, loaded unpacked in headless Chromium, against the real server.

The Gmail fixture page (extension/test/fixtures/gmail.html) is served over HTTPS as
https://mail.google.com/ from a local server with a throwaway self-signed certificate (Chromium
maps the name to it and is told to accept the certificate). The extension is set up through
its options page as a user would, then:

0. before it is set up, the badges say so; the host-permission prompt (which headless Chromium
   cannot answer) is never granted, and everything below works on CORS alone;
1. a badge appears beside each sender, inside a closed shadow root (read through the DevTools
   protocol's pierce), with the words the card from GET /api/v1/.../correspondents/{address}
   means, and the warning sign where the card flags the address; the same on the Outlook
   fixture (extension/test/fixtures/outlook.html, as https://outlook.office.com/);
2. only the service worker talks to the server: the page never requests its origin;
3. a display name holding HTML stays text;
4. an address with no history says so;
5. after the token is revoked on /settings, the next lookup shows "token revoked" in the badges
   and in the side panel (opened as a tab), and the toolbar badge turns from the owed count to "!";
6. the service worker, the options page and the panel log no error and no CSP violation;
7. a card is asked for at most once per address within its TTL, reloads and the other site
   included, and never for the mailbox's own address;
8. a click on a badge opens the real side panel (chrome.sidePanel.open) with that sender's card; the
   card's reply times carry their 90th percentile and each owed or awaiting message links to Gmail's
   rfc822msgid: search, where the server's card has p90 and message_id.
429, an unreachable server and a mailbox that needs reconnecting: test_extension_states_browser_functional.py;
the token hand-off: test_extension_handoff_browser_functional.py.

Screenshots of the page with its badges and of the panel go to docs/img/ for the README
(with INBOXLENS_SCREENSHOTS=1).
Every wait is bounded (STEP seconds, from the browser test's DevTools client).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import ssl
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import pytest
from aiohttp import web

from tests.web.conftest import Stack, account_id, api, connect, csrf_of, new_token, raw
from tests.web.conftest import page as page_text
from tests.web.test_browser_functional import STEP, DevTools, Page, chromium, open_tab
from tests.web.test_browser_functional import pytestmark as browser_marks
from tests.web.test_dashboard_functional import fold

pytestmark = browser_marks

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "extension"
FIXTURES = EXTENSION / "test" / "fixtures"
# The README's pictures: refreshed with INBOXLENS_SCREENSHOTS=1 (else a run would rewrite tracked files).
SCREENSHOTS = ROOT / "docs" / "img" if os.environ.get("INBOXLENS_SCREENSHOTS") else Path(tempfile.mkdtemp())
EXTENSION_ID = "kedfbmhakcljommjfnkjpndeifbjneie"
ORIGIN = f"chrome-extension://{EXTENSION_ID}"

ALICE = "alice@lens.test"  # the fixture page's mailbox (its title names it)
BOB = "bob@friends.test"  # a thread: we answered in 2 h, he in 8 days, we owe him
COLLEAGUE = "colleague@corp.test"  # one mail from us, unanswered
CEO = "ceo@corp.test"  # six mails passing DKIM/SPF/DMARC, then one failing DKIM and DMARC: flagged
DANA = "dana.o'neil&co@elsewhere.test"  # thread-2: her display name holds an <img onerror>
NOBODY = "nobody@unknown.test"  # on the page, never in the mailbox
NEWCOMER = "newcomer@later.test"  # thread-3, opened only after the token is revoked
SENDERS = [BOB, CEO, COLLEAGUE, NOBODY]  # the first conversation's distinct senders
GMAIL = "https://mail.google.com/mail/u/0/"
OUTLOOK = "https://outlook.office.com/mail/"

T = TypeVar("T")


@pytest.fixture
def web_settings() -> dict[str, Any]:
    return {"cors_origins": [ORIGIN]}


# ---- what the badge says (lib/text.js badgeText, in Python: the expected words from the API's card) ----

def _round(x: float) -> int:
    return math.floor(x + 0.5)  # JavaScript's Math.round


def duration(seconds: float) -> str:
    if seconds < 3600:
        return f"~{max(1, _round(seconds / 60))} min"
    if seconds < 48 * 3600:
        return f"~{_round(seconds / 3600)} h"
    return f"~{_round(seconds / 86400)} days"


def badge_words(status: int, body: Any) -> str:
    if status == 404:
        return "no history"
    assert status == 200, body
    card = body["card"]
    theirs = card["replies"]["theirs"]["median"]
    messages = card["relationship"]["received"] + card["relationship"]["sent"]
    parts = [(f"{messages} msg" + ("" if messages == 1 else "s")) if theirs is None
             else f"replies in {duration(theirs)}"]
    if card["owed_total"] > 0:
        parts.append(f"you owe {card['owed_total']}")
    return " · ".join(parts)


URI_COMPONENT_SAFE = "-_.!~*'()"  # what JavaScript's encodeURIComponent leaves as it is


def gmail_link(message_id: str | None) -> str | None:
    """lib/text.js messageLink for Gmail's first account (a pair of angle brackets around the id dropped)."""
    bare = re.sub(r"^<(.*)>$", r"\1", (message_id or "").strip())
    return f"https://mail.google.com/mail/u/0/#search/rfc822msgid:{quote(bare, safe=URI_COMPONENT_SAFE)}" \
        if bare else None


def mail(account: int, now: datetime) -> tuple[list[Any], list[Any]]:
    """Two folds: the history, then one message from CEO that fails checks corp.test usually passes."""
    first = [raw(account, ALICE, "<b1@friends.test>", now - timedelta(days=10), received_from=BOB),
             raw(account, ALICE, "<a1@lens.test>", now - timedelta(days=10) + timedelta(hours=2), sent_to=BOB,
                 in_reply_to="<b1@friends.test>"),
             raw(account, ALICE, "<b2@friends.test>", now - timedelta(days=2), received_from=BOB,
                 in_reply_to="<a1@lens.test>"),
             raw(account, ALICE, "<c1@lens.test>", now - timedelta(days=5), sent_to=COLLEAGUE),
             raw(account, ALICE, "<d1@elsewhere.test>", now - timedelta(days=3), received_from=DANA)]
    first += [raw(account, ALICE, f"<ceo{n}@corp.test>", now - timedelta(days=20 - n), received_from=CEO)
              for n in range(6)]
    odd = dataclasses.replace(raw(account, ALICE, "<ceo-odd@corp.test>", now - timedelta(days=1), received_from=CEO),
                              dkim="fail", dmarc="fail")
    return first, [odd]


# ---- the mail site: the fixture page over HTTPS, with a throwaway certificate ----

@asynccontextmanager
async def mail_site(directory: Path) -> AsyncIterator[int]:
    """https://127.0.0.1:<port>/ serving gmail.html or outlook.html (by Host) at every path; its port."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=mail.google.com",
        "-addext", "subjectAltName=DNS:mail.google.com,DNS:outlook.office.com", "-keyout", str(key), "-out", str(cert),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, complaint = await asyncio.wait_for(openssl.communicate(), STEP)
    assert openssl.returncode == 0, complaint.decode(errors="replace")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    fixtures = {"mail.google.com": (FIXTURES / "gmail.html").read_bytes(),
                "outlook.office.com": (FIXTURES / "outlook.html").read_bytes()}

    async def serve(request: web.Request) -> web.Response:
        if request.path == "/favicon.ico":
            return web.Response(status=204)
        return web.Response(body=fixtures[request.host], content_type="text/html", charset="utf-8")

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def chromium_with_extension(port: int) -> AbstractAsyncContextManager[DevTools]:
    """Headless chromium, fresh profile, the unpacked extension loaded, the mail hosts mapped to `port`."""
    return chromium("UTC", f"--load-extension={EXTENSION}", "--ignore-certificate-errors",
                    f"--host-resolver-rules=MAP mail.google.com 127.0.0.1:{port}, "
                    f"MAP outlook.office.com 127.0.0.1:{port}",
                    "--remote-debugging-address=127.0.0.1", headless="--headless=new")


async def service_worker(cdp: DevTools) -> Page:
    """The extension's service worker, attached, with its console, log and network watched."""
    since = cdp.mark()
    await cdp.send("Target.setDiscoverTargets", {"discover": True})  # reports the existing targets too
    info = (await cdp.wait("Target.targetCreated", since, None,  # type: ignore[arg-type]
                           lambda p: p["targetInfo"]["type"] == "service_worker"
                           and p["targetInfo"]["url"] == f"{ORIGIN}/sw.js"))["targetInfo"]
    attached = await cdp.send("Target.attachToTarget", {"targetId": info["targetId"], "flatten": True})
    worker = Page(cdp, attached["sessionId"])
    for domain in ("Runtime", "Log", "Network"):
        await worker.send(f"{domain}.enable")
    return worker


async def side_panel(cdp: DevTools) -> Page:
    """The side panel chrome.sidePanel.open opened (not a tab of the test's), attached."""
    async def opened() -> str | None:
        targets = (await cdp.send("Target.getTargets"))["targetInfos"]
        return next((t["targetId"] for t in targets if t["url"] == f"{ORIGIN}/panel.html" and not t["attached"]),
                    None)

    target = await until(opened, "the side panel")
    page = Page(cdp, (await cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"])
    await page.send("Runtime.enable")
    return page


async def until(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = STEP) -> T:
    """`check()` until it gives something true, for at most `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen: {value!r}")
        await asyncio.sleep(0.05)


# ---- reading the page through closed shadow roots ----

def _attrs(node: dict[str, Any]) -> dict[str, str]:
    a = node.get("attributes", [])
    return dict(zip(a[::2], a[1::2]))


def _text(node: dict[str, Any]) -> str:
    if node.get("nodeType") == 3:
        return str(node.get("nodeValue", ""))
    return "".join(_text(c) for c in node.get("children", []))


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in [*node.get("shadowRoots", []), *node.get("children", []), *([node["contentDocument"]]
                                                                            if "contentDocument" in node else [])]:
        out += _walk(child)
    return out


def is_sender(node: dict[str, Any]) -> str | None:
    """The address of a sender element as the page shows it: Gmail's span.gD[email], Outlook's persona."""
    attrs = _attrs(node)
    if node.get("localName") == "span" and "gD" in attrs.get("class", "").split() and "email" in attrs:
        return attrs["email"]
    if attrs.get("aria-label", "").startswith("From:") or attrs.get("data-testid") == "SenderPersona":
        match = re.search(r"<([^<>]+)>", _text(node)) or re.search(r"(\S+@\S+)", attrs.get("title", ""))
        return match.group(1) if match else ""
    return None


async def badges(page: Page) -> list[dict[str, Any]]:
    """Each sender with the badge that follows it: its words and whether ⚠ shows."""
    document = (await page.send("DOM.getDocument", {"depth": -1, "pierce": True}))["root"]
    found = []
    for node in _walk(document):
        children = node.get("children", [])
        for sender, after in zip(children, [*children[1:], None]):
            email = is_sender(sender)
            if email is None:
                continue
            badge: dict[str, Any] = {"email": email, "text": None, "warn": None, "mode": None}
            if after is not None and _attrs(after).get("data-inboxlens") == "badge" and after.get("shadowRoots"):
                shadow = after["shadowRoots"][0]
                badge["mode"] = shadow.get("shadowRootType")
                for part in shadow.get("children", []):
                    if part.get("localName") == "button":
                        badge["text"] = _text(part)
                    elif _attrs(part).get("class") == "warn":
                        badge["warn"] = "hidden" not in _attrs(part)
            found.append(badge)
    return found


async def compose_lines(page: Page) -> list[str]:
    """The lines the extension wrote under a compose window, from its closed shadow root."""
    document = (await page.send("DOM.getDocument", {"depth": -1, "pierce": True}))["root"]
    return [_text(li) for node in _walk(document) if _attrs(node).get("data-inboxlens") == "compose"
            for root in node.get("shadowRoots", []) for li in _walk(root) if li.get("localName") == "li"]


def elements_named(document: dict[str, Any], name: str) -> int:
    return sum(1 for n in _walk(document) if n.get("localName") == name)


def card_requests(worker: Page, since: int = 0) -> Counter[str]:
    """Card requests the service worker made, by address (GETs: CORS preflights are the browser's)."""
    counts: Counter[str] = Counter()
    for e in worker.cdp.events[since:]:
        if e["method"] == "Network.requestWillBeSent" and e.get("sessionId") == worker.session \
                and e["params"]["request"]["method"] == "GET":
            match = re.search(r"/api/v1/accounts/\d+/correspondents/([^/?]+)$", e["params"]["request"]["url"])
            if match:
                counts[unquote(match.group(1))] += 1
    return counts


def requested(page: Page, since: int = 0) -> list[str]:
    return [e["params"]["request"]["url"] for e in page.cdp.events[since:]
            if e["method"] == "Network.requestWillBeSent" and e.get("sessionId") == page.session]


async def owed_total(stack: Stack, token: str, account: int) -> int:
    async with aiohttp.ClientSession(stack.web.url) as client:
        response, body = await api(client, "GET", f"/accounts/{account}/owed?limit=1", token)
        assert response.status == 200
        return int(body["total"])


@pytest.mark.slow
async def test_the_extension_in_gmail_against_the_server(stack: Stack, tmp_path: Path) -> None:
    # The server: Alice's mailbox folded, an API token made on /settings (as she would).
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE, "UTC")
        alice = await account_id(stack, ALICE)
        history, odd = mail(alice, datetime.now(UTC))
        await fold(stack, alice, ALICE, history, tz="UTC")
        await fold(stack, alice, ALICE, odd, tz="UTC")
        token = await new_token(browser, "chromium")
        async with aiohttp.ClientSession(stack.web.url) as client:
            expected = {}
            for address in [*SENDERS, DANA]:
                response, body = await api(client, "GET", f"/accounts/{alice}/correspondents/{address}", token)
                expected[address] = (badge_words(response.status, body),
                                     response.status == 200 and any(f["correspondent"] == address
                                                                    for f in body["card"]["flags"]))
        assert expected[NOBODY] == ("no history", False)
        assert expected[CEO][1] is True, "the fold did not flag the odd message from the CEO"
        assert expected[BOB][0] == "replies in ~8 days · you owe 1"

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        async with mail_site(tmp_path) as port, chromium_with_extension(port) as cdp:
            worker = await service_worker(cdp)

            # Not set up yet: the page says so, and nothing is asked of any server.
            gmail = await open_tab(cdp)
            await gmail.send("DOM.enable")
            page_start = cdp.mark()
            assert await gmail.goto(GMAIL) == GMAIL

            async def all_painted() -> list[dict[str, Any]] | None:
                found = await badges(gmail)
                return found if found and all(b["text"] not in (None, "…") for b in found) else None

            unset = await until(all_painted, "the badges before set-up")
            assert {b["text"] for b in unset} == {"set up InboxLens"}, unset
            assert not [u for u in requested(worker) if not u.startswith(ORIGIN)], requested(worker)

            # Settings, as a user: the options page, the server's URL and the token typed in, Save.
            options = await open_tab(cdp)
            assert await options.goto(f"{ORIGIN}/options.html") == f"{ORIGIN}/options.html"
            assert await options.evaluate("document.getElementById('cors').textContent") == \
                f'cors_origins = ["{ORIGIN}"]'
            await options.evaluate(f"document.getElementById('server').value = {stack.web.url!r}")
            await options.evaluate("document.getElementById('token').focus()")
            await options.send("Input.insertText", {"text": token})
            await options.click("#save")
            result = await until(lambda: options.evaluate(
                "(r => r.querySelector('.ok, .problem') && r.innerText)(document.getElementById('result'))"),
                "the options page's answer")
            assert result.startswith(f"Connected as {ALICE}") and f"{ALICE} (test, active)" in result, result
            # Headless cannot answer the host-permission prompt: the origin is never granted, and all of
            # what follows works without it (the server's CORS answer for the extension's origin suffices).
            assert await worker.evaluate(
                "chrome.permissions.contains({origins: ['http://127.0.0.1/*']})") is False
            assert await options.evaluate("document.getElementById('token').value") == ""
            stored = await worker.evaluate("chrome.storage.local.get(['server', 'token'])"
                                           ".then(s => [s.server, s.token.length])")
            assert stored == [stack.web.url, len(token)]

            # (1) The Gmail page, reloaded: a badge beside each sender, in a closed shadow root, with the card's words.
            since = cdp.mark()
            await gmail.send("Page.reload")
            await gmail.navigated(since)
            shown = await until(all_painted, "the badges")
            assert [b["email"].lower() for b in shown] == [BOB, CEO, COLLEAGUE, BOB, NOBODY]
            assert all(b["mode"] == "closed" for b in shown), shown
            for b in shown:
                assert (b["text"], b["warn"]) == expected[b["email"].lower()], b
            # The open compose window: one line per recipient, in the card's words (Bob answers in ~8 days).
            lines = await until(lambda: compose_lines(gmail), "the compose window's lines")
            bob_wait = re.search(r"~\S+ \S+", expected[BOB][0] or "")
            assert bob_wait is not None and lines == [f"{BOB}: usually answers within {bob_wait.group(0)}"], lines
            await gmail.send("Page.bringToFront")  # a background tab draws no frame to capture
            await gmail.screenshot(SCREENSHOTS / "extension-gmail.png")

            # (7) Reloaded: the cards come from the service worker's cache, not the server.
            since = cdp.mark()
            await gmail.send("Page.reload")
            await gmail.navigated(since)
            assert [(b["email"].lower(), b["text"]) for b in await until(all_painted, "the badges again")] == \
                [(b["email"].lower(), b["text"]) for b in shown]

            # (3) A display name holding HTML stays text; its address gets its own badge.
            document = (await gmail.send("DOM.getDocument", {"depth": -1, "pierce": True}))["root"]
            img_before = elements_named(document, "img")
            await gmail.evaluate("location.hash = '#inbox/thread-2'")

            async def dana_painted() -> list[dict[str, Any]] | None:
                found = await all_painted()
                return found if found and found[0]["email"] == DANA else None

            [dana, colleague] = await until(dana_painted, "thread-2's badges")
            assert (dana["text"], colleague["text"]) == (expected[DANA][0], expected[COLLEAGUE][0])
            document = (await gmail.send("DOM.getDocument", {"depth": -1, "pierce": True}))["root"]
            assert elements_named(document, "img") == img_before == 0
            assert await gmail.evaluate("window.pwned === undefined && document.querySelector('h2.hP').textContent") \
                == "<b>Lunch</b>"

            # (7) One card request per address so far, though the page was loaded three times.
            counts = card_requests(worker)
            assert counts == Counter({a: 1 for a in [*SENDERS, DANA]}), counts

            # Outlook on the web: the same words beside its senders, from the service worker's cache.
            outlook = await open_tab(cdp)
            await outlook.send("DOM.enable")
            outlook_start = cdp.mark()
            assert await outlook.goto(OUTLOOK) == OUTLOOK

            async def outlook_painted() -> list[dict[str, Any]] | None:
                found = await badges(outlook)
                return found if found and all(b["text"] not in (None, "…") for b in found) else None

            in_outlook = await until(outlook_painted, "Outlook's badges")
            assert [(b["email"], b["text"], b["warn"], b["mode"]) for b in in_outlook] == \
                [(a, *expected[a], "closed") for a in (BOB, CEO)]
            assert card_requests(worker) == counts, card_requests(worker)

            # The side panel (as a tab): a click on Bob's badge selects him; the panel shows his card.
            since = cdp.mark()
            await gmail.send("Page.reload")  # the first conversation again (the hash stays; no hashchange)
            await gmail.navigated(since)

            async def bob_first() -> list[dict[str, Any]] | None:
                found = await all_painted()
                return found if found and found[0]["email"] == BOB else None

            await until(bob_first, "the first conversation again")
            await gmail.send("Page.bringToFront")  # input to a background tab waits for a frame too
            await gmail.click("span[data-inboxlens=badge]")
            # The click opened the real side panel (chrome.sidePanel.open, in the click's user gesture): a page
            # target at panel.html. It shows Bob's card; the rest is read from a tab of its own (sized, in front).
            side = await side_panel(cdp)
            assert await until(lambda: side.evaluate("document.querySelector('#panel h1')?.textContent"),
                               "the side panel's heading") == BOB
            panel = await open_tab(cdp)
            panel_start = cdp.mark()
            await panel.goto(f"{ORIGIN}/panel.html")
            heading = await until(lambda: panel.evaluate(
                "document.querySelector('#panel h1')?.textContent"), "the panel's heading")
            assert heading == BOB
            text = await panel.evaluate("document.getElementById('panel').innerText")
            assert "Suggestions" in text and "You owe a reply" in text, text
            # Reply times with their 90th percentile, and each owed or awaiting message linked to Gmail's search
            # by its Message-ID: both where the server's card has them (older servers send neither).
            async with aiohttp.ClientSession(stack.web.url) as client:
                _, bobs = await api(client, "GET", f"/accounts/{alice}/correspondents/{BOB}", token)
            for label, key in (("They answer you", "theirs"), ("You answer them", "yours")):
                said = await panel.evaluate(
                    f"[...document.querySelectorAll('#panel dt')].find(d => d.textContent === {label!r})"
                    ".nextElementSibling.textContent")
                p90 = bobs["card"]["replies"][key].get("p90")
                assert said.startswith(f"median {duration(bobs['card']['replies'][key]['median'])} · "), said
                assert (f" · 90% within {duration(p90)} · " in said) == (p90 is not None), (said, p90)
            links = await panel.evaluate("[...document.querySelectorAll('#panel li[data-pending]')]"
                                         ".map(li => li.querySelector('a')?.href ?? null)")
            pending = [*bobs["card"]["owed"], *bobs["card"]["awaiting"]]
            assert links == [gmail_link(p.get("message_id")) for p in pending], links
            if "message_id" in bobs["card"]["owed"][0]:  # the server has Message-IDs: Bob's b2 is linked
                assert links[0] == "https://mail.google.com/mail/u/0/#search/rfc822msgid:b2%40friends.test"
            await panel.send("Emulation.setDeviceMetricsOverride", {"width": 420, "height": 900,
                                                                    "deviceScaleFactor": 1, "mobile": False})
            await panel.send("Page.bringToFront")
            await panel.screenshot(SCREENSHOTS / "extension-panel.png")

            # The toolbar badge: the owed replies over all mailboxes, as the API counts them.
            toolbar = await worker.evaluate("chrome.action.getBadgeText({})")
            assert toolbar == str(await owed_total(stack, token, alice)), toolbar

            # (5) The token revoked on /settings: the next lookup says so, in the badge and the panel.
            settings = await page_text(await browser.get("/settings"))
            [token_id] = re.findall(r'action="/settings/tokens/(\d+)/revoke"', settings)
            revoked = await browser.post(f"/settings/tokens/{token_id}/revoke", data={"csrf_token": csrf_of(settings)})
            assert revoked.status == 200, await revoked.text()
            await gmail.evaluate("location.hash = '#inbox/thread-3'")

            async def newcomer_painted() -> list[dict[str, Any]] | None:
                found = await all_painted()
                return found if found and found[0]["email"] == NEWCOMER else None

            [newcomer] = await until(newcomer_painted, "thread-3's badge")
            assert newcomer["text"] == "token revoked"
            problem = await until(lambda: panel.evaluate(
                "document.querySelector('#panel [data-state=unauthorized]') && "
                "document.querySelector('#panel h1').textContent"), "the panel's revoked state")
            assert problem == "Token revoked"
            since = cdp.mark()
            await gmail.send("Page.reload")
            await gmail.navigated(since)
            after = await until(all_painted, "the badges after the revocation")
            assert {b["text"] for b in after} == {"token revoked"}, after
            assert await worker.evaluate("chrome.action.getBadgeText({})") == "!"

            # (2) Only the service worker talked to the server.
            server = urlsplit(stack.web.url).netloc
            page_urls = requested(gmail, page_start)
            assert page_urls and not [u for u in page_urls if urlsplit(u).netloc == server], page_urls
            assert any(urlsplit(u).netloc == server for u in requested(worker))
            server_in_outlook = [u for u in requested(outlook, outlook_start) if urlsplit(u).netloc == server]
            assert server_in_outlook == []

            # (6) Nothing complained in the extension's own contexts.
            assert worker.complaints() == []
            assert options.complaints() == []
            assert panel.complaints(panel_start) == []
            assert gmail.complaints(page_start) == []
            assert outlook.complaints(outlook_start) == []
