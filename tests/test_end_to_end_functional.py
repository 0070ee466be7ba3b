"""The whole product as a self-hoster runs it: `inboxlens serve` as root, a mailbox connected
through the web, then `inboxlens harvest --once` fetching its headers from Dovecot over XOAUTH2."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Iterator

import aiohttp
import asyncpg
import pytest

from tests.support.dovecot import Dovecot
from tests.support.maildir import AUTHSERV_ID, realistic_messages
from tests.support.oauth_provider import OAuthProvider
from tests.test_supervisor_functional import Service, base  # noqa: F401 - the fixture

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the supervisor's root mode needs root")]
CAROL = "carol@example.test"
SECRET = "e2e-client-secret-93"


def provider_env(oauth: OAuthProvider, dovecot: Dovecot) -> dict[str, str]:
    prefix = "INBOXLENS_PROVIDERS__TEST__"
    values = {"AUTHORIZATION_URL": oauth.authorize_url, "TOKEN_URL": oauth.token_url,
              "USERINFO_URL": oauth.userinfo_url, "REVOCATION_URL": oauth.revoke_url, "ISSUER": oauth.issuer,
              "CLIENT_ID": "inboxlens-test", "CLIENT_SECRETS": json.dumps([SECRET]),
              "SCOPES": json.dumps(["openid", "email", "offline_access"]), "DISPLAY_NAME": "Test Mail",
              "IMAP_HOST": "127.0.0.1", "IMAP_PORT": str(dovecot.port), "IMAP_TLS": "plain",
              "TRUSTED_AUTHSERV_IDS": json.dumps([AUTHSERV_ID])}
    return {prefix + k: v for k, v in values.items()}


@pytest.fixture
def service(base: Path) -> Iterator[Service]:  # noqa: F811
    svc = Service(base, None)
    yield svc
    if svc.process is not None and svc.process.poll() is None:
        svc.stop()
    svc.notify.close()


async def test_connect_then_harvest_from_the_command_line(service: Service):
    oauth = OAuthProvider(clients={"inboxlens-test": [SECRET]})
    await oauth.start()
    dovecot = Dovecot(oauth.introspect_url)
    await asyncio.to_thread(dovecot.start)
    try:
        messages = realistic_messages(CAROL, count=400, seed=21)
        dovecot.deliver(CAROL, messages)
        service.env.update(provider_env(oauth, dovecot))
        # The service's own harvester looks once at start (nothing connected yet), then sleeps.
        service.env.update({"INBOXLENS_HARVEST__TICK_SECONDS": "3600", "INBOXLENS_HARVEST__FIRST_SYNC_DAYS": "3650"})
        assert service.cli("keys", "init").returncode == 0
        service.start()
        assert "READY=1" in await asyncio.to_thread(service.notification)

        oauth.login = CAROL
        async with aiohttp.ClientSession(f"http://127.0.0.1:{service.port}",
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            page = await browser.get("/connect/test?tz=Europe/Berlin")
            assert page.status == 200 and CAROL in await page.text()

        dsn = f"postgresql://inboxlens-db@/postgres?host={service.base / 'run' / 'pg'}"
        db = await asyncpg.connect(dsn)
        try:
            account = await db.fetchval("SELECT id FROM mail_accounts WHERE address = $1", CAROL)
            harvested = await asyncio.to_thread(service.cli, "harvest", "--once", str(account))
            assert harvested.returncode == 0, harvested.stderr
            wanted = len([m for m in messages if m.folder in ("INBOX", "Sent")])
            assert f"harvest: {wanted} new message(s) stored" in harvested.stdout
            assert "fetched" in harvested.stderr  # the progress bar
            # Folded into the message index and the daily rollups, the raw rows deleted.
            assert await db.fetchval("SELECT count(*) FROM message_index WHERE account_id = $1", account) == wanted
            assert await db.fetchval("SELECT sum(received + sent) FROM account_daily WHERE account_id = $1",
                                     account) == wanted
            assert await db.fetchval("SELECT count(*) FROM raw_headers WHERE account_id = $1", account) == 0
            assert await db.fetchval("SELECT last_sync_at IS NOT NULL FROM mail_accounts WHERE id = $1", account)
        finally:
            await db.close()
        code, err = await asyncio.to_thread(service.stop)
        assert code == 0, err
        for secret in [SECRET, *(r.get("refresh_token", "") for r in oauth.token_requests)]:
            assert not secret or secret not in err + harvested.stderr + harvested.stdout
    finally:
        await asyncio.to_thread(dovecot.stop)
        await oauth.stop()
