"""Issue 13.9 end to end: `inboxlens serve` as root with its metrics listener on, a mailbox connected
through the web and synced by the service's own harvest from Dovecot, a card asked for over the API;
then one scrape, parsed by the Prometheus client library's parser, holds every child's numbers."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inboxlens.observability import snapshot_dir
from inboxlens.supervisor import plan as supervisor
from tests.faults.test_faults_functional import LoggedService
from tests.support.dovecot import Dovecot, require_dovecot
from tests.support.maildir import realistic_messages
from tests.support.oauth_provider import OAuthProvider
from tests.test_end_to_end_functional import SECRET, provider_env
from tests.test_supervisor_functional import base, free_port  # noqa: F401 - the fixture

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the supervisor's root mode needs root")]
CAROL = "carol.metrics@example.test"
CARD_ROUTE = "/api/v1/accounts/{account_id}/correspondents/{address}"
POLL = 0.2  # between scrapes while harvest's first sync runs (every wait has a deadline)


@pytest.fixture
def service(base: Path) -> Iterator[LoggedService]:  # noqa: F811
    svc = LoggedService(base, None)
    yield svc
    if svc.process is not None and svc.process.poll() is None:
        svc.stop()
    svc.notify.close()


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as answer:
        assert answer.status == 200
        return {f.name: f for f in text_string_to_metric_families(await answer.text())}


def value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    found = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, (sample, labels, families[family].samples)
    return float(found[0])


def synced(families: dict[str, Any]) -> bool:
    syncs = families.get("inboxlens_harvest_syncs")
    return syncs is not None and any(s.labels == {"outcome": "ok"} and s.value >= 1 for s in syncs.samples)


async def test_one_scrape_holds_every_childs_numbers(service: LoggedService):
    require_dovecot()
    oauth = OAuthProvider(clients={"inboxlens-test": [SECRET]})
    await oauth.start()
    dovecot = Dovecot(oauth.introspect_url)
    await asyncio.to_thread(dovecot.start)
    try:
        messages = realistic_messages(CAROL, count=120, seed=13)
        dovecot.deliver(CAROL, messages)
        wanted = len([m for m in messages if m.folder in ("INBOX", "Sent")])
        correspondent = next(m.from_addr for m in messages if m.folder == "INBOX" and m.kind == "person")
        listen = f"127.0.0.1:{free_port()}"
        metrics_url = f"http://{listen}/metrics"
        service.env.update(provider_env(oauth, dovecot))
        service.env.update({"INBOXLENS_HARVEST__TICK_SECONDS": "0.5", "INBOXLENS_HARVEST__FIRST_SYNC_DAYS": "3650",
                            "INBOXLENS_WEB__METRICS_LISTEN": listen})
        assert service.cli("keys", "init").returncode == 0
        service.start()
        assert "READY=1" in await asyncio.to_thread(service.notification)
        # The supervisor made harvest's snapshot directory: harvest's, group web's, 0750.
        plan = supervisor.make_plan()
        made = snapshot_dir(service.base / "run").stat()
        assert (made.st_uid, made.st_gid, made.st_mode & 0o7777) == \
            (plan.identities["harvest"].uid, plan.identities["web"].gid, 0o750)

        oauth.login = CAROL
        async with aiohttp.ClientSession(f"http://127.0.0.1:{service.port}",
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser, \
                aiohttp.ClientSession() as prometheus:
            page = await browser.get("/connect/test?tz=Europe/Berlin")
            assert page.status == 200 and CAROL in await page.text()
            db = await asyncpg.connect(f"postgresql://inboxlens-db@/postgres?host={service.base / 'run' / 'pg'}")
            try:
                account = await db.fetchval("SELECT id FROM mail_accounts WHERE address = $1", CAROL)
            finally:
                await db.close()

            deadline = time.monotonic() + 120
            while not synced(families := await scrape(prometheus, metrics_url)):
                assert time.monotonic() < deadline, f"no ok sync in a scrape:\n{service.log()[-3000:]}"
                await asyncio.sleep(POLL)
            card = await browser.get(f"/api/v1/accounts/{account}/correspondents/{correspondent}")
            assert card.status == 200, await card.text()
            assert (await browser.get("/metrics")).status == 404  # not on the public port
            families = await scrape(prometheus, metrics_url)
            text = await (await prometheus.get(metrics_url)).text()

        # harvest's, through its snapshot
        assert value(families, "inboxlens_harvest_snapshot_state", "inboxlens_harvest_snapshot_state", state="ok") == 1
        assert value(families, "inboxlens_harvest_syncs", "inboxlens_harvest_syncs_total", outcome="ok") >= 1
        assert value(families, "inboxlens_harvest_messages", "inboxlens_harvest_messages_total") == wanted
        assert value(families, "inboxlens_harvest_sync_duration_seconds",
                     "inboxlens_harvest_sync_duration_seconds_count") >= 1
        assert value(families, "inboxlens_harvest_folds", "inboxlens_harvest_folds_total", outcome="ok") >= 1
        assert value(families, "inboxlens_harvest_fold_duration_seconds",
                     "inboxlens_harvest_fold_duration_seconds_count") >= 1
        assert value(families, "inboxlens_vault_requests", "inboxlens_vault_requests_total",
                     process="harvest", op="get", outcome="ok") >= 1
        assert value(families, "inboxlens_vault_refreshes", "inboxlens_vault_refreshes_total", process="harvest") >= 1
        # web's own
        assert value(families, "inboxlens_vault_requests", "inboxlens_vault_requests_total",
                     process="web", op="set", outcome="ok") == 1
        assert value(families, "inboxlens_web_request_duration_seconds", "inboxlens_web_request_duration_seconds_count",
                     route=CARD_ROUTE, method="GET", status="2xx") == 1
        assert {s.labels["state"]: s.value for s in families["inboxlens_accounts"].samples} == \
            {"active": 1, "reauth_required": 0, "error": 0, "disconnected": 0}
        assert CAROL not in text and correspondent not in text and "@" not in text

        code, log = await asyncio.to_thread(service.stop)
        assert code == 0, log[-3000:]
        assert "cannot write the metrics snapshot" not in log
    finally:
        await asyncio.to_thread(dovecot.stop)
        await oauth.stop()
