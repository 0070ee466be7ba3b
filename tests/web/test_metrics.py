"""Web's request latency: labelled by route template, method and status class, never by the path as sent."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from inboxlens.web.app import make_app
from inboxlens.web.exporter import REQUEST_METRICS, RequestMetrics, render

FAMILY = "inboxlens_web_request_duration_seconds"


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def missing(request: web.Request) -> web.Response:
    raise web.HTTPNotFound()


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


def counts(metrics: RequestMetrics) -> dict[tuple[str, str, str], float]:
    """(route, method, status) -> requests, through the exposition format and the reference parser."""
    text = render(metrics.families()).decode()
    [family] = [f for f in text_string_to_metric_families(text) if f.name == FAMILY]
    return {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
            for s in family.samples if s.name == FAMILY + "_count"}


async def test_requests_are_counted_by_route_template_method_and_status_class():
    metrics = RequestMetrics()
    app = web.Application(middlewares=[metrics.middleware])
    app.router.add_get("/accounts/{account_id}/people/{address}", ok)
    app.router.add_get("/gone/{id}", missing)
    app.router.add_get("/broken", broken)
    api = web.Application()
    api.router.add_get("/accounts/{account_id}/correspondents/{address}", ok)
    app.add_subapp("/api/v1", api)
    async with TestClient(TestServer(app)) as client:
        for path in ("/accounts/7/people/carol@example.test", "/accounts/8/people/dave@example.test",
                     "/api/v1/accounts/7/correspondents/carol@example.test", "/gone/3", "/broken",
                     "/no/such/page/erin@example.test"):
            await client.get(path)
        await client.request("PROPFIND", "/accounts/7/people/x")  # a method no route has
    seen = counts(metrics)
    assert seen == {
        ("/accounts/{account_id}/people/{address}", "GET", "2xx"): 2,
        ("/api/v1/accounts/{account_id}/correspondents/{address}", "GET", "2xx"): 1,
        ("/gone/{id}", "GET", "4xx"): 1,
        ("/broken", "GET", "5xx"): 1,
        ("unmatched", "GET", "4xx"): 1,
        ("unmatched", "other", "4xx"): 1,
    }
    assert "@" not in render(metrics.families()).decode()


def test_the_public_app_times_its_requests_and_serves_no_metrics():
    app = make_app()
    assert app.middlewares[0] == app[REQUEST_METRICS].middleware  # outermost: it sees every answer's status
    assert not [r for r in app.router.resources() if "metrics" in r.canonical]
