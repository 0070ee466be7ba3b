from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import asyncpg
import pytest

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
        await self.vault.register(os.getpid(), "harvest")
        return VaultClient(self.vault.socket)


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
    yield Stack(oauth, vault, web, pg_db)
    await web.stop()
    await vault.stop()
    await oauth.stop()


async def page(response: aiohttp.ClientResponse) -> str:
    return re.sub(r"\s+", " ", await response.text())


def csrf_of(text: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert match, "no CSRF token on the page"
    return match.group(1)
