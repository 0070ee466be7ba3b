"""A real web process with its metrics listener on: what a scrape gets, and what the public port does not."""

from __future__ import annotations

import socket
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inboxlens.harvest.scheduler import Telemetry
from inboxlens.observability import SNAPSHOT_NAME, snapshot_dir, write_snapshot
from inboxlens.web.exporter import ACCOUNT_STATES
from tests.support.webproc import free_port, make_web
from tests.web.conftest import Stack, providers

pytestmark = pytest.mark.slow


@pytest.fixture
def web_settings() -> dict[str, Any]:
    return {"metrics_listen": f"127.0.0.1:{free_port()}"}


def metrics_url(stack: Stack) -> str:
    return f"http://{stack.web.slice['config']['web']['metrics_listen']}/metrics"


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as answer:
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain; version=")
        return {f.name: f for f in text_string_to_metric_families(await answer.text())}


def value(family: Any, sample: str, **labels: str) -> float:
    found = [s.value for s in family.samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, (sample, labels, family.samples)
    return float(found[0])


def snapshot_state(families: dict[str, Any]) -> str:
    [state] = [s.labels["state"] for s in families["inboxlens_harvest_snapshot_state"].samples if s.value == 1]
    return str(state)


async def test_the_listener_serves_web_and_harvest_metrics_and_the_public_port_none(stack: Stack):
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.web.url + "/healthz") as answer:
            assert answer.status == 200  # web asked the vault for its key: a counted vault call
        async with session.get(stack.web.url + "/metrics") as answer:
            assert answer.status == 404
        families = await scrape(session, metrics_url(stack))
        assert snapshot_state(families) == "missing" and "inboxlens_harvest_syncs" not in families
        assert value(families["inboxlens_web_request_duration_seconds"],
                     "inboxlens_web_request_duration_seconds_count", route="/healthz", method="GET", status="2xx") == 1
        assert value(families["inboxlens_vault_requests"], "inboxlens_vault_requests_total",
                     process="web", op="public_key", outcome="ok") >= 1
        assert {s.labels["state"]: s.value for s in families["inboxlens_accounts"].samples} == \
            {state: 0 for state in ACCOUNT_STATES}

        telemetry = Telemetry()
        telemetry.syncs.labels("ok").inc(3)
        directory = snapshot_dir(stack.vault.runtime_dir)
        directory.mkdir(mode=0o750)
        write_snapshot(directory, telemetry.samples(), time.time())
        families = await scrape(session, metrics_url(stack))
        assert snapshot_state(families) == "ok"
        assert 0 <= value(families["inboxlens_harvest_snapshot_age_seconds"],
                          "inboxlens_harvest_snapshot_age_seconds") < 60
        assert value(families["inboxlens_harvest_syncs"], "inboxlens_harvest_syncs_total", outcome="ok") == 3

        (directory / SNAPSHOT_NAME).write_text('{"format": "inboxlens-harvest-metrics/1"}')
        families = await scrape(session, metrics_url(stack))
        assert snapshot_state(families) == "malformed" and "inboxlens_harvest_syncs" not in families
        assert "inboxlens_vault_requests" in families  # web's own numbers stay

        rebound = {"Host": "attacker.example:" + metrics_url(stack).split(":")[2].split("/")[0]}
        async with session.get(metrics_url(stack), headers=rebound) as answer:
            assert answer.status == 403  # a page whose name was rebound to 127.0.0.1 reads nothing
        async with session.get(metrics_url(stack).replace("127.0.0.1", "localhost")) as answer:
            assert answer.status == 200
        async with session.post(metrics_url(stack)) as answer:
            assert answer.status == 405
        async with session.get(metrics_url(stack).removesuffix("metrics")) as answer:
            assert answer.status == 404


async def test_web_does_not_start_when_the_metrics_address_is_taken(tmp_path, pg_db: str, stack: Stack):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = make_web(tmp_path / "second", stack.vault.state_dir, stack.vault.runtime_dir, pg_db,
                         providers(stack.oauth), {"metrics_listen": f"127.0.0.1:{port}"})
        (tmp_path / "second").mkdir()
        with pytest.raises(RuntimeError, match="did not start"):
            await other.start()
    assert f"cannot listen on web.metrics_listen 127.0.0.1:{port}" in other.log()
