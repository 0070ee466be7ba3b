"""Prometheus metrics, on a listener of their own (``web.metrics_listen``; off by default).

Not on the public port: the listener is a second aiohttp site with one route, ``GET
/metrics``, and binds only a loopback address unless ``web.metrics_allow_remote`` says
otherwise (``config.schema.WebConfig.metrics_address``). It asks for no credential, so
whoever can reach it can read the counts below: nothing in them names an account, an
address or a path as requested (routes are their templates), and each label takes a
bounded set of values. On loopback it answers only a Host that is an IP address or
``localhost``, so a web page cannot read it through DNS rebinding.

Gathered at each scrape:

- web's own: request latency by route template, method and status class (``RequestMetrics``,
  a middleware of the public app); its vault client's calls; accounts by state (one query);
- harvest's: the snapshot it writes every few seconds (``inboxlens/observability.py``),
  checked strictly; its state and age are gauges of their own, and a bad or stale one
  contributes nothing else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from pathlib import Path
from typing import Awaitable, Callable, Iterable

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inboxlens.config.schema import Config
from inboxlens.errors import StartError
from inboxlens.observability import (DURATION_BUCKETS, FAMILIES, STATES, Sample, family_name, read_snapshot,
                                     snapshot_dir, vault_samples)
from inboxlens.vault.client import VaultClient
from inboxlens.web.state import DB, VAULT

log = logging.getLogger("inboxlens.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ACCOUNT_STATES = ("active", "reauth_required", "error", "disconnected")  # mail_accounts.status's CHECK
QUERY_SECONDS = 5.0


class RequestMetrics:
    """Latency of the public app's requests, by route template (never the path as sent)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.seconds = Histogram("inboxlens_web_request_duration_seconds",
                                 "Time to answer HTTP requests, by route template, method and status class.",
                                 ("route", "method", "status"), registry=self.registry, buckets=DURATION_BUCKETS)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        try:
            response = await handler(request)
        except web.HTTPException as e:
            self._observe(request, e.status, started)
            raise
        except Exception:
            self._observe(request, 500, started)  # what aiohttp answers for it
            raise
        self._observe(request, response.status, started)
        return response

    def _observe(self, request: web.Request, status: int, started: float) -> None:
        """A request cancelled (client gone, shutdown) got no answer and is not counted."""
        self.seconds.labels(route_of(request), method_of(request), f"{status // 100}xx").observe(
            time.monotonic() - started)

    def families(self) -> list[Metric]:
        return [_without_created(f) for f in self.registry.collect()]


REQUEST_METRICS = web.AppKey("request_metrics", RequestMetrics)


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def method_of(request: web.Request) -> str:
    return request.method if request.method in METHODS else "other"


def ip_or_localhost(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return True


def _without_created(family: Metric) -> Metric:
    family.samples = [s for s in family.samples if not s.name.endswith("_created")]
    return family


class Exporter:
    """What one scrape gathers, from web's process and harvest's snapshot."""

    def __init__(self, pool: asyncpg.Pool, requests: RequestMetrics, vault: VaultClient, snapshots: Path,
                 any_host: bool = False) -> None:
        self.pool = pool
        self.requests = requests
        self.vault = vault
        self.snapshots = snapshots
        self.any_host = any_host

    async def scrape(self, request: web.Request) -> web.Response:
        if not self.any_host and not ip_or_localhost(request.url.host):
            # A web page whose name was rebound to 127.0.0.1 sends its own name: it may not read this.
            return web.Response(status=403, text="Scrape this listener by its IP address (or localhost).\n")
        families = [*self.requests.families(), *await self._accounts(), *self._harvest_and_vault()]
        return web.Response(body=render(families), headers={"Content-Type": CONTENT_TYPE_LATEST,
                                                            "Cache-Control": "no-store"})

    async def _accounts(self) -> list[Metric]:
        try:
            async with asyncio.timeout(QUERY_SECONDS):  # the wait for a pool connection too, not only the query
                rows = await self.pool.fetch("SELECT status, count(*) AS n FROM mail_accounts GROUP BY status")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            log.warning("metrics: cannot count accounts by state (%s); left out of this scrape", type(e).__name__)
            return []
        counts = {row["status"]: row["n"] for row in rows}
        gauge = GaugeMetricFamily("inboxlens_accounts", "Connected mail accounts by state.", labels=("state",))
        for state in ACCOUNT_STATES:
            gauge.add_metric((state,), counts.get(state, 0))
        return [gauge]

    def _harvest_and_vault(self) -> list[Metric]:
        now = time.time()
        snapshot = read_snapshot(self.snapshots, now)
        state = GaugeMetricFamily("inboxlens_harvest_snapshot_state", "Harvest's metrics snapshot as web last "
                                  "read it: 1 for the state it is in; its samples count only when ok.",
                                  labels=("state",))
        for name in STATES:
            state.add_metric((name,), 1 if snapshot.state == name else 0)
        families = [state]
        if snapshot.age is not None:
            families.append(GaugeMetricFamily("inboxlens_harvest_snapshot_age_seconds",
                                              "Seconds since harvest wrote its metrics snapshot.", snapshot.age))
        return families + shared_families([*snapshot.samples, *vault_samples(self.vault, "web")])


def shared_families(samples: Iterable[Sample]) -> list[Metric]:
    """Samples of ``observability.FAMILIES`` (checked already) grouped into their families."""
    families: dict[str, Metric] = {}
    for name, labels, value in samples:
        base = family_name(name)
        if base is not None:
            family = FAMILIES[base]
            families.setdefault(base, Metric(base, family.help, family.kind)).add_sample(name, labels, value)
    return list(families.values())


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def render(families: list[Metric]) -> bytes:
    """The text exposition format, written by the reference library."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry)


def make_metrics_app(exporter: Exporter) -> web.Application:
    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", exporter.scrape)
    return app


async def start(config: Config, app: web.Application) -> web.AppRunner | None:
    """Serve ``/metrics`` for ``app`` on ``web.metrics_listen``; None when that is off (the default)."""
    address = config.web.metrics_address()
    if address is None:
        return None
    exporter = Exporter(app[DB], app[REQUEST_METRICS], app[VAULT], snapshot_dir(config.runtime_dir),
                        any_host=config.web.metrics_allow_remote)
    runner = web.AppRunner(make_metrics_app(exporter), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, *address).start()
    except OSError as e:
        await runner.cleanup()
        raise StartError(f"cannot listen on web.metrics_listen {config.web.metrics_listen} ({e.strerror})") from None
    log.info("metrics on http://%s/metrics", config.web.metrics_listen)
    return runner
