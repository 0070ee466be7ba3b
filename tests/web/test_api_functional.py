"""The REST API end to end: a real web process, vault and PostgreSQL, called as the extension would.

Every answer is checked against the OpenAPI document the server serves (``conftest.api``).
Metrics are made the way harvest makes them: raw rows written and folded by PgMetricsStore.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from inboxlens.web.api.openapi import DOCUMENT
from inboxlens.web.tokens import VERIFIED_FOR
from tests.web.conftest import (COLLEAGUE, FRIEND, Stack, account_id, api, bearer, connect, csrf_of, new_token,
                                seed_metrics)

ALICE = "alice@example.test"
BOB = "bob@example.test"


async def alice_with_mail(stack: Stack) -> tuple[int, str]:
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        token = await new_token(browser)
    account = await account_id(stack, ALICE)
    await seed_metrics(stack, account, ALICE)
    return account, token


async def test_me_lists_accounts_with_their_sync_status(stack: Stack):
    account, token = await alice_with_mail(stack)
    db = await stack.db()
    await db.execute("INSERT INTO harvest_state (account_id, failures, last_error, messages_seen) "
                     "VALUES ($1, 2, 'imap timeout', 42)", account)
    await db.close()
    async with stack.browser() as client:
        response, body = await api(client, "GET", "/me", token)
    assert response.status == 200
    assert body["user"]["email"] == ALICE
    [row] = body["accounts"]
    assert (row["id"], row["address"], row["status"], row["needs_reconnect"]) == (account, ALICE, "active", False)
    assert (row["messages_seen"], row["failures"], row["last_error"]) == (42, 2, "imap timeout")
    assert response.headers["Cache-Control"] == "no-store"


async def test_rollups_by_day_week_and_month(stack: Stack):
    account, token = await alice_with_mail(stack)
    async with stack.browser() as client:
        _, days = await api(client, "GET", f"/accounts/{account}/rollups", token)
        _, weeks = await api(client, "GET", f"/accounts/{account}/rollups?period=week", token)
        today = datetime.now(timezone.utc).date()
        _, months = await api(client, "GET", f"/accounts/{account}/rollups?period=month&from="
                                             f"{today - timedelta(days=400)}&to={today}", token)
        _, empty = await api(client, "GET", f"/accounts/{account}/rollups?from=2001-01-01&to=2001-12-31", token)
    assert days["period"] == "day" and days["to"] == today.isoformat()
    assert sum(d["received"] for d in days["rollups"]) == 2 and sum(d["sent"] for d in days["rollups"]) == 2
    assert sum(d["yours"]["count"] for d in days["rollups"]) == 1  # m2 answered m1 after two hours
    assert sum(w["received"] + w["sent"] for w in weeks["rollups"]) == 4
    assert all(len(w["received_by_weekday"]) == 7 for w in weeks["rollups"] + months["rollups"])
    assert sum(m["sent"] for m in months["rollups"]) == 2
    assert empty["rollups"] == []


async def test_correspondents_card_owed_awaiting_and_senders(stack: Stack):
    account, token = await alice_with_mail(stack)
    async with stack.browser() as client:
        _, listed = await api(client, "GET", f"/accounts/{account}/correspondents?order=volume&limit=1", token)
        _, page2 = await api(client, "GET", f"/accounts/{account}/correspondents?order=volume&limit=1&offset=1",
                             token)
        _, card = await api(client, "GET", f"/accounts/{account}/correspondents/{FRIEND.upper()}", token)
        _, owed = await api(client, "GET", f"/accounts/{account}/owed", token)
        _, awaiting = await api(client, "GET", f"/accounts/{account}/awaiting", token)
        _, past_end = await api(client, "GET", f"/accounts/{account}/awaiting?limit=1&offset=1", token)
        too_many, _ = await api(client, "GET", f"/accounts/{account}/owed?limit=201", token)
        _, senders = await api(client, "GET", f"/accounts/{account}/senders", token)
        missing, _ = await api(client, "GET", f"/accounts/{account}/correspondents/nobody@nowhere.test", token)
    assert [c["correspondent"] for c in listed["correspondents"]] == [FRIEND]  # 3 messages against 1
    assert [c["correspondent"] for c in page2["correspondents"]] == [COLLEAGUE]
    assert card["correspondent"] == FRIEND and card["card"]["relationship"]["received"] == 2
    assert card["card"]["replies"]["yours"]["count"] == 1 and card["card"]["replies"]["yours"]["median"] == 7200
    assert [p["correspondent"] for p in owed["owed"]] == [FRIEND]
    assert [p["correspondent"] for p in awaiting["awaiting"]] == [COLLEAGUE]
    assert awaiting["awaiting"][0]["waiting"] >= 5 * 86400 - 60
    assert (owed["total"], owed["limit"], owed["offset"]) == (1, 50, 0)
    assert (past_end["awaiting"], past_end["total"]) == ([], 1)
    assert too_many.status == 400
    [domain] = senders["domains"]
    assert (senders["domains_total"], senders["limit"]) == (1, 50)
    assert (domain["domain"], domain["dkim"]) == ("friends.test", {"checked": 2, "passed": 2})
    assert missing.status == 404


async def test_another_users_account_is_not_found_on_every_endpoint(stack: Stack):
    """Every account operation in the document, with Bob's account id or a missing one: 404 alike."""
    async with stack.browser() as bob:
        await connect(stack, bob, BOB)
    alice, token = await alice_with_mail(stack)
    bobs = await account_id(stack, BOB)
    await seed_metrics(stack, bobs, BOB)  # Bob has the very data Alice asks for: only ownership stops her
    operations = [(method, template) for template, item in DOCUMENT["paths"].items() for method in item
                  if "{account_id}" in template]
    assert len(operations) == 8
    async with stack.browser() as client:
        for method, template in operations:
            path = template.replace("{address}", FRIEND)
            for other in (bobs, 987654321):
                response, body = await api(client, method.upper(), path.replace("{account_id}", str(other)), token)
                assert (response.status, body["error"]["code"]) == (404, "not_found"), (method, template)
            if method != "delete":  # her own works (deleting it is tested on its own)
                response, _ = await api(client, method.upper(), path.replace("{account_id}", str(alice)), token)
                assert response.status in (200, 202), (method, template)
    db = await stack.db()
    assert await db.fetchval("SELECT count(*) FROM mail_accounts WHERE id = $1", bobs) == 1
    assert await db.fetchval("SELECT count(*) FROM harvest_state WHERE account_id = $1", bobs) == 0
    await db.close()


