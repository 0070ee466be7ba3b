"""The side panel shows who a correspondent is: the card's profile block, in headless Chromium.

Bob's card is seeded into a CardDAV address book of Alice's ("Work") with the writer every sync and
import uses (inboxlens/profiles/rows.py): a name, an organisation holding markup, a title, an inline
PNG photo and three links (https, javascript:, xmpp:). The extension talks to the real server through
a proxy of this test's own (as in test_extension_states_browser_functional.py) that forwards
everything and, when told to, rewrites the profile block of a card answer. Checked in the panel:

1. above the numbers, each field as text with "from Work (CardDAV), <day>", as the API's block says;
   only the http(s) link is an <a> (new tab, rel="noopener noreferrer"), the others are text; the
   photo is a data: URL made by the service worker from /api/v1/photos/... (with the token), equal to
   the stored bytes; the panel itself requests nothing but the extension's own files;
2. a correspondent without a profile (the API's "profile": null) shows no profile section;
3. an odd block (wrong types) shows the card as before, without a profile section; a photo URL on
   another origin (the real server's own address, not the configured one) is never requested;
4. no console error, uncaught exception or CSP violation in the worker or the panel.

The server's side of the block (web: the card's "profile" and the photo route) is issue 17.5's web
part; this test is written to the contract in /tmp/brief17.md ("The card's profile block").
"""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from inboxlens.profiles import rows
from inboxlens.profiles.vcard import Link, Photo, Profile
from tests.extension.test_extension_browser_functional import (
    ALICE, BOB, COLLEAGUE, GMAIL, ORIGIN, badges, chromium_with_extension, mail, mail_site, requested,
    service_worker, until,
    web_settings,  # noqa: F401  (a fixture)
)
from tests.extension.test_extension_states_browser_functional import set_up
from tests.web.conftest import Stack, account_id, api, connect, new_token
from tests.web.test_browser_functional import Page, open_tab
from tests.web.test_browser_functional import pytestmark as browser_marks
from tests.web.test_dashboard_functional import fold

pytestmark = browser_marks

CARD = re.compile(r"^/api/v1/accounts/\d+/correspondents/")
HOP_BY_HOP = {"connection", "content-length", "content-encoding", "transfer-encoding", "keep-alive", "host"}
KIND_WORDS = {"carddav": "CardDAV", "google": "Google Contacts", "vcf": ".vcf import"}


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG (red pixels), small enough to be kept inline by the card writer."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PHOTO = png()
BOBS_CARD = Profile(
    emails=(BOB,), name="Bob Example", organization="Friends & Co <b>bold</b>", title="Chief Tester",
    photo=Photo(media_type="image/png", data=PHOTO),
    links=(Link("url", "https://bob.example/", "home"), Link("social", "javascript:alert(1)", "twitter"),
           Link("impp", "xmpp:bob@friends.test", "")))


async def seed_profiles(stack: Stack, account: int) -> None:
    """Alice's "Work" address book with Bob's card, written as a sync writes it (one transaction)."""
    db = await stack.db()
    try:
        async with db.transaction():
            user = await db.fetchval("SELECT user_id FROM mail_accounts WHERE id = $1", account)
            book = await db.fetchval(
                "INSERT INTO address_books (user_id, kind, label, url, username) "
                "VALUES ($1, 'carddav', 'Work', 'https://dav.example/alice/contacts/', 'alice') RETURNING id", user)
            await rows.put_cards(db, book, user, {"/alice/contacts/bob.vcf": BOBS_CARD})
            await rows.bump_version(db, user)
    finally:
        await db.close()


# ---- what the panel shows (lib/profile.js, in Python: the expected words from the API's block) ----

def source_note(source: dict[str, str], refreshed_at: str | None) -> str:
    kind = KIND_WORDS.get(source["kind"])
    note = f"from {source['label']} ({kind})" if kind and kind != source["label"] else f"from {source['label']}"
    if refreshed_at:
        day = datetime.fromisoformat(refreshed_at.replace("Z", "+00:00")).astimezone(UTC).date().isoformat()
        note += f", {day}"
    return note


def link_href(value: str) -> str | None:
    parts = urlsplit(value)
    ok = parts.scheme in ("http", "https") and parts.hostname and "@" not in parts.netloc
    return value if ok and not re.search(r"\s", value) else None


# ---- a proxy that can rewrite the card's profile block ----

