"""The API's error middleware in process: an unexpected exception is a bare 500 in the JSON shape."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inboxlens.web.api.errors import ApiError, errors


PASSWORD = "hunter2"  # out of the frame's source line: the log shows the source of each frame


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError(f"database password is {PASSWORD}")


async def refused(request: web.Request) -> web.Response:
    raise ApiError(409, "needs_reconnect", "Reconnect first.", {"X-Why": "test"})


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


@pytest.fixture
async def client() -> TestClient:  # type: ignore[misc]
    app = web.Application(middlewares=[errors])
    app.router.add_get("/broken", broken)
    app.router.add_get("/refused", refused)
    app.router.add_get("/redirect", redirect)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_an_unexpected_exception_says_nothing_about_itself(client: TestClient, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.ERROR, "inboxlens.web.api"):
        response = await client.get("/broken?token=ilk_secret")
    body = await response.json()
    assert response.status == 500 and body == {"error": {"code": "internal_error", "message": body["error"]["message"]}}
    assert "hunter2" not in str(body) and "RuntimeError" not in str(body)
    assert "GET /broken failed: RuntimeError" in caplog.text and "ilk_secret" not in caplog.text
    assert "hunter2" not in caplog.text  # where it failed is logged, not what it said


async def test_api_errors_keep_their_status_code_and_headers(client: TestClient):
    response = await client.get("/refused")
    assert response.status == 409 and response.headers["X-Why"] == "test"
    assert await response.json() == {"error": {"code": "needs_reconnect", "message": "Reconnect first."}}


async def test_aiohttps_own_answers_become_json(client: TestClient):
    missing = await client.get("/nope")
    wrong = await client.post("/refused")
    assert (missing.status, (await missing.json())["error"]["code"]) == (404, "not_found")
    assert (wrong.status, (await wrong.json())["error"]["code"]) == (405, "method_not_allowed")
    assert "GET" in wrong.headers["Allow"]
    moved = await client.get("/redirect", allow_redirects=False)
    assert moved.status == 302  # not an error: passed through untouched
