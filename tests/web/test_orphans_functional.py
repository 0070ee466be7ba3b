"""A connect that dies between the vault's set and the account's commit leaves no token behind
(issue 12.12, "vault mid-set"/"web mid-callback"): web's sweep has the vault forget a token whose
account never came to be (without revoking the grant, which a retried connect may share), and
leaves every other token, and every mark a connect still holds, alone."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import asyncpg
import pytest

from inboxlens.vault.client import VaultClient
from inboxlens.web import accounts
from tests.web.conftest import Stack, account_id, connect

ALICE, BOB = "alice@example.test", "bob@example.test"


async def test_the_sweep_forgets_only_tokens_whose_account_never_committed(stack: Stack):
    async with stack.browser() as alice_browser, stack.browser() as bob_browser:
        await connect(stack, alice_browser, ALICE)
        await connect(stack, bob_browser, BOB)
    alice, bob = await account_id(stack, ALICE), await account_id(stack, BOB)
    pool = await asyncpg.create_pool(stack.dsn, min_size=1, max_size=2)
    await stack.vault.register(os.getpid(), "web")
    vault = VaultClient(stack.vault.socket)
    try:
        # Bob's connect "died" after the set: his row is gone (it never committed), his mark stays.
        # Alice's mark is one a connect left after its commit; a third mark is a connect under way.
        await pool.execute("DELETE FROM mail_accounts WHERE id = $1", bob)
        await pool.execute("INSERT INTO connect_pending (account_id, created_at) VALUES "
                           "($1, now() - interval '1 minute'), ($2, now() - interval '1 minute'), ($3, now())",
                           alice, bob, bob + 1000)
        assert await vault.token_state(str(bob)) == "ok"  # the orphan: a live grant nobody can see

        assert await accounts.forget_orphans(pool, vault) == [bob]

        assert await vault.token_state(str(bob)) == "missing"
        # Not revoked: at Google revoking one refresh token ends the grant a retried connect may hold.
        assert not any(g.revoked for g in stack.oauth._grants if g.email == BOB)
        assert await vault.token_state(str(alice)) == "ok"
        assert not any(g.revoked for g in stack.oauth._grants if g.email == ALICE)
        left = [r["account_id"] for r in await pool.fetch("SELECT account_id FROM connect_pending")]
        assert left == [bob + 1000]  # too young to judge: its connect may still commit
        assert await accounts.forget_orphans(pool, vault, older=timedelta(0)) == []  # no account, no token: unmarked
        assert await pool.fetchval("SELECT count(*) FROM connect_pending") == 0
    finally:
        await vault.close()
        await pool.close()


async def test_a_finished_connect_leaves_no_mark(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
    db = await stack.db()
    try:
        assert await db.fetchval("SELECT count(*) FROM connect_pending") == 0
    finally:
        await db.close()


async def test_the_mark_waits_for_a_connection_a_bounded_time(stack: Stack):
    """The connect's transaction holds one connection while the mark needs another: with every
    connection held, the mark gives up (MarkBusy, a 503 for the user) instead of waiting forever."""
    pool = await asyncpg.create_pool(stack.dsn, min_size=1, max_size=1)
    other = await stack.db()
    try:
        async with pool.acquire():  # the connect's own transaction, holding the only connection
            with pytest.raises(accounts.MarkBusy):
                await accounts.mark_pending(pool, other, 4242, wait=0.2)
        assert await pool.fetchval("SELECT count(*) FROM connect_pending WHERE account_id = 4242") == 0
    finally:
        await other.close()
        await pool.close()


async def test_a_mark_its_connect_still_holds_is_not_judged(stack: Stack):
    """A connect whose commit is slow (past the sweep's 30 s) keeps its mark locked: the sweep
    skips it, so a token is never forgotten under an account that is about to commit."""
    pool = await asyncpg.create_pool(stack.dsn, min_size=1, max_size=3)
    await stack.vault.register(os.getpid(), "web")
    vault = VaultClient(stack.vault.socket)
    connect = await stack.db()
    try:
        async with connect.transaction():
            await accounts.mark_pending(pool, connect, 777)
            await asyncio.sleep(0.01)  # the mark is older than "now" in the sweep's next transaction
            assert await accounts.forget_orphans(pool, vault, older=timedelta(0)) == []
            assert await pool.fetchval("SELECT count(*) FROM connect_pending") == 1  # still there, locked
        # unlocked (committed without its account, here): no token, so only unmarked
        assert await accounts.forget_orphans(pool, vault, older=timedelta(0)) == []
        assert await pool.fetchval("SELECT count(*) FROM connect_pending") == 0
    finally:
        await connect.close()
        await vault.close()
        await pool.close()


async def test_a_connect_the_vault_cannot_store_connects_nothing_and_logs_no_address(stack: Stack):
    await stack.vault.stop()
    stack.oauth.login = ALICE
    async with stack.browser() as browser:
        response = await browser.get("/connect/test")
        assert response.status == 503 and "nothing was connected" in await response.text()
    db = await stack.db()
    try:
        assert await db.fetchval("SELECT count(*) FROM mail_accounts") == 0
    finally:
        await db.close()
    assert "the vault did not store a test token (VaultUnavailable)" in stack.web.log()
    assert ALICE not in stack.web.log()
