"""The extension's token hand-off (web/handoff.py) against the real web process and PostgreSQL.

A code is made only by a logged-in user's CSRF-checked POST, redirects only to the extension's
chromiumapp.org address, is stored as a hash, works once, for two minutes, with its PKCE verifier,
from the extension's origin, within the per-address limit; it yields a token of the user who approved it,
never logged.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from inboxlens.web import handoff
from inboxlens.web.pages.render import EXTENSION_ID
from tests.web.conftest import Stack, api, connect, csrf_of, page

ALICE = "alice@example.test"
BOB = "bob@example.test"
ORIGIN = f"chrome-extension://{EXTENSION_ID}"


@pytest.fixture
def web_settings() -> dict[str, Any]:
    return {"cors_origins": [ORIGIN]}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def test_the_challenge_is_rfc_7636_s256() -> None:
    # RFC 7636, appendix B.
    assert handoff.challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


async def approve(browser: aiohttp.ClientSession, challenge: str, state: str = "s" * 22,
                  decision: str = "allow") -> aiohttp.ClientResponse:
    """As the user in the hand-off window: the page, then Allow (or Cancel); the POST's answer, not followed."""
    shown = await browser.get("/extension/connect", params={"state": state, "challenge": challenge})
    text = await page(shown)
    assert shown.status == 200 and EXTENSION_ID in text and 'id="allow"' in text, text
    # The form may post here and be redirected to the extension's address, and nowhere else.
    assert f"form-action 'self' https://{EXTENSION_ID}.chromiumapp.org;" in shown.headers["Content-Security-Policy"]
    return await browser.post("/extension/connect", allow_redirects=False, data={
        "csrf_token": csrf_of(text), "state": state, "challenge": challenge, "decision": decision})


def code_of(response: aiohttp.ClientResponse, state: str = "s" * 22) -> str:
    location = urlsplit(response.headers["Location"])
    assert response.status == 303
    assert (location.scheme, location.netloc, location.path) == \
        ("https", f"{EXTENSION_ID}.chromiumapp.org", "/handoff")
    query = parse_qs(location.query)
    assert query["state"] == [state]
    [code] = query["code"]
    return code


async def exchange(client: aiohttp.ClientSession, code: str, verifier: str,
                   origin: str | None = ORIGIN) -> tuple[aiohttp.ClientResponse, Any]:
    return await api(client, "POST", "/extension/token", json={"code": code, "verifier": verifier},
                     headers={"Origin": origin} if origin else {})


async def rows(stack: Stack, sql: str) -> list[dict[str, Any]]:
    db = await stack.db()
    try:
        return [dict(r) for r in await db.fetch(sql)]
    finally:
        await db.close()


async def test_a_code_becomes_a_token_of_the_approving_user_once(stack: Stack) -> None:
    verifier, challenge = pkce()
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        code = code_of(await approve(browser, challenge))
        [stored] = await rows(stack, "SELECT * FROM extension_handoffs")
        assert stored["code_hash"] == hashlib.sha256(code.encode()).digest() and code not in str(stored)
        async with aiohttp.ClientSession(stack.web.url) as extension:  # no cookie: the code is the credential
            response, body = await exchange(extension, code, verifier)
            assert response.status == 201, body
            assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert response.headers["Cache-Control"] == "no-store"
            token = body["token"]
            me, who = await api(extension, "GET", "/me", token)
            again, refused = await exchange(extension, code, verifier)
        settings_page = await browser.get("/settings")
        settings = await page(settings_page)
    assert "chromiumapp" not in settings_page.headers["Content-Security-Policy"]
    assert me.status == 200 and who["user"]["email"] == ALICE
    assert again.status == 400 and refused["error"]["code"] == "invalid_grant"
    assert body["name"].startswith("Browser extension, ") and body["name"] in settings and token not in settings
    assert await rows(stack, "SELECT * FROM extension_handoffs") == []
    audit = str(await rows(stack, "SELECT kind, detail FROM audit_events"))
    assert "extension_handoff_approved" in audit and "extension hand-off" in audit
    assert token not in audit and code not in audit
    log = stack.web.log()
    assert token not in log and code not in log and verifier not in log


async def test_a_wrong_verifier_burns_the_code(stack: Stack) -> None:
    verifier, challenge = pkce()
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        code = code_of(await approve(browser, challenge))
        wrong, body = await exchange(browser, code, pkce()[0])
        late, _ = await exchange(browser, code, verifier)
    assert (wrong.status, body["error"]["code"]) == (400, "invalid_grant")
    assert late.status == 400
    assert await rows(stack, "SELECT id FROM api_tokens") == []


