"""The OpenAPI document against the code: every route documented, every documented operation routed."""

from __future__ import annotations

import re
from typing import Any, Iterator

import schemathesis
from aiohttp import web

from inboxlens.web.api.routes import PREFIX, PUBLIC
from inboxlens.web.app import make_app
from inboxlens.web.api.openapi import DOCUMENT


def api_routes() -> set[tuple[str, str]]:
    """(method, path under /api/v1) of every route the real app serves under the prefix."""
    found = set()
    for route in make_app().router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith(PREFIX + "/") and route.method != "*":
            found.add((route.method, path[len(PREFIX):]))
    return found


def documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item}


def test_every_route_is_documented_and_every_operation_routed():
    routes = api_routes()
    assert ("GET", "/me") in routes and len(routes) == 12
    assert routes - documented() == set(), "routes missing from the OpenAPI document"
    assert documented() - routes == set(), "documented operations the app does not serve"


def test_path_parameters_match_the_templates():
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), (method, path)


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_every_authenticated_operation_documents_its_errors():
    public = {op["operationId"] for _, _, op in operations() if op.get("security") == []}
    assert public == set(PUBLIC)
    for method, path, operation in operations():
        if operation["operationId"] in public:
            continue
        codes = set(operation["responses"])
        assert {"401", "404", "429", "500"} <= codes, (method, path)
        if method in ("post", "delete"):
            assert "403" in codes, (method, path)  # csrf_failed for cookie callers
        if any(p["in"] == "query" or p["name"] == "address" for p in operation.get("parameters", [])):
            assert "400" in codes, (method, path)


def test_every_reference_resolves():
    text = repr(DOCUMENT)
    for kind, name in set(re.findall(r"#/components/(\w+)/(\w+)", text)):
        assert name in DOCUMENT["components"][kind], f"{kind}/{name}"
    assert DOCUMENT["components"]["responses"]["RateLimited"]["headers"]["Retry-After"]["required"] is True


def test_schemathesis_reads_every_operation():
    schema = schemathesis.openapi.from_dict(DOCUMENT)
    loaded = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in loaded} == documented()


def test_the_api_is_a_sub_application():
    mounted = [r for r in make_app().router.resources() if isinstance(r, web.PrefixedSubAppResource)]
    assert [r.canonical for r in mounted] == [PREFIX]
