from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import AsyncIterator, Iterator

import asyncpg
import pytest

from inboxlens.config.vault import ProviderConfig
from inboxlens.harvest.imap import ImapSession
from inboxlens.harvest.scheduler import Limits, Scheduler
from inboxlens.harvest.sync import SyncSettings
from inboxlens.db.migrate import migrate
from inboxlens.vault.client import VaultClient
from tests.support.dovecot import Dovecot, require_dovecot
from tests.support.maildir import AUTHSERV_ID
from tests.support.oauth_provider import OAuthProvider
from tests.support.vaultproc import VaultProcess, make_vault

CLIENT_ID = "inboxlens-test"
CLIENT_SECRET = "harvest-test-secret-41"
OWNER = "me@example.test"
_owners = iter(range(1_000_000))


@dataclass
class Mail:
    oauth: OAuthProvider
    dovecot: Dovecot
    vault: VaultProcess
    dsn: str
    pool: asyncpg.Pool
    client: VaultClient
    # Each test its own mailbox owner: Dovecot is shared by the module's tests.
    owner: str = ""

    def provider(self, tls: bool = False) -> ProviderConfig:
        return ProviderConfig(token_url=self.oauth.token_url, client_id=CLIENT_ID, imap_host="127.0.0.1",
                              imap_port=self.dovecot.imaps_port if tls else self.dovecot.port,
                              imap_tls="tls" if tls else "plain", trusted_authserv_ids=(AUTHSERV_ID,))

    def settings(self, **overrides: object) -> SyncSettings:
        # aggregate=False: these tests read the raw rows the sync stored (aggregation deletes them).
        values = {"batch_size": 100, "first_sync_days": 3650, "lease": timedelta(seconds=60),
                  "trusted_authserv_ids": frozenset({AUTHSERV_ID}), "aggregate": False, **overrides}
        return SyncSettings(**values)  # type: ignore[arg-type]

    def scheduler(self, owner: str = "test-harvester", tls: bool = False, **overrides: object) -> Scheduler:
        async def connect(provider: ProviderConfig) -> ImapSession:
            return await ImapSession.open(provider, ssl_context=self.dovecot.client_ssl_context() if tls else None)
        return Scheduler(self.pool, self.client, connect, {"test": self.provider(tls)}, self.settings(**overrides),
                         interval=timedelta(minutes=5), limits=Limits(8, 4), owner=owner)

    async def add_account(self, address: str = "") -> int:
        """A user, their account row, and a sealed refresh token in the vault (as web would do)."""
        address = address or self.owner
        user = await self.pool.fetchval("INSERT INTO users (email) VALUES ($1) ON CONFLICT (email) DO UPDATE "
                                        "SET email = excluded.email RETURNING id", address)
        account = await self.pool.fetchval("INSERT INTO mail_accounts (user_id, address, provider) "
                                           "VALUES ($1, $2, 'test') RETURNING id", user, address)
        key = await self.client.public_key()
        await self.vault.register(os.getpid(), "web")
        await self.client.set(str(account), "test", key.seal(str(account), "test",
                                                             self.oauth.issue_refresh_token(address, CLIENT_ID)))
        await self.vault.register(os.getpid(), "harvest")
        return int(account)

    async def stored(self, account: int) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT * FROM raw_headers WHERE account_id = $1 ORDER BY sent_at", account)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    """One Dovecot per module (its stop alone takes a second); each test points it at its own provider."""
    require_dovecot()
    server = Dovecot("http://127.0.0.1:9/introspect")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def mail(tmp_path: Path, pg_db: str, dovecot: Dovecot) -> AsyncIterator[Mail]:
    oauth = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]})
    await oauth.start()
    await asyncio.to_thread(dovecot.set_introspect_url, oauth.introspect_url)
    await migrate(pg_db)
    vault = make_vault(tmp_path, providers={"test": {"token_url": oauth.token_url, "client_id": CLIENT_ID,
                                                     "client_secrets": [CLIENT_SECRET],
                                                     "revocation_url": oauth.revoke_url}})
    await vault.start()
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=10)
    client = VaultClient(vault.socket)
    yield Mail(oauth, dovecot, vault, pg_db, pool, client, owner=f"me{next(_owners)}-{os.getpid()}@example.test")
    await client.close()
    await pool.close()
    await vault.stop()
    await oauth.stop()