async def test_sync_now_makes_the_account_due(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        token = await new_token(browser)
    account = await account_id(stack, ALICE)
    db = await stack.db()
    async with stack.browser() as client:
        response, body = await api(client, "POST", f"/accounts/{account}/sync", token)  # no row yet: made
        assert response.status == 202
        first = await db.fetchval("SELECT next_run_at FROM harvest_state WHERE account_id = $1", account)
        assert first <= datetime.now(timezone.utc)
        await db.execute("UPDATE harvest_state SET next_run_at = now() + interval '1 hour'")
        response, body = await api(client, "POST", f"/accounts/{account}/sync", token)
        assert response.status == 202
        assert await db.fetchval("SELECT next_run_at <= now() FROM harvest_state") is True
        await db.execute("UPDATE mail_accounts SET status = 'reauth_required'")
        response, body = await api(client, "POST", f"/accounts/{account}/sync", token)
    await db.close()
    assert (response.status, body["error"]["code"]) == (409, "needs_reconnect")


async def test_disconnect_through_the_api_is_the_pages_disconnect(stack: Stack):
    account, token = await alice_with_mail(stack)
    async with stack.browser() as client:
        response, body = await api(client, "DELETE", f"/accounts/{account}", token)
        assert response.status == 200
        assert (body["address"], body["revocation"]) == (ALICE, "revoked")
        assert body["deleted"]["mail accounts"] == 1 and body["deleted"]["messages"] > 0
        gone, _ = await api(client, "GET", f"/accounts/{account}/owed", token)
        assert gone.status == 404
        # Whether or not the token's verification (and its list of accounts) is still trusted
        # (it may be, for a second), the card finds nothing to read.
        card, _ = await api(client, "GET", f"/accounts/{account}/correspondents/{FRIEND}", token)
        assert card.status == 404
    db = await stack.db()
    try:
        for table in ("mail_accounts", "contacts", "message_index", "account_daily"):
            column = "id" if table == "mail_accounts" else "account_id"
            assert await db.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", account) == 0, table
        detail = await db.fetchval("SELECT detail FROM audit_events WHERE kind = 'disconnect'")
    finally:
        await db.close()
    assert '"revocation": "revoked"' in detail
    assert f"forgot account {account} (revocation: revoked)" in stack.vault.log()


async def test_the_dashboards_cookie_works_and_needs_csrf_to_change_anything(stack: Stack):
    async with stack.browser() as browser:
        text = await connect(stack, browser, ALICE)
        account = await account_id(stack, ALICE)
        response, body = await api(browser, "GET", "/me")
        assert response.status == 200 and body["user"]["email"] == ALICE
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            response, body = await api(browser, "POST", f"/accounts/{account}/sync", headers=headers)
            assert (response.status, body["error"]["code"]) == (403, "csrf_failed")
            response, body = await api(browser, "DELETE", f"/accounts/{account}", headers=headers)
            assert (response.status, body["error"]["code"]) == (403, "csrf_failed")
        response, _ = await api(browser, "POST", f"/accounts/{account}/sync",
                                headers={"X-CSRF-Token": csrf_of(text)})
        assert response.status == 202
        # The form guard of the pages does not get in the way of a JSON POST, nor the reverse.
        assert (await browser.post("/logout", data={})).status == 403


async def test_bearer_calls_need_no_csrf_and_ignore_a_cookie(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        token = await new_token(browser)
        account = await account_id(stack, ALICE)
        response, _ = await api(browser, "POST", f"/accounts/{account}/sync", token)  # cookie sent along too
        assert response.status == 202
        response, body = await api(browser, "GET", "/me", "ilk_" + "A" * 43)  # a bad token wins over the cookie
        assert (response.status, body["error"]["code"]) == (401, "unauthorized")


@pytest.mark.parametrize("query, name", [
    ("period=year", "period"), ("from=2024-02-30", "from"), ("to=20240101", "to"), ("from=1969-12-31", "from"),
    ("from=2024-05-02&to=2024-05-01", "from"), ("from=2023-01-01&to=2024-12-31", "at most 366"),
    ("period=week&from=2010-01-01&to=2024-12-31", "at most 1830"),
])
async def test_rollup_parameters_are_bounded(stack: Stack, query: str, name: str):
    account, token = await alice_with_mail(stack)
    async with stack.browser() as client:
        response, body = await api(client, "GET", f"/accounts/{account}/rollups?{query}", token)
    assert (response.status, body["error"]["code"]) == (400, "invalid_parameter")
    assert name in body["error"]["message"]


async def test_errors_are_json_with_stable_codes(stack: Stack):
    account, token = await alice_with_mail(stack)
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("GET", "/me", {}, 401, "unauthorized"),
        ("GET", "/me", {"headers": {"Authorization": "Basic YWxpY2U6cHc="}}, 401, "unauthorized"),
        ("GET", "/me", {"headers": bearer("ilk_not-a-real-token")}, 401, "unauthorized"),
        ("GET", "/nothing/here", {}, 404, "not_found"),
        ("PUT", "/me", {"headers": bearer(token)}, 405, "method_not_allowed"),
        ("GET", f"/accounts/{account}/correspondents?limit=201", {"headers": bearer(token)}, 400,
         "invalid_parameter"),
        ("GET", f"/accounts/{account}/correspondents?order=alphabet", {"headers": bearer(token)}, 400,
         "invalid_parameter"),
        ("GET", f"/accounts/{account}/correspondents/a%20b", {"headers": bearer(token)}, 400, "invalid_parameter"),
        ("GET", "/accounts/x1/owed", {"headers": bearer(token)}, 404, "not_found"),
        ("POST", f"/accounts/{account}/sync", {"headers": bearer(token), "data": b"x" * 100_000}, 413,
         "payload_too_large"),
    ]
    async with stack.browser() as client:
        for method, path, kwargs, status, code in cases:
            response, body = await api(client, method, path, **kwargs)
            assert (response.status, body["error"]["code"]) == (status, code), (method, path)
            assert token not in body["error"]["message"] and "not-a-real" not in body["error"]["message"]
            if status == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        response, body = await api(client, "GET", "/openapi.json")  # the document needs no token
    assert response.status == 200 and body["openapi"] == "3.1.0"
    assert token not in stack.web.log() and "ilk_not-a-real-token" not in stack.web.log()


async def test_last_used_is_recorded_at_most_once_a_minute(stack: Stack):
    account, token = await alice_with_mail(stack)
    db = await stack.db()
    digest = hashlib.sha256(token.encode()).digest()
    assert await db.fetchval("SELECT last_used_at FROM api_tokens WHERE token_hash = $1", digest) is None
    async with stack.browser() as client:
        await api(client, "GET", "/me", token)
        first = await db.fetchval("SELECT last_used_at FROM api_tokens WHERE token_hash = $1", digest)
        await api(client, "GET", "/me", token)
        assert await db.fetchval("SELECT last_used_at FROM api_tokens WHERE token_hash = $1", digest) == first
        await db.execute("UPDATE api_tokens SET last_used_at = now() - interval '2 minutes'")
        await asyncio.sleep(VERIFIED_FOR)  # until then its verification is trusted, and nothing is looked up
        await api(client, "GET", f"/accounts/{account}/owed", token)
        later = await db.fetchval("SELECT last_used_at FROM api_tokens WHERE token_hash = $1", digest)
    await db.close()
    assert first is not None and later > first