@dataclass
class Proxy:
    upstream: str
    url: str = ""
    rewrite: Any = None  # a function of the block, applied to card answers while set
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with aiohttp.ClientSession() as client, client.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=await request.read(),
                allow_redirects=False) as answer:
            body = await answer.read()
            if self.rewrite is not None and request.method == "GET" and CARD.match(request.path) \
                    and answer.status == 200:
                card = json.loads(body)
                card["profile"] = self.rewrite(card.get("profile"))
                body = json.dumps(card).encode()
            return web.Response(status=answer.status, body=body, headers={
                k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP})


@asynccontextmanager
async def proxy_to(upstream: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(upstream)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proxy.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield proxy
    finally:
        await runner.cleanup()


# ---- reading the panel ----

PROFILE_JS = """(() => {
  const section = document.querySelector('#panel #profile');
  if (!section) return null;
  const img = section.querySelector('#profile-photo img');
  return {
    fields: [...section.querySelectorAll('dd[data-field]')].map(dd => [dd.dataset.field,
      dd.querySelector('.value').textContent, dd.querySelector('.source').textContent]),
    links: [...section.querySelectorAll('#profile-links li')].map(li => ({
      kind: li.dataset.link, text: li.textContent,
      a: li.querySelector('a') && [li.querySelector('a').getAttribute('href'), li.querySelector('a').target,
                                   li.querySelector('a').rel]})),
    photo: img && [img.getAttribute('src'), img.alt, img.complete && img.naturalWidth,
                   section.querySelector('#profile-photo figcaption').textContent],
    before_numbers: !!(section.compareDocumentPosition(document.querySelector('#panel h2'))
                       & Node.DOCUMENT_POSITION_FOLLOWING),
    markup: section.querySelectorAll('b, script, iframe').length,
  };
})()"""


def photo_gets(worker: Page, since: int = 0) -> list[str]:
    """The photo URLs the service worker asked for (GETs: the CORS preflights are the browser's)."""
    return [e["params"]["request"]["url"] for e in worker.cdp.events[since:]
            if e["method"] == "Network.requestWillBeSent" and e.get("sessionId") == worker.session
            and e["params"]["request"]["method"] == "GET" and "/api/v1/photos/" in e["params"]["request"]["url"]]


async def panel_profile(panel: Page) -> Any:
    return await panel.evaluate(PROFILE_JS)


async def select(worker: Page, address: str) -> None:
    """The selection a badge's click stores (sw.js "open"), set in the service worker's own context."""
    await worker.evaluate(f"chrome.storage.session.set({{selection: {{address: {json.dumps(address)}, "
                          f"account: {json.dumps(ALICE)}, site: 'gmail', gmailUser: 0, at: Date.now()}}}})")


async def card_shown(panel: Page, address: str) -> bool:
    return bool(await panel.evaluate(
        f"document.querySelector('#panel h1')?.textContent === {json.dumps(address)} && "
        "[...document.querySelectorAll('#panel h2')].some(h => h.textContent === 'Relationship')"))


@pytest.mark.slow
async def test_the_side_panel_shows_who_a_correspondent_is(stack: Stack, tmp_path: Path) -> None:
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE, "UTC")
        alice = await account_id(stack, ALICE)
        history, _ = mail(alice, datetime.now(UTC))
        await fold(stack, alice, ALICE, history, tz="UTC")
        token = await new_token(browser, "chromium")
    await seed_profiles(stack, alice)
    async with aiohttp.ClientSession(stack.web.url) as client:
        _, bobs = await api(client, "GET", f"/accounts/{alice}/correspondents/{BOB}", token)
        _, colleagues = await api(client, "GET", f"/accounts/{alice}/correspondents/{COLLEAGUE}", token)
    block = bobs.get("profile")
    assert isinstance(block, dict), f"the server's card has no profile block (web's side of issue 17.5): {bobs!r}"
    assert colleagues["profile"] is None
    assert block["name"]["value"] == "Bob Example" and block["photo"] is not None, block

    async with proxy_to(stack.web.url) as proxy, mail_site(tmp_path) as port, \
            chromium_with_extension(port) as cdp:
        worker = await service_worker(cdp)
        await set_up(cdp, proxy.url, token)

        # (1) A real click on Bob's badge in Gmail selects him; the panel (as a tab) shows who he is.
        gmail = await open_tab(cdp)
        await gmail.send("DOM.enable")
        assert await gmail.goto(GMAIL) == GMAIL

        async def bob_painted() -> bool:
            found = await badges(gmail)
            return bool(found) and found[0]["email"] == BOB and found[0]["text"] not in (None, "…")

        await until(bob_painted, "Bob's badge")
        await gmail.send("Page.bringToFront")
        await gmail.click("span[data-inboxlens=badge]")
        panel = await open_tab(cdp)
        panel_start = cdp.mark()
        await panel.goto(f"{ORIGIN}/panel.html")
        shown = await until(lambda: panel_profile(panel), "Bob's profile in the panel")
        assert await card_shown(panel, BOB)
        assert shown["before_numbers"] is True and shown["markup"] == 0, shown
        assert shown["fields"] == [[key, block[key]["value"], source_note(block[key]["source"], block[key]["refreshed_at"])]
                                   for key in ("name", "organization", "title") if block[key]], shown
        assert [f[:2] for f in shown["fields"]] == [["name", "Bob Example"], ["organization", "Friends & Co <b>bold</b>"],
                                                    ["title", "Chief Tester"]], shown
        assert all(f[2].startswith("from Work (CardDAV), 20") for f in shown["fields"]), shown
        expected_links = []
        for link in block["links"]:
            href = link_href(link["value"])
            expected_links.append({"kind": link["kind"], "a": [href, "_blank", "noopener noreferrer"] if href else None})
        assert [{"kind": s["kind"], "a": s["a"]} for s in shown["links"]] == expected_links, shown["links"]
        assert ["https://bob.example/", "_blank", "noopener noreferrer"] in [s["a"] for s in shown["links"]]
        assert all(s["a"] is None or s["a"][0].startswith(("https://", "http://")) for s in shown["links"])
        for s, link in zip(shown["links"], block["links"]):
            assert link["value"] in s["text"] and source_note(link["source"], link["refreshed_at"]) in s["text"], s

        # The photo: fetched by the service worker with the token, handed over as a data: URL.
        photo = await until(lambda: panel.evaluate(
            "(i => i && i.complete && i.naturalWidth > 0 && [i.getAttribute('src'), i.alt])"
            "(document.querySelector('#profile-photo img'))"), "Bob's photo")
        assert photo == ["data:image/png;base64," + base64.b64encode(PHOTO).decode(), "Photo of Bob Example"]
        photo_paths = [p for m, p in proxy.seen if m == "GET" and p.startswith("/api/v1/photos/")]
        assert photo_paths == [block["photo"]["url"]], proxy.seen
        assert photo_gets(worker) == [proxy.url + block["photo"]["url"]]
        assert [u for u in requested(panel, panel_start) if not u.startswith((ORIGIN, "data:"))] == [], \
            requested(panel, panel_start)

        # (2) No profile: no section, the card as before.
        await select(worker, COLLEAGUE)
        await until(lambda: card_shown(panel, COLLEAGUE), "the colleague's card")
        assert await panel_profile(panel) is None

        # (3) An odd block from the server: the card shows, without a profile; and a photo URL off the
        # configured server (the real server's own address, which the extension was not given) is not asked.
        proxy.rewrite = lambda _: {"name": 42, "organization": {"value": ["x"]}, "links": "nope", "photo": {}}
        await worker.evaluate("chrome.storage.session.remove('selection')")
        await set_up(cdp, proxy.url, token)  # empties the service worker's card cache
        await select(worker, BOB)
        await until(lambda: card_shown(panel, BOB), "Bob's card with an odd block")
        assert await panel_profile(panel) is None

        elsewhere = stack.web.url + block["photo"]["url"]
        proxy.rewrite = lambda b: {**b, "photo": {**b["photo"], "url": elsewhere}}
        await worker.evaluate("chrome.storage.session.remove('selection')")
        await set_up(cdp, proxy.url, token)
        worker_mark = cdp.mark()
        await select(worker, BOB)
        refused = await until(lambda: panel_profile(panel), "Bob's profile with a photo elsewhere")
        assert refused["fields"] == shown["fields"]
        answer = await panel.evaluate(f"chrome.runtime.sendMessage({{type: 'photo', url: {json.dumps(elsewhere)}}})")
        assert answer == {"ok": False, "reason": "not a photo of the configured InboxLens server"}, answer
        assert await panel.evaluate("document.querySelector('#profile-photo').hidden") is True
        assert [u for u in requested(worker, worker_mark) if "/api/v1/photos/" in u] == []  # not even a preflight

        # A message of the wrong shape gets a clear error, and nothing breaks.
        bad = await panel.evaluate("chrome.runtime.sendMessage({type: 'photo', url: 'javascript:alert(1)'})")
        assert bad == {"state": "error", "error": "bad_message", "reason": 'photo: missing or malformed field "url"'}

        # (4) Nothing complained.
        assert worker.complaints() == []
        assert panel.complaints(panel_start) == []