async def test_an_expired_code_is_refused(stack: Stack) -> None:
    verifier, challenge = pkce()
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        code = code_of(await approve(browser, challenge))
        [made] = await rows(stack, "SELECT expires_at - created_at AS life FROM extension_handoffs")
        assert made["life"].total_seconds() == handoff.CODE_SECONDS
        await rows(stack, "UPDATE extension_handoffs SET expires_at = now() - interval '1 second' RETURNING id")
        response, body = await exchange(browser, code, verifier)
    assert (response.status, body["error"]["code"]) == (400, "invalid_grant")
    assert await rows(stack, "SELECT id FROM api_tokens") == []


async def test_approving_needs_a_logged_in_user_and_the_form_s_csrf_token(stack: Stack) -> None:
    _, challenge = pkce()
    flow = {"state": "s" * 22, "challenge": challenge}
    async with stack.browser() as browser:
        shown = await browser.get("/extension/connect", params=flow)
        text = await page(shown)
        assert shown.status == 200 and "/login/test?next=%2Fextension%2Fconnect%3Fstate%3D" in text, text
        anonymous = await browser.post("/extension/connect", data={**flow, "decision": "allow"},
                                       allow_redirects=False)
        await connect(stack, browser, ALICE)
        forged = await browser.post("/extension/connect", data={**flow, "decision": "allow",
                                                               "csrf_token": "not-the-session-s"},
                                    allow_redirects=False)
        missing = await browser.post("/extension/connect", data={**flow, "decision": "allow"},
                                     allow_redirects=False)
        malformed = await browser.get("/extension/connect", params={"state": "x", "challenge": challenge})
        cancelled = await approve(browser, challenge, decision="deny")
    assert anonymous.status == 403 and "Location" not in anonymous.headers
    assert forged.status == 403 and missing.status == 403
    assert malformed.status == 400
    assert parse_qs(urlsplit(cancelled.headers["Location"]).query) == {"error": ["access_denied"],
                                                                        "state": ["s" * 22]}
    assert await rows(stack, "SELECT id FROM extension_handoffs") == []


async def test_the_token_is_the_approving_user_s_whoever_sends_the_code(stack: Stack) -> None:
    verifier, challenge = pkce()
    async with stack.browser() as alice, stack.browser() as bob:
        await connect(stack, alice, ALICE)
        await connect(stack, bob, BOB)
        code = code_of(await approve(alice, challenge))
        response, body = await exchange(bob, code, verifier)  # Bob's session cookie rides along: ignored
        _, who = await api(bob, "GET", "/me", body["token"])
        bobs = await page(await bob.get("/settings"))
        alices = await page(await alice.get("/settings"))
    assert response.status == 201 and who["user"]["email"] == ALICE
    assert "Browser extension, " in alices and "Browser extension, " not in bobs


async def test_only_the_extension_s_origin_and_json_are_answered(stack: Stack) -> None:
    verifier, challenge = pkce()
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        code = code_of(await approve(browser, challenge))
        other, body = await exchange(browser, code, verifier, origin="https://evil.test")
        preflight = await browser.options("/api/v1/extension/token", headers={
            "Origin": "https://evil.test", "Access-Control-Request-Method": "POST"})
        form = await browser.post("/api/v1/extension/token", data={"code": code, "verifier": verifier})
        extra, shape = await api(browser, "POST", "/extension/token",
                                 json={"code": code, "verifier": verifier, "user": 1})
        # A bearer header would take the request past the per-address limit: refused before any lookup.
        bearer, said = await api(browser, "POST", "/extension/token", "ilk_" + "x" * 43,
                                 json={"code": code, "verifier": verifier}, headers={"Origin": ORIGIN})
        ok, _ = await exchange(browser, code, verifier)  # none of the refusals above used the code up
    assert (other.status, body["error"]["code"]) == (403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in other.headers
    assert preflight.status == 403
    assert form.status == 415
    assert (extra.status, shape["error"]["code"]) == (400, "bad_request")
    assert bearer.status == 400 and "Authorization" in said["error"]["message"]
    assert ok.status == 201


async def test_codes_per_user_are_capped(stack: Stack) -> None:
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        answers = [(await approve(browser, pkce()[1])).status for _ in range(handoff.MAX_LIVE + 1)]
    assert answers == [303] * handoff.MAX_LIVE + [429]


async def test_guessing_codes_is_rate_limited_per_address(stack: Stack) -> None:
    statuses, verifiers = [], []
    async with aiohttp.ClientSession(stack.web.url) as client:
        for _ in range(40):  # web.anonymous_burst is 30 by default
            verifiers.append(pkce()[0])
            response, body = await exchange(client, secrets.token_urlsafe(32), verifiers[-1])
            statuses.append(response.status)
            if response.status == 429:
                assert body["error"]["code"] == "rate_limited" and int(response.headers["Retry-After"]) >= 1
                break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {400}, statuses
    log = stack.web.log()
    assert not [v for v in verifiers if v in log]
