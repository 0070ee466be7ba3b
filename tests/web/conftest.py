from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import asyncpg
import pytest

from inboxlens.errors import NotPermitted, UnknownAccount
from inboxlens.pg import migrate
from inboxlens.vault.client import VaultClient
from tests.support.oauth_provider import OAuthProvider
from tests.support.vaultproc import VaultProcess, make_vault
from tests.support.webproc import WebProcess, make_web

CLIENT_ID = "inboxlens-test"
CLIENT_SECRET = "web-client-secret-7c1e"


@dataclass
class Stack:
    oauth: OAuthProvider
    vault: VaultProcess
    web: WebProcess
    dsn: str

    def browser(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(self.web.url, cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)

    async def as_harvest(self) -> VaultClient:
        """A vault client acting as harvest: the test process registered as the harvest PID."""
        client = VaultClient(self.vault.socket)
        await self.vault.register(os.getpid(), "harvest")
        deadline = time.monotonic() + 10
        while True:
            try:
                await client.get("probe")
            except UnknownAccount:
                return client
            except NotPermitted:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)


def providers(oauth: OAuthProvider) -> dict[str, Any]:
    return {"test": {
        "authorization_url": oauth.authorize_url, "token_url": oauth.token_url, "userinfo_url": oauth.userinfo_url,
        "revocation_url": oauth.revoke_url, "issuer": oauth.issuer, "client_id": CLIENT_ID,
        "client_secrets": [CLIENT_SECRET], "scopes": ["openid", "email", "offline_access"],
        "display_name": "Test Mail",
    }}


@pytest.fixture
async def stack(tmp_path: Path, pg_db: str) -> AsyncIterator[Stack]:
    oauth = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]})
    await oauth.start()
    await migrate(pg_db)
    vault = make_vault(tmp_path, providers=providers(oauth))
    await vault.start()
    web = make_web(tmp_path, vault.state_dir, vault.runtime_dir, pg_db, providers(oauth))
    await web.start()
    assert web.process is not None
    await vault.register(web.process.pid, "web")
    await wait_registered(vault, web.process.pid)
    yield Stack(oauth, vault, web, pg_db)
    await web.stop()
    await vault.stop()
    await oauth.stop()


async def wait_registered(vault: VaultProcess, pid: int) -> None:
    """The control pipe has no acknowledgement: wait for the vault to log the registration."""
    deadline = time.monotonic() + 10
    while f"registered pid {pid} as web" not in vault.log():
        assert time.monotonic() < deadline, vault.log()
        await asyncio.sleep(0.01)


async def page(response: aiohttp.ClientResponse) -> str:
    return re.sub(r"\s+", " ", await response.text())


def csrf_of(text: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert match, "no CSRF token on the page"
    return match.group(1)
