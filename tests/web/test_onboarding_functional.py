"""Onboarding end to end: browser (aiohttp client) → web process → OAuth provider → vault process → PostgreSQL."""

from __future__ import annotations

import base64
import html
import sqlite3
from urllib.parse import parse_qs, urlsplit

import pytest
from yarl import URL

from inboxlens.errors import ReauthRequired
from inboxlens.vault.store.sqlite import SqliteTokenStore
from inboxlens.db.migrate import migrate
from inboxlens.vault.client import VaultClient
from tests.support.oauth_provider import OAuthProvider
from tests.support.vaultproc import make_vault
from tests.support.webproc import make_web
from tests.web.conftest import CLIENT_ID, CLIENT_SECRET, Stack, csrf_of, page

ALICE = "alice@example.test"
BOB = "bob@example.test"


async def connect(stack: Stack, browser, email: str, tz: str = "Europe/Paris") -> str:
    stack.oauth.login = email
    response = await browser.get(f"/connect/test?tz={tz}")
    assert response.status == 200, await response.text()
    assert str(response.url).endswith("/")
    return await page(response)


async def account_rows(stack: Stack) -> list[dict]:
    db = await stack.db()
    try:
        return [dict(r) for r in await db.fetch("SELECT a.id, a.address, a.time_zone, a.status, u.email AS user_email "
                                                "FROM mail_accounts a JOIN users u ON u.id = a.user_id ORDER BY a.id")]
    finally:
        await db.close()


async def test_connect_stores_a_sealed_token_that_only_harvest_can_use(stack: Stack):
    async with stack.browser() as browser:
        text = await connect(stack, browser, ALICE)
    assert ALICE in text and "Your mailboxes" in text
    [row] = await account_rows(stack)
    assert (row["address"], row["time_zone"], row["user_email"]) == (ALICE, "Europe/Paris", ALICE)

    # Harvest gets a working access token for that account.
    store = await SqliteTokenStore.open(stack.vault.vault_dir / "tokens.sqlite3")
    record = await store.get(str(row["id"]))
    await store.close()
    assert record is not None and record.provider == "test"
    harvest = await stack.as_harvest()
    access = await harvest.get(str(row["id"]))
    assert stack.oauth.is_active(access.token)
    await harvest.close()
    # The row was sealed: the refresh token the vault just presented is nowhere in it.
    [refresh] = [r["refresh_token"] for r in stack.oauth.token_requests if r.get("grant_type") == "refresh_token"]
    assert refresh.encode() not in record.sealed and base64.b64encode(refresh.encode()) not in record.sealed

    # The web process holds no private key: the vault refuses it anything but sealing.
    assert "not_permitted" not in stack.vault.log()
    assert CLIENT_SECRET not in stack.web.log() and CLIENT_SECRET not in stack.vault.log()


