"""The ``secret`` op against a running vault: a CardDAV password stored by web (``set``, provider
"carddav", key ``book:<id>``) is handed to harvest only, and to nobody as anything else; it is
rewrapped with every other entry, never logged, and web's orphan sweep leaves it alone."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta

import asyncpg
import pytest

from inboxlens.db.migrate import migrate
from inboxlens.errors import NotPermitted, UnknownAccount
from inboxlens.vault.client import VaultClient
from inboxlens.web import accounts
from tests.support.vaultproc import VaultProcess
from tests.vault.conftest import become

PASSWORD = "carddav-pw-" + secrets.token_hex(12)


async def store(vault: VaultProcess, client: VaultClient, account_id: str, provider: str, secret: str) -> None:
    """As web: seal with the vault's public key and ``set``."""
    await become(vault, client, os.getpid(), "web")
    key = await client.public_key()
    await client.set(account_id, provider, key.seal(account_id, provider, secret))


async def test_harvest_gets_a_carddav_password_and_nothing_else(vault_factory):
    vault = await vault_factory()
    client = VaultClient(vault.socket)
    await store(vault, client, "book:7", "carddav", PASSWORD)
    await store(vault, client, "book:8", "test", "refresh-" + PASSWORD)  # a refresh token under a book's key
    await store(vault, client, "9", "carddav", PASSWORD)  # not a book's key: secret never reads it
    await become(vault, client, os.getpid(), "harvest")
    assert await client.secret("book:7") == PASSWORD
    with pytest.raises(UnknownAccount) as not_carddav:
        await client.secret("book:8")
    with pytest.raises(UnknownAccount) as missing:
        await client.secret("book:10")
    assert str(not_carddav.value) == str(missing.value)  # one opaque answer: no way to tell them apart
    for not_a_book in ("9", "book:", "book:7x", "acct:book:7", "xbook:7"):
        with pytest.raises(UnknownAccount, match=str(missing.value)):
            await client.secret(not_a_book)
    await client.close()
    assert PASSWORD not in vault.log()


async def test_web_may_not_ask_for_a_secret(vault_factory):
    vault = await vault_factory()
    client = VaultClient(vault.socket)
    await store(vault, client, "book:3", "carddav", PASSWORD)
    with pytest.raises(NotPermitted):
        await client.secret("book:3")
    await become(vault, client, os.getpid(), "harvest")
    with pytest.raises(NotPermitted):  # and harvest may not store or forget one
        await client.forget("book:3")
    assert await client.secret("book:3") == PASSWORD
    await client.close()
    assert "secret refused" in vault.log() and PASSWORD not in vault.log()


async def test_rotation_rewraps_book_secrets(vault_factory):
    vault = await vault_factory()
    client = VaultClient(vault.socket)
    await store(vault, client, "book:1", "carddav", PASSWORD)
    await vault.send({"unregister": os.getpid()})  # the test process is the admin again
    admin = VaultClient(vault.socket)
    assert (await admin.rotate())["id"] == 2
    answer = await admin.rewrap(limit=100)
    assert (answer["rewrapped"], answer["failed"], answer["remaining"]) == (1, [], 0)
    assert (await admin.revoke(1))["state"] == "revoked"  # nothing left under the old key
    await admin.close()
    await become(vault, client, os.getpid(), "harvest")
    assert await client.secret("book:1") == PASSWORD
    await client.close()
    assert PASSWORD not in vault.log()


async def test_the_orphan_sweep_leaves_a_live_books_secret(vault_factory, pg_db):
    """connect_pending names mail accounts; a book's secret (``book:<id>``) is never one of them,
    even when the numbers coincide."""
    await migrate(pg_db)
    vault = await vault_factory()
    client = VaultClient(vault.socket)
    await store(vault, client, "book:5", "carddav", PASSWORD)
    await store(vault, client, "5", "test", "refresh-token-5")  # a connect that never committed
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=3)
    try:
        await pool.execute("INSERT INTO connect_pending (account_id, created_at) VALUES (5, now() - interval '1 hour')")
        assert await accounts.forget_orphans(pool, client, older=timedelta(seconds=30)) == [5]
    finally:
        await pool.close()
    assert await client.token_state("5") == "missing"
    await become(vault, client, os.getpid(), "harvest")
    assert await client.secret("book:5") == PASSWORD
    await client.close()
