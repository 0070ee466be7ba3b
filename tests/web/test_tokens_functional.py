"""API tokens on the settings page: made with CSRF, shown once, stored as a hash, revocable."""

from __future__ import annotations

import asyncio
import hashlib
import re

from inboxlens.web.tokens import VERIFIED_FOR
from tests.web.conftest import Stack, api, connect, csrf_of, new_token, page

ALICE = "alice@example.test"
BOB = "bob@example.test"


async def test_a_token_is_shown_once_and_only_its_hash_is_kept(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        token = await new_token(browser, "Chrome at <work>")
        assert re.fullmatch(r"ilk_[A-Za-z0-9_-]{43}", token)
        response, body = await api(browser, "GET", "/me", token)
        later = await page(await browser.get("/settings"))
    assert token not in later and "Chrome at &lt;work&gt;" in later and "never" not in later  # used once since
    assert response.status == 200 and body["user"]["email"] == ALICE
    db = await stack.db()
    row = dict(await db.fetchrow("SELECT * FROM api_tokens"))
    audit = [r["kind"] for r in await db.fetch("SELECT kind FROM audit_events ORDER BY id")]
    dump = str(await db.fetch("SELECT * FROM audit_events")) + str(await db.fetch("SELECT * FROM web_sessions"))
    await db.close()
    assert row["token_hash"] == hashlib.sha256(token.encode()).digest()
    assert token not in str(row) and token[4:] not in dump
    assert "api_token_created" in audit
    assert token not in stack.web.log()


async def test_a_revoked_token_stops_working(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        keep, drop = await new_token(browser, "keep"), await new_token(browser, "drop")
        text = await page(await browser.get("/settings"))
        token_id = re.search(r'data-token-id="(\d+)"><td>drop<', text)
        assert token_id
        used, _ = await api(browser, "GET", "/me", drop)  # vouched for: trusted for a moment, unless revoked here
        assert used.status == 200
        response = await browser.post(f"/settings/tokens/{token_id.group(1)}/revoke",
                                      data={"csrf_token": csrf_of(text)})
        assert response.status == 200 and "drop" not in await page(response)
        dropped, body = await api(browser, "GET", "/me", drop)
        kept, _ = await api(browser, "GET", "/me", keep)
    assert (dropped.status, body["error"]["code"]) == (401, "unauthorized") and kept.status == 200


async def test_a_token_revoked_elsewhere_stops_working_within_its_bound(stack: Stack):
    """Another node, or someone in the database, deletes the token: refused VERIFIED_FOR later."""
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        token = await new_token(browser, "elsewhere")
        used, _ = await api(browser, "GET", "/me", token)
        assert used.status == 200
        db = await stack.db()
        await db.execute("DELETE FROM api_tokens WHERE name = 'elsewhere'")
        await db.close()
        await asyncio.sleep(VERIFIED_FOR)  # the time itself is what is tested: nothing else to wait on
        refused, body = await api(browser, "GET", "/me", token)
    assert (refused.status, body["error"]["code"]) == (401, "unauthorized")


async def test_tokens_need_a_login_a_csrf_token_and_a_name(stack: Stack):
    async with stack.browser() as anonymous:
        assert (await anonymous.get("/settings")).status == 401
        assert (await anonymous.post("/settings/tokens", data={"name": "x"})).status in (401, 403)
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        text = await page(await browser.get("/settings"))
        forged = await browser.post("/settings/tokens", data={"name": "x", "csrf_token": "forged"})
        unnamed = await browser.post("/settings/tokens", data={"name": "   ", "csrf_token": csrf_of(text)})
        assert forged.status == 403 and unnamed.status == 400
    db = await stack.db()
    assert await db.fetchval("SELECT count(*) FROM api_tokens") == 0
    await db.close()


async def test_a_user_cannot_revoke_anothers_token(stack: Stack):
    async with stack.browser() as alice:
        await connect(stack, alice, ALICE)
        token = await new_token(alice)
    db = await stack.db()
    token_id = await db.fetchval("SELECT id FROM api_tokens")
    async with stack.browser() as bob:
        text = await connect(stack, bob, BOB)
        response = await bob.post(f"/settings/tokens/{token_id}/revoke", data={"csrf_token": csrf_of(text)})
        assert response.status == 404
        assert token_id and "data-token-id" not in await page(await bob.get("/settings"))
        answer, body = await api(bob, "GET", "/me", token)
    assert await db.fetchval("SELECT count(*) FROM api_tokens") == 1
    await db.close()
    assert answer.status == 200 and body["user"]["email"] == ALICE  # Alice's token is still Alice's


async def test_the_settings_page_keeps_the_strict_csp(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        response = await browser.post("/settings/tokens", data={
            "name": "x", "csrf_token": csrf_of(await page(await browser.get("/settings")))})
        text = await page(response)
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"  # the one page with the token on it
    assert not re.search(r"<script(?![^>]*\bsrc=)", text) and "style=" not in text and "<style" not in text
    assert not re.search(r"\son[a-z]+=", text)  # no inline event handlers