async def test_login_later_with_the_same_provider_and_logout(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
    async with stack.browser() as browser:
        response = await browser.get("/login/test")
        text = await page(response)
        assert response.status == 200 and ALICE in text and "Your mailboxes" in text
        # Login asks for sign-in scopes only, never mailbox access or offline access.
        [authorize] = [h for h in response.history if h.url.path == "/authorize"]
        scope = parse_qs(urlsplit(str(authorize.url)).query)["scope"][0]
        assert scope == "openid email"
        logout = await browser.post("/logout", data={"csrf_token": csrf_of(text)})
        assert "Welcome" in await page(logout)
        assert "Welcome" in await page(await browser.get("/"))


async def test_login_without_a_user_is_refused_clearly(stack: Stack):
    stack.oauth.login = "stranger@example.test"
    async with stack.browser() as browser:
        response = await browser.get("/login/test")
        assert response.status == 403
        assert "no InboxLens user for stranger@example.test" in await page(response)


async def test_session_fixation_is_prevented(stack: Stack):
    site = URL(stack.web.url)
    async with stack.browser() as browser:
        await browser.get("/connect/test", allow_redirects=False)  # an anonymous session holding a flow
        planted = browser.cookie_jar.filter_cookies(site)["inboxlens_session"].value
    async with stack.browser() as victim:
        # The attacker plants their anonymous session cookie in the victim's browser.
        victim.cookie_jar.update_cookies({"inboxlens_session": planted}, response_url=site)
        stack.oauth.login = ALICE
        response = await victim.get("/connect/test")
        assert ALICE in await page(response)
        [callback] = [h for h in response.history if h.url.path == "/oauth/test/callback"]
        [issued] = [c.split(";")[0].split("=", 1)[1] for c in callback.headers.getall("Set-Cookie")
                    if c.startswith("inboxlens_session=")]
    assert issued != planted  # logging in gave the session a new id
    async with stack.browser() as attacker:
        attacker.cookie_jar.update_cookies({"inboxlens_session": planted}, response_url=site)
        assert "Welcome" in await page(await attacker.get("/"))  # the planted id is not logged in


async def test_callback_without_refresh_token_writes_nothing(stack: Stack):
    stack.oauth.fail_mode = "no_refresh_token"
    stack.oauth.login = ALICE
    async with stack.browser() as browser:
        response = await browser.get("/connect/test")
        text = await page(response)
    assert response.status == 400 and "did not send a refresh token" in text
    # The page names what was asked for and what to change, not a guess about connected apps.
    assert 'asked for the scopes "openid email offline_access" with prompt=consent' in html.unescape(text)
    assert "allow the refresh_token grant" in text and "connected apps" not in text
    assert "refused: no refresh token came back" in stack.web.log()
    assert await account_rows(stack) == []
    assert not sqlite3.connect(stack.vault.vault_dir / "tokens.sqlite3").execute("SELECT * FROM tokens").fetchall()


@pytest.mark.parametrize("mode, status, message", [
    ("server_error", 502, "did not answer usefully"),
    ("invalid_grant", 502, "refused the sign-in (invalid_grant)"),
])
async def test_failing_token_endpoint_writes_nothing(stack: Stack, mode: str, status: int, message: str):
    stack.oauth.fail_mode = mode
    async with stack.browser() as browser:
        response = await browser.get("/connect/test")
        assert response.status == status and message in await page(response)
    assert await account_rows(stack) == []


async def test_access_denied_says_what_happened(stack: Stack):
    stack.oauth.login = "deny@example.test"
    async with stack.browser() as browser:
        response = await browser.get("/connect/test")
        assert response.status == 403 and "did not allow InboxLens access" in await page(response)
    assert await account_rows(stack) == []


async def test_wrong_or_reused_state_is_refused(stack: Stack):
    stack.oauth.login = ALICE
    async with stack.browser() as browser:
        first = await browser.get("/connect/test", allow_redirects=False)
        to_provider = await browser.get(first.headers["Location"], allow_redirects=False)
        callback = to_provider.headers["Location"]
        forged = callback.replace("state=", "state=x")
        assert (await browser.get(forged)).status == 400
        assert (await browser.get(callback)).status == 200  # the real one still works once
        replay = await browser.get(callback)
        assert replay.status == 400 and "already used" in await page(replay)
    async with stack.browser() as other:  # a state from another browser's session is no good here
        assert (await other.get(callback)).status == 400
    assert len(await account_rows(stack)) == 1


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"])
async def test_next_parameter_cannot_redirect_off_site(stack: Stack, target: str):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
    async with stack.browser() as browser:
        response = await browser.get("/login/test", params={"next": target}, allow_redirects=True)
        assert str(response.url).startswith(stack.web.url)
        assert urlsplit(str(response.url)).path == "/"


async def test_next_parameter_keeps_a_local_path(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        response = await browser.get("/login/test", params={"next": "/healthz"})
        assert str(response.url) == f"{stack.web.url}/healthz"


async def test_csrf_token_is_required_for_every_post(stack: Stack):
    async with stack.browser() as browser:
        text = await connect(stack, browser, ALICE)
        [row] = await account_rows(stack)
        for path in ("/logout", f"/accounts/{row['id']}/disconnect", f"/accounts/{row['id']}/time-zone"):
            for data in ({}, {"csrf_token": "forged"}):
                response = await browser.post(path, data={**data, "time_zone": "UTC"})
                assert response.status == 403, path
        assert len(await account_rows(stack)) == 1 and ALICE in await page(await browser.get("/"))
        ok = await browser.post(f"/accounts/{row['id']}/time-zone", data={"csrf_token": csrf_of(text),
                                                                        "time_zone": "America/New_York"})
        assert ok.status == 200
        bad = await browser.post(f"/accounts/{row['id']}/time-zone", data={"csrf_token": csrf_of(text),
                                                                         "time_zone": "Mars/Olympus"})
        assert bad.status == 400
    assert (await account_rows(stack))[0]["time_zone"] == "America/New_York"


async def test_users_cannot_touch_each_others_accounts(stack: Stack):
    async with stack.browser() as alice:
        await connect(stack, alice, ALICE)
    async with stack.browser() as bob:
        text = await connect(stack, bob, BOB)
        alice_id = next(r["id"] for r in await account_rows(stack) if r["address"] == ALICE)
        assert ALICE not in text
        csrf = csrf_of(text)
        assert (await bob.post(f"/accounts/{alice_id}/disconnect", data={"csrf_token": csrf})).status == 404
        assert (await bob.post(f"/accounts/{alice_id}/time-zone",
                               data={"csrf_token": csrf, "time_zone": "UTC"})).status == 404
        assert (await bob.get(f"/reconnect/{alice_id}")).status == 404
    assert {r["address"] for r in await account_rows(stack)} == {ALICE, BOB}


async def test_one_address_cannot_belong_to_two_users(stack: Stack):
    async with stack.browser() as alice:
        await connect(stack, alice, ALICE)
    async with stack.browser() as bob:
        await connect(stack, bob, BOB)
        stack.oauth.login = ALICE  # Bob, logged in, tries to attach Alice's mailbox
        response = await bob.get("/connect/test")
        assert response.status == 409 and "already connected to another InboxLens user" in await page(response)
    rows = await account_rows(stack)
    assert [(r["address"], r["user_email"]) for r in rows] == [(ALICE, ALICE), (BOB, BOB)]


async def test_several_mailboxes_per_user(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        text = await connect(stack, browser, "alice.work@example.test")
    assert ALICE in text and "alice.work@example.test" in text
    assert {r["user_email"] for r in await account_rows(stack)} == {ALICE}


async def test_reconnect_after_the_grant_is_gone(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        [row] = await account_rows(stack)
        stack.oauth.revoke_grant_for(ALICE)
        harvest = await stack.as_harvest()
        with pytest.raises(ReauthRequired):
            await harvest.get(str(row["id"]))
        text = await page(await browser.get("/"))
        assert "Reconnect needed" in text and f'href="/reconnect/{row["id"]}"' in text
        stack.oauth.force_login = BOB  # the user picks another mailbox at the provider: refused
        wrong = await browser.get(f"/reconnect/{row['id']}")
        assert wrong.status == 400 and f"You signed in as {BOB}" in await page(wrong)
        assert "Reconnect needed" in await page(await browser.get("/"))
        stack.oauth.force_login = None
        right = await browser.get(f"/reconnect/{row['id']}")
        assert right.status == 200
        assert "Reconnect needed" not in await page(await browser.get("/"))
        assert stack.oauth.is_active((await harvest.get(str(row["id"]))).token)
        await harvest.close()
    assert (await account_rows(stack))[0]["status"] == "active"


async def test_disconnect_revokes_forgets_and_purges(stack: Stack):
    async with stack.browser() as browser:
        text = await connect(stack, browser, ALICE)
        [row] = await account_rows(stack)
        harvest = await stack.as_harvest()
        access = await harvest.get(str(row["id"]))
        await harvest.close()
        asked = await page(await browser.get(f"/accounts/{row['id']}/disconnect"))  # asks first, changes nothing
        assert f"Disconnect <strong>{ALICE}</strong>?" in asked and "0 messages' metadata" in asked
        assert len(await account_rows(stack)) == 1 and stack.oauth.is_active(access.token)
        response = await browser.post(f"/accounts/{row['id']}/disconnect", data={"csrf_token": csrf_of(asked)})
        result = await page(response)
    assert response.status == 200
    assert f"{ALICE} is disconnected" in result and "revoked at your provider" in result
    assert "the mailbox and its sync state" in result and "0 messages' metadata and 0 sender domains" in result
    assert not stack.oauth.is_active(access.token)
    assert await account_rows(stack) == []
    assert not sqlite3.connect(stack.vault.vault_dir / "tokens.sqlite3").execute("SELECT * FROM tokens").fetchall()
    db = await stack.db()
    kinds = [r["kind"] for r in await db.fetch("SELECT kind FROM audit_events ORDER BY id")]
    await db.close()
    assert kinds == ["connect", "disconnect"]


async def test_pages_carry_security_headers_and_cookie_flags(stack: Stack):
    async with stack.browser() as browser:
        first = await browser.get("/connect/test", allow_redirects=False)
        cookie = first.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie  # plain http here
        home = await browser.get("/")
        assert "frame-ancestors 'none'" in home.headers["Content-Security-Policy"]
        assert home.headers["Referrer-Policy"] == "no-referrer"
        # PKCE S256 and a state are in the authorization request.
        query = parse_qs(urlsplit(first.headers["Location"]).query)
        assert query["code_challenge_method"] == ["S256"] and len(query["state"][0]) >= 32


async def test_no_token_or_secret_in_the_logs(stack: Stack):
    async with stack.browser() as browser:
        text = await connect(stack, browser, ALICE)
        [row] = await account_rows(stack)
        await browser.post(f"/accounts/{row['id']}/disconnect", data={"csrf_token": csrf_of(text)})
    secrets = {CLIENT_SECRET}
    for request in stack.oauth.token_requests:
        secrets |= {v for k, v in request.items() if k in ("code", "code_verifier", "refresh_token", "client_secret")}
    logs = stack.web.log() + stack.vault.log()
    assert len(secrets) >= 3
    for secret in secrets:
        assert secret not in logs


async def test_a_rotated_vault_key_is_used_for_the_next_connect(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
    admin = VaultClient(stack.vault.socket)  # the test process is unregistered: an admin
    assert (await admin.rotate())["id"] == 2
    await admin.close()
    async with stack.browser() as browser:
        await connect(stack, browser, BOB)
    store = await SqliteTokenStore.open(stack.vault.vault_dir / "tokens.sqlite3")
    keys = {r.account_id: r.key_id for r in await store.not_under(-1, 10)}
    await store.close()
    ids = {r["address"]: str(r["id"]) for r in await account_rows(stack)}
    assert (keys[ids[ALICE]], keys[ids[BOB]]) == (1, 2)


async def test_a_generic_provider_configured_by_its_issuer_only(tmp_path, pg_db):
    oauth = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]})
    await oauth.start()
    provider = {"generic": {"issuer": oauth.issuer, "client_id": CLIENT_ID, "client_secrets": [CLIENT_SECRET],
                            "scopes": ["openid", "email", "offline_access"]}}
    await migrate(pg_db)
    vault = make_vault(tmp_path, providers=provider)
    await vault.start()
    web = make_web(tmp_path, vault.state_dir, vault.runtime_dir, pg_db, provider)
    await web.start()
    await vault.register(web.process.pid, "web")
    try:
        stack = Stack(oauth, vault, web, pg_db)
        oauth.login = ALICE
        async with stack.browser() as browser:
            response = await browser.get("/connect/generic")
            assert response.status == 200 and ALICE in await page(response)
        [row] = await account_rows(stack)
        harvest = await stack.as_harvest()
        assert oauth.is_active((await harvest.get(str(row["id"]))).token)
        await harvest.close()
    finally:
        await web.stop()
        await vault.stop()
        await oauth.stop()
