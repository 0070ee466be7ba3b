"""Two vaults on one PostgreSQL token store: one refresh per account across both.

A provider that rotates refresh tokens and detects reuse (the tests' provider, as RFC 9700
asks) revokes the whole grant when a spent refresh token is presented again. Two vaults
that refresh one account at once would present the same token twice; the store's
per-account lock makes the second wait and read the token the first one stored.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from inboxlens.vault.client import VaultClient
from tests.support.oauth_provider import OAuthProvider
from tests.support.vaultproc import make_vault
from tests.vault.conftest import become, provider_config

ACCOUNT = "acct-1"


async def test_two_vaults_refresh_one_account_once_at_a_time(oauth: OAuthProvider, pg_db: str, tmp_path: Path):
    store = {"token_store": "postgres", "token_store_dsn": pg_db}
    first = make_vault(tmp_path / "a", providers=provider_config(oauth), vault=store)
    second = make_vault(tmp_path / "b", providers=provider_config(oauth), vault=store, create_keys=False)
    for key_file in first.vault_dir.iterdir():  # one keyset on every node, as an admin copies it
        if key_file.is_file() and not key_file.name.startswith("."):
            shutil.copy2(key_file, second.vault_dir / key_file.name)
    await first.start()
    await second.start()
    clients = [VaultClient(first.socket), VaultClient(second.socket)]
    try:
        await become(first, clients[0], os.getpid(), "web")
        key = await clients[0].public_key()
        await clients[0].set(ACCOUNT, "test", key.seal(ACCOUNT, "test", oauth.issue_refresh_token("a@example.test")))
        await become(first, clients[0], os.getpid(), "harvest")
        await become(second, clients[1], os.getpid(), "harvest")

        oauth.delay = 0.3  # both gets arrive while a refresh is under way
        tokens = await asyncio.gather(*(c.get(ACCOUNT) for c in clients))

        assert all(oauth.is_active(t.token) for t in tokens), "a refresh was refused: the grant was replayed"
        assert oauth.refresh_grants == 2  # one per vault, one after the other, each with the newest token
        oauth.delay = 0
        again = await clients[1].get(ACCOUNT, rejected=tokens[1].token)  # the grant still lives
        assert oauth.is_active(again.token) and oauth.refresh_grants == 3
    finally:
        for client in clients:
            await client.close()
        await first.stop()
        await second.stop()
    for vault in (first, second):
        assert "reauth" not in vault.log().lower(), vault.log()[-2000:]
