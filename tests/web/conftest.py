from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import asyncpg
import pytest
from jsonschema import Draft202012Validator

from inboxlens.metrics.model import AccountRef, InsightSettings, RawRow
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.db.migrate import migrate
from inboxlens.vault.client import VaultClient
from inboxlens.web.api.openapi import DOCUMENT
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
def web_settings() -> dict[str, Any]:
    """Extra ``[web]`` keys for the stack's web process; a test module may override it."""
    return {}


@pytest.fixture
async def stack(tmp_path: Path, pg_db: str, web_settings: dict[str, Any]) -> AsyncIterator[Stack]:
    oauth = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]})
    await oauth.start()
    await migrate(pg_db)
    vault = make_vault(tmp_path, providers=providers(oauth))
    await vault.start()
    web = make_web(tmp_path, vault.state_dir, vault.runtime_dir, pg_db, providers(oauth), web_settings)
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


# ---- the REST API (/api/v1): logging in, tokens, and answers checked against the OpenAPI document ----

async def connect(stack: Stack, browser: aiohttp.ClientSession, email: str, tz: str = "UTC") -> str:
    """Connect a mailbox (which logs the browser in as its user); the dashboard's text."""
    stack.oauth.login = email
    response = await browser.get(f"/connect/test?tz={tz}")
    assert response.status == 200, await response.text()
    return await page(response)


async def new_token(browser: aiohttp.ClientSession, name: str = "extension") -> str:
    """Make an API token on the settings page, as a user would; the token, shown that once."""
    settings = await page(await browser.get("/settings"))
    response = await browser.post("/settings/tokens", data={"name": name, "csrf_token": csrf_of(settings)})
    text = await page(response)
    assert response.status == 201, text
    match = re.search(r"<code class=\"secret\" data-token>(ilk_[A-Za-z0-9_-]+)</code>", text)
    assert match, "no token on the page"
    return match.group(1)


async def account_id(stack: Stack, address: str) -> int:
    db = await stack.db()
    try:
        return int(await db.fetchval("SELECT id FROM mail_accounts WHERE address = $1", address))
    finally:
        await db.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def template_of(path: str) -> str | None:
    """The OpenAPI path (relative to /api/v1) a concrete request path is an instance of."""
    for template in DOCUMENT["paths"]:
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", re.escape(template).replace(r"\{", "{").replace(r"\}", "}")),
                        path):
            return template
    return None


def response_schema(method: str, path: str, status: int) -> dict[str, Any]:
    """The documented schema of this answer; any error not documented for the path is still an Error."""
    template = template_of(path)
    operation = DOCUMENT["paths"][template].get(method.lower(), {}) if template else {}
    documented = operation.get("responses", {}).get(str(status))
    if documented is None:
        assert status >= 400, f"{method} {path} answered {status}, which the document does not describe"
        return {"$ref": "#/components/schemas/Error"}
    if "$ref" in documented:
        documented = DOCUMENT["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
    return dict(documented["content"]["application/json"]["schema"])


def conforms(method: str, path: str, status: int, body: Any) -> None:
    schema = {**response_schema(method, path, status), "components": DOCUMENT["components"]}
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(body)


async def api(client: aiohttp.ClientSession, method: str, path: str, token: str | None = None,
              **kwargs: Any) -> tuple[aiohttp.ClientResponse, Any]:
    """Call /api/v1<path>; the answer, its JSON body checked against the OpenAPI document."""
    headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
    response = await client.request(method, f"/api/v1{path}", headers=headers, **kwargs)
    body = await response.json()
    assert response.content_type == "application/json"
    conforms(method, path.split("?", 1)[0], response.status, body)
    return response, body


FRIEND = "bob.friend@friends.test"
COLLEAGUE = "carol@corp.test"


def raw(account: int, own: str, message_id: str, at: datetime, *, received_from: str | None = None,
        sent_to: str | None = None, in_reply_to: str | None = None) -> RawRow:
    """A harvested message: from someone to us (received_from) or from us to someone (sent_to)."""
    key = hashlib.sha256(b"id\0" + message_id.encode()).digest()[:16]
    received = received_from is not None
    return RawRow(account, key, "INBOX", int(at.timestamp()), message_id, (in_reply_to,) if in_reply_to else (), (),
                  "hello", received_from if received else own, None, (own,) if received else (sent_to or "",), (),
                  at, at, True, "received" if received else "sent", False,
                  dkim="pass" if received else None, spf="pass" if received else None,
                  dmarc="pass" if received else None)


async def seed_metrics(stack: Stack, account: int, own: str) -> None:
    """A thread with a friend (we answered in 2 h, they in 8 days, we owe), one unanswered mail to a colleague."""
    now = datetime.now(timezone.utc)
    rows = [raw(account, own, "<m1@friends.test>", now - timedelta(days=10), received_from=FRIEND),
            raw(account, own, "<m2@own>", now - timedelta(days=10) + timedelta(hours=2), sent_to=FRIEND,
                in_reply_to="<m1@friends.test>"),
            raw(account, own, "<m3@friends.test>", now - timedelta(days=2), received_from=FRIEND,
                in_reply_to="<m2@own>"),
            raw(account, own, "<m4@own>", now - timedelta(days=5), sent_to=COLLEAGUE)]
    pool = await asyncpg.create_pool(stack.dsn, min_size=1, max_size=2)
    try:
        store = PgMetricsStore(pool, InsightSettings())
        assert await store.write_raw(rows) == len(rows)
        await store.aggregate(AccountRef(account, own, "UTC"))
    finally:
        await pool.close()
