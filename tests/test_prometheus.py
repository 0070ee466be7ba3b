"""Prometheus metrics (issue 13.9): harvest's snapshot and web's strict reading of it, the
vault client's counts, the listener's address rules, and what the CLI does not load."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inboxlens.config import loader as config
from inboxlens.config.schema import Config
from inboxlens.errors import ConfigError, ReauthRequired
from inboxlens.harvest.scheduler import Scheduler, Telemetry, _TimedFold
from inboxlens.metrics.model import AccountRef, FoldResult
from inboxlens.observability import (FORMAT, MAX_SAMPLES, MAX_SNAPSHOT_BYTES, SNAPSHOT_NAME, STALE_SECONDS, Sample,
                                     parse_snapshot, read_snapshot, vault_samples, write_snapshot)
from inboxlens.service_errors import VaultUnavailable
from inboxlens.vault import protocol
from inboxlens.vault.client import VaultClient
from inboxlens.web.exporter import render, shared_families

NOW = 1_800_000_000.0


def telemetry_samples() -> list[Sample]:
    t = Telemetry()
    t.syncs.labels("ok").inc(2)
    t.syncs.labels("failed").inc()
    t.sync_seconds.observe(0.3)
    t.sync_seconds.observe(42.0)
    t.messages.inc(17)
    t.folds.labels("ok").inc()
    t.fold_seconds.observe(0.02)
    return t.samples()


def snapshot_bytes(samples: list[Any], written_at: float = NOW, **extra: Any) -> bytes:
    return json.dumps({"format": FORMAT, "written_at": written_at, "samples": samples, **extra}).encode()


def scraped(samples: list[Sample]) -> dict[str, Any]:
    """Rendered as web serves it, parsed by the reference parser: family name -> family."""
    text = render(shared_families(samples)).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(family: Any, sample: str, **labels: str) -> float:
    found = [s.value for s in family.samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, (sample, labels, family.samples)
    return float(found[0])


# -- the snapshot, written by harvest and read back by web


def test_what_harvest_writes_web_reads_back_and_serves(tmp_path: Path):
    write_snapshot(tmp_path, telemetry_samples(), NOW)
    snapshot = read_snapshot(tmp_path, NOW + 3)
    assert snapshot.state == "ok" and snapshot.age == 3
    families = scraped(list(snapshot.samples))
    assert value(families["inboxlens_harvest_syncs"], "inboxlens_harvest_syncs_total", outcome="ok") == 2
    assert value(families["inboxlens_harvest_syncs"], "inboxlens_harvest_syncs_total", outcome="failed") == 1
    assert value(families["inboxlens_harvest_messages"], "inboxlens_harvest_messages_total") == 17
    durations = families["inboxlens_harvest_sync_duration_seconds"]
    assert durations.type == "histogram"
    assert value(durations, "inboxlens_harvest_sync_duration_seconds_count") == 2
    assert value(durations, "inboxlens_harvest_sync_duration_seconds_bucket", le="0.5") == 1
    assert value(durations, "inboxlens_harvest_sync_duration_seconds_bucket", le="+Inf") == 2
    assert value(families["inboxlens_harvest_fold_duration_seconds"],
                 "inboxlens_harvest_fold_duration_seconds_sum") == pytest.approx(0.02)
    assert not [s for f in families.values() for s in f.samples if s.name.endswith("_created")]


def test_the_snapshot_is_replaced_whole_and_readable_through_its_directory_only(tmp_path: Path):
    write_snapshot(tmp_path, telemetry_samples(), NOW)
    write_snapshot(tmp_path, [], NOW + 5)
    assert [p.name for p in tmp_path.iterdir()] == [SNAPSHOT_NAME]  # no temporary file left behind
    assert stat.S_IMODE((tmp_path / SNAPSHOT_NAME).stat().st_mode) == 0o644
    assert read_snapshot(tmp_path, NOW + 5).samples == ()


async def test_harvest_starts_by_removing_what_a_killed_harvest_left_half_written(tmp_path: Path):
    (tmp_path / ".harvest-k1ll3d.tmp").write_text('{"format": ')
    scheduler = Scheduler(None, VaultClient(tmp_path / "v.sock"), None, {}, None,  # type: ignore[arg-type]
                          interval=None, metrics=object(), snapshot=tmp_path)  # type: ignore[arg-type]
    stopping = asyncio.Event()
    stopping.set()  # no round: start, write, stop
    assert await scheduler.run(stopping, tick=1.0)
    assert [p.name for p in tmp_path.iterdir()] == [SNAPSHOT_NAME]
    assert read_snapshot(tmp_path, time.time()).state == "ok"


def test_a_snapshot_over_the_cap_is_never_written(tmp_path: Path):
    write_snapshot(tmp_path, [], NOW)
    many = [("inboxlens_harvest_messages_total", {}, 1.0)] * 3000
    with pytest.raises(ValueError, match="over"):
        write_snapshot(tmp_path, many, NOW + 1)
    assert [p.name for p in tmp_path.iterdir()] == [SNAPSHOT_NAME]
    assert read_snapshot(tmp_path, NOW + 1).state == "ok"  # the previous one stays


def test_missing_stale_and_oversized_snapshots_are_dropped(tmp_path: Path):
    assert read_snapshot(tmp_path / "absent", NOW).state == "missing"
    assert read_snapshot(tmp_path, NOW).state == "missing"
    write_snapshot(tmp_path, telemetry_samples(), NOW)
    stale = read_snapshot(tmp_path, NOW + STALE_SECONDS + 1)
    assert stale.state == "stale" and stale.samples == () and stale.age == STALE_SECONDS + 1
    assert read_snapshot(tmp_path, NOW - STALE_SECONDS - 1).state == "stale"  # written "in the future"
    (tmp_path / SNAPSHOT_NAME).write_bytes(b" " * (MAX_SNAPSHOT_BYTES + 1))
    assert read_snapshot(tmp_path, NOW).state == "too_large"


def test_a_link_or_a_fifo_in_place_of_the_snapshot_is_not_followed(tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_snapshot(elsewhere, telemetry_samples(), NOW)
    directory = tmp_path / "snapshots"
    directory.mkdir()
    (directory / SNAPSHOT_NAME).symlink_to(elsewhere / SNAPSHOT_NAME)
    assert read_snapshot(directory, NOW).state == "malformed"
    (directory / SNAPSHOT_NAME).unlink()
    os.mkfifo(directory / SNAPSHOT_NAME)  # opening it must not wait for a writer
    assert read_snapshot(directory, NOW).state == "malformed"


GOOD = ["inboxlens_harvest_syncs_total", {"outcome": "ok"}, 1]


@pytest.mark.parametrize(("body", "why"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[]", "not an object"),
    (snapshot_bytes([GOOD], extra=1), "an extra field"),
    (json.dumps({"format": FORMAT, "samples": [GOOD]}).encode(), "no written_at"),
    (json.dumps({"format": "other/1", "written_at": NOW, "samples": [GOOD]}).encode(), "another format"),
    (snapshot_bytes([GOOD], written_at="now"), "written_at not a number"),  # type: ignore[arg-type]
    (snapshot_bytes([GOOD] * (MAX_SAMPLES + 1)), "too many samples"),
    (snapshot_bytes([["inboxlens_harvest_syncs_total", {"outcome": "ok"}]]), "no value"),
    (snapshot_bytes([["process_cpu_seconds_total", {}, 1]]), "a family harvest does not report"),
    (snapshot_bytes([["inboxlens_harvest_syncs", {"outcome": "ok"}, 1]]), "a counter without _total"),
    (snapshot_bytes([["inboxlens_harvest_syncs_total", {}, 1]]), "a label missing"),
    (snapshot_bytes([["inboxlens_harvest_syncs_total", {"outcome": "ok", "account": "7"}, 1]]), "an extra label"),
    (snapshot_bytes([["inboxlens_harvest_syncs_total", {"outcome": "carol@example.test"}, 1]]), "an address"),
    (snapshot_bytes([["inboxlens_harvest_syncs_total", {"outcome": "OK"}, 1]]), "upper case"),
    (snapshot_bytes([["inboxlens_harvest_syncs_total", {"outcome": 1}, 1]]), "a label that is no string"),
    (snapshot_bytes([["inboxlens_harvest_syncs_total", {"outcome": "ok"}, -1]]), "a negative count"),
    (snapshot_bytes([["inboxlens_harvest_syncs_total", {"outcome": "ok"}, True]]), "a boolean"),
    (snapshot_bytes([["inboxlens_harvest_syncs_total", {"outcome": "ok"}, float("nan")]]), "NaN"),
    (snapshot_bytes([["inboxlens_harvest_syncs_total", {"outcome": "ok"}, "1"]]), "a string value"),
    (snapshot_bytes([["inboxlens_harvest_sync_duration_seconds_bucket", {"le": "0.3"}, 1]]), "a bucket not ours"),
    (snapshot_bytes([["inboxlens_harvest_sync_duration_seconds_sum", {"le": "+Inf"}, 1]]), "le on a sum"),
    (snapshot_bytes([["inboxlens_vault_refreshes_total", {"process": "web"}, 1]]), "speaking for web"),
])
def test_a_malformed_snapshot_is_dropped_whole(tmp_path: Path, body: bytes, why: str):
    (tmp_path / SNAPSHOT_NAME).write_bytes(body)
    snapshot = read_snapshot(tmp_path, NOW)
    assert (snapshot.state, snapshot.samples) == ("malformed", ()), why
    with pytest.raises(ValueError):
        parse_snapshot(body)


# -- the vault client counts its own calls


class FakeVault:
    """Answers each request from a list: ("ok", result) or (error code, message)."""

    def __init__(self, path: Path, answers: list[tuple[str, Any]]) -> None:
        self.path = path
        self.answers = answers
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> "FakeVault":
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(protocol.LENGTH.size)
                request = protocol.decode_body(await reader.readexactly(protocol.check_length(header, 65536)))
                kind, payload = self.answers.pop(0)
                answer = (protocol.ok(request["id"], payload) if kind == "ok" else
                          protocol.error(request["id"], kind, payload))
                writer.write(protocol.encode(answer))
        except asyncio.IncompleteReadError:
            writer.close()


async def test_the_vault_client_counts_answers_and_new_tokens(tmp_path: Path):
    token = {"access_token": "ya29.secret-token", "expires_at": NOW + 3600}
    answers = [("ok", token), ("ok", token), ("ok", {**token, "expires_at": NOW + 7200}),
               ("reauth_required", "reconnect it"), ("strange_code", "?")]
    async with FakeVault(tmp_path / "v.sock", answers):
        client = VaultClient(tmp_path / "v.sock")
        for _ in range(3):
            await client.get("7")
        with pytest.raises(ReauthRequired):
            await client.get("7")
        with pytest.raises(Exception):
            await client.get("8")
        await client.close()
    assert client.outcomes == {("get", "ok"): 3, ("get", "reauth_required"): 1, ("get", "error"): 1}
    assert client.refreshes == 2  # the first token, then the one with a new expiry
    samples = vault_samples(client, "harvest")
    assert ("inboxlens_vault_requests_total", {"process": "harvest", "op": "get", "outcome": "ok"}, 3.0) in samples
    assert ("inboxlens_vault_refreshes_total", {"process": "harvest"}, 2.0) in samples
    assert "secret-token" not in json.dumps(samples) and '"7"' not in json.dumps(samples)


async def test_an_unreachable_vault_is_counted_as_unavailable(tmp_path: Path):
    client = VaultClient(tmp_path / "none.sock")
    with pytest.raises(VaultUnavailable):
        await client.public_key()
    with pytest.raises(VaultUnavailable):
        await client.call("no_such_op")
    assert client.outcomes == {("public_key", "unavailable"): 1, ("unknown", "unavailable"): 1}


# -- harvest's side


class FoldingStore:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def aggregate(self, account: AccountRef, *, batch_size: int = 1) -> FoldResult:
        if self.fail:
            raise OSError("store away")
        return FoldResult(taken=3, folded=3)

    async def sweep(self) -> int:
        return 4


async def test_a_timed_fold_counts_each_outcome_and_passes_the_rest_through():
    telemetry = Telemetry()
    ok, failing = _TimedFold(FoldingStore(False), telemetry), _TimedFold(FoldingStore(True), telemetry)  # type: ignore
    assert ok.outcome == "failed"  # no fold yet: the sync failed before it
    assert (await ok.aggregate(AccountRef(1, "a@example.test", "UTC"))).folded == 3
    with pytest.raises(OSError):
        await failing.aggregate(AccountRef(1, "a@example.test", "UTC"))
    assert (ok.outcome, failing.outcome) == ("ok", "fold_failed")
    assert await ok.sweep() == 4
    samples = {(n, tuple(sorted(labels.items()))): v for n, labels, v in telemetry.samples()}
    assert samples[("inboxlens_harvest_folds_total", (("outcome", "ok"),))] == 1
    assert samples[("inboxlens_harvest_folds_total", (("outcome", "failed"),))] == 1
    assert samples[("inboxlens_harvest_fold_duration_seconds_count", ())] == 2


def test_a_snapshot_harvest_cannot_write_is_logged_once_and_harvest_goes_on(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture):
    blocker = tmp_path / "file"
    blocker.write_text("")
    scheduler = Scheduler(None, VaultClient(tmp_path / "v.sock"), None, {}, None,  # type: ignore[arg-type]
                          interval=None, metrics=object(), snapshot=blocker / "harvest-metrics")  # type: ignore
    with caplog.at_level(logging.WARNING, "inboxlens.harvest"):
        scheduler.write_snapshot()
        scheduler.write_snapshot()
    assert len([r for r in caplog.records if "metrics snapshot" in r.getMessage()]) == 1
    scheduler.snapshot = tmp_path / "harvest-metrics"
    scheduler.write_snapshot()  # development mode: harvest makes the directory itself
    assert read_snapshot(scheduler.snapshot, time.time()).state == "ok"
    assert stat.S_IMODE(scheduler.snapshot.stat().st_mode) == 0o700


# -- the listener's address


def load(**web: str) -> Config:
    env = {"HOME": "/nonexistent", **{f"INBOXLENS_WEB__{k.upper()}": v for k, v in web.items()}}
    return config.load(None, env)


def test_the_metrics_listener_is_off_by_default():
    web = load().web
    assert web.metrics_listen == "" and web.metrics_address() is None and not web.metrics_allow_remote


@pytest.mark.parametrize(("listen", "address"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), ("127.0.0.53:1", ("127.0.0.53", 1)), ("[::1]:9464", ("::1", 9464))])
def test_a_loopback_address_is_taken(listen: str, address: tuple[str, int]):
    assert load(metrics_listen=listen).web.metrics_address() == address


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "192.0.2.10:9464", "[::]:9464"])
def test_a_public_address_is_refused_unless_asked_for(listen: str):
    with pytest.raises(ConfigError, match="web.metrics_listen: .* not a loopback address.*metrics_allow_remote"):
        load(metrics_listen=listen)
    assert load(metrics_listen=listen, metrics_allow_remote="true").web.metrics_address() is not None


@pytest.mark.parametrize("listen", ["localhost:9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                                    "127.0.0.1:94a", "::1:9464", "[127.0.0.1]:9464", ":9464", "[::1]"])
def test_a_malformed_address_is_refused_clearly(listen: str):
    with pytest.raises(ConfigError, match=r"web.metrics_listen: .* is not an IP address and port like"):
        load(metrics_listen=listen)


def test_the_cli_and_supervisor_do_not_load_prometheus_client():
    code = "import sys, inboxlens.cli, inboxlens.supervisor; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_a_scrape_does_not_wait_on_a_busy_pool_longer_than_its_bound(tmp_path: Path, monkeypatch, caplog):
    """The count of accounts is left out when no database connection frees up in time (the pool's
    wait is bounded too, not only the query)."""
    from inboxlens.web import exporter

    class BusyPool:  # every connection taken: acquiring waits forever
        async def fetch(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.Event().wait()

    monkeypatch.setattr(exporter, "QUERY_SECONDS", 0.05)
    scrape = exporter.Exporter(BusyPool(), exporter.RequestMetrics(), None, tmp_path)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        assert await asyncio.wait_for(scrape._accounts(), 5) == []
    assert "cannot count accounts by state (TimeoutError)" in caplog.text
