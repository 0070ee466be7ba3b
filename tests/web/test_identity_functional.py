"""Who signs in: a provider and its subject, a verified address; and what the audit trail keeps.

OpenID Connect Core 5.4 providers (e-mail only at userinfo) onboard like the others;
a login is found by (provider, sub), never by an address another provider asserts;
an unverified address is refused with a page saying so; after Disconnect the audit
trail holds a keyed hash of the address, never the address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from inboxlens.db.migrate import migrate
from tests.support.oauth_provider import OAuthProvider
from tests.support.vaultproc import make_vault
from tests.support.webproc import make_web
from tests.web.conftest import CLIENT_ID, CLIENT_SECRET, Stack, csrf_of, page, providers

ALICE = "alice@example.test"


async def rows(stack: Stack, query: str, *args: Any) -> list[dict[str, Any]]:
    db = await stack.db()
    try:
        return [dict(r) for r in await db.fetch(query, *args)]
    finally:
        await db.close()


async def connect(stack: Stack, browser: Any, email: str = ALICE) -> tuple[int, str]:
    stack.oauth.login = email
    response = await browser.get("/connect/test")
    return response.status, await page(response)


async def log_in(stack: Stack, provider: str = "test", email: str = ALICE) -> tuple[int, str]:
    stack.oauth.login = email
    async with stack.browser() as browser:
        response = await browser.get(f"/login/{provider}")
        return response.status, await page(response)


@pytest.mark.parametrize("conforming", [False, True], ids=["claims-in-id-token", "email-only-at-userinfo"])
async def test_onboarding_and_login_in_both_provider_modes(stack: Stack, conforming: bool) -> None:
    stack.oauth.conforming = conforming
    async with stack.browser() as browser:
        status, text = await connect(stack, browser)
    assert status == 200 and "Your mailboxes" in text and ALICE in text
    [account] = await rows(stack, "SELECT address, subject FROM mail_accounts")
    assert account == {"address": ALICE, "subject": stack.oauth.users[ALICE]["sub"]}
    status, text = await log_in(stack)
    assert status == 200 and "Your mailboxes" in text


@pytest.mark.parametrize("conforming", [False, True], ids=["claims-in-id-token", "email-only-at-userinfo"])
async def test_an_unverified_address_is_refused_and_the_page_says_why(stack: Stack, conforming: bool) -> None:
    stack.oauth.conforming = conforming
    stack.oauth._user(ALICE)["email_verified"] = False
    async with stack.browser() as browser:
        status, text = await connect(stack, browser)
    assert status == 403 and f"says {ALICE} is not verified" in text
    assert await rows(stack, "SELECT id FROM mail_accounts") == []
    assert "refused: email_verified is false" in stack.web.log()


async def test_the_same_address_with_another_subject_is_not_that_user(stack: Stack) -> None:
    async with stack.browser() as browser:
        assert (await connect(stack, browser))[0] == 200
    stack.oauth.users[ALICE]["sub"] = "a-new-account-with-the-old-address"
    status, text = await log_in(stack)
    assert status == 403 and "no InboxLens user" in text and "Your mailboxes" not in text
    async with stack.browser() as browser:  # nor can it take the mailbox over by connecting it
        status, text = await connect(stack, browser)
    assert status == 409 and "connected by another account at this provider" in text
    assert "refused: no user has this provider identity" in stack.web.log()


async def test_a_mailbox_from_before_subjects_gets_its_subject_at_its_next_login(stack: Stack) -> None:
    async with stack.browser() as browser:
        await connect(stack, browser)
    await rows(stack, "UPDATE mail_accounts SET subject = NULL RETURNING id")
    status, text = await log_in(stack)
    assert status == 200 and "Your mailboxes" in text
    assert await rows(stack, "SELECT subject FROM mail_accounts") == [{"subject": stack.oauth.users[ALICE]["sub"]}]


@pytest.fixture
async def two_providers(tmp_path: Path, pg_db: str) -> AsyncIterator[tuple[Stack, OAuthProvider]]:
    """A stack with "test" and a second provider, "other", that asserts whatever address it likes."""
    oauth, other = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]}), OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]})
    await oauth.start()
    await other.start()
    both = {**providers(oauth), "other": providers(other)["test"]}
    await migrate(pg_db)
    vault = make_vault(tmp_path, providers=both)
    await vault.start()
    web = make_web(tmp_path, vault.state_dir, vault.runtime_dir, pg_db, both)
    await web.start()
    assert web.process is not None
    await vault.register(web.process.pid, "web")
    yield Stack(oauth, vault, web, pg_db), other
    await web.stop()
    await vault.stop()
    await other.stop()
    await oauth.stop()


async def test_another_provider_asserting_the_address_cannot_log_in(
        two_providers: tuple[Stack, OAuthProvider]) -> None:
    stack, other = two_providers
    async with stack.browser() as browser:
        assert (await connect(stack, browser))[0] == 200
    other.login = ALICE
    async with stack.browser() as browser:
        response = await browser.get("/login/other")
        text = await page(response)
    assert response.status == 403 and "Your mailboxes" not in text


def address_hmac(stack: Stack, address: str) -> str:
    cookie_key = (stack.vault.state_dir / "web" / "session.key").read_bytes()
    key = hmac.new(cookie_key, b"inboxlens audit address v1", hashlib.sha256).digest()
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


async def test_after_disconnect_the_audit_trail_keeps_only_a_keyed_hash(stack: Stack) -> None:
    async with stack.browser() as browser:
        _, text = await connect(stack, browser)
        [account] = await rows(stack, "SELECT id FROM mail_accounts")
        await log_in(stack)
        response = await browser.post(f"/accounts/{account['id']}/disconnect", data={"csrf_token": csrf_of(text)})
        assert response.status == 200
    events = await rows(stack, "SELECT kind, detail FROM audit_events ORDER BY id")
    assert [e["kind"] for e in events] == ["connect", "login", "disconnect"]
    assert ALICE not in json.dumps([e["detail"] for e in events])
    assert {json.loads(e["detail"])["address_hmac"] for e in events} == {address_hmac(stack, ALICE)}


@pytest.mark.slow
async def test_web_hashes_addresses_of_mailboxes_disconnected_before_it_did(stack: Stack) -> None:
    gone = "gone@example.test"
    async with stack.browser() as browser:
        await connect(stack, browser)
    await rows(stack, "INSERT INTO audit_events (kind, user_id, detail) VALUES ('disconnect', 1, $1), "
                      "('login', 1, $2) RETURNING id", json.dumps({"address": gone}), json.dumps({"address": ALICE}))
    await stack.web.stop()
    await stack.web.start()  # the rewrite runs at start; its log line says when it is done
    assert stack.web.process is not None
    await stack.vault.register(stack.web.process.pid, "web")
    await stack.web.wait_for_log("hashed 1 address(es) of disconnected mailboxes")
    details = [json.loads(r["detail"]) for r in await rows(stack, "SELECT detail FROM audit_events ORDER BY id")]
    assert {"address_hmac": address_hmac(stack, gone)} in details  # the gone mailbox's address is hashed
    assert {"address": ALICE} in details  # a connected mailbox's is kept
