"""A page's unexpected error: a styled 500 with the usual headers, and a log line that says where
it happened but not what the exception said (it may quote a form field, a cookie or a token)."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inboxlens.web.api.errors import errors as api_errors
from inboxlens.web.app import headers

SECRET = "refresh-token-5d1c9e"


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError(f"could not store {SECRET}")


@pytest.fixture
async def client() -> TestClient:  # type: ignore[misc]
    app = web.Application(middlewares=[headers])
    app.router.add_get("/broken", broken)
    app.router.add_get("/api/v1/broken", broken)
    app.router.add_get("/cards/{address}", broken)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_a_pages_unexpected_error_is_a_page_and_its_message_is_not_logged(client: TestClient,
                                                                                caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.ERROR):
        page = await client.get("/broken")
        api = await client.get("/api/v1/broken")
    text = await page.text()
    assert page.status == 500 and page.content_type == "text/html" and "Something went wrong" in text
    assert "Content-Security-Policy" in page.headers and SECRET not in text and "RuntimeError" not in text
    assert api.status == 500 and (await api.json())["error"]["code"] == "internal_error"
    assert "GET /broken failed: RuntimeError" in caplog.text and "broken" in caplog.text  # where: the frames
    assert SECRET not in caplog.text


async def test_the_log_names_the_route_not_the_address_in_the_path(client: TestClient,
                                                                   caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.ERROR):
        assert (await client.get("/cards/bob@example.test")).status == 500
    assert "GET /cards/{address} failed" in caplog.text and "bob@example.test" not in caplog.text


async def _no_database(request: web.Request) -> web.Response:
    """What a page meets while PostgreSQL restarts: nothing listens on its port yet."""
    import socket
    with socket.socket() as s:  # a loopback port that was free a moment ago, and listened on by nobody
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await asyncpg.connect(f"postgresql://inboxlens@127.0.0.1:{port}/inboxlens", timeout=5)
    return web.Response(text="unreachable")


async def _closed_pool(request: web.Request) -> web.Response:
    """What a page meets when its pool is gone (the process shuts down, or the pool was reset)."""
    pool = asyncpg.create_pool(min_size=0)  # never opened: acquire says it is not initialized
    await pool.fetchval("SELECT 1")
    return web.Response(text="unreachable")


@pytest.fixture
async def database_down() -> TestClient:  # type: ignore[misc]
    app = web.Application(middlewares=[headers])
    api = web.Application(middlewares=[api_errors])
    for path, handler in (("/refused", _no_database), ("/closed", _closed_pool)):
        app.router.add_get(path, handler)
        api.router.add_get(path, handler)
    app.add_subapp("/api/v1", api)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.mark.parametrize("path", ["/refused", "/closed"])
async def test_a_database_that_does_not_answer_is_a_503_to_retry_not_a_500(database_down: TestClient, path: str,
                                                                         caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        page = await database_down.get(path)
        api = await database_down.get("/api/v1" + path)
    text = await page.text()
    assert page.status == 503 and "database did not answer" in text and "Try again" in text, (page.status, text)
    assert page.headers["Retry-After"] == "5" and "Content-Security-Policy" in page.headers
    assert api.status == 503 and api.headers["Retry-After"] == "5"
    assert (await api.json())["error"]["code"] == "database_unavailable"
    assert f"GET {path}: the database did not answer" in caplog.text
    assert "Traceback" not in caplog.text and "127.0.0.1" not in caplog.text  # a class name, never a DSN
