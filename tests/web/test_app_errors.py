"""A page's unexpected error: a styled 500 with the usual headers, and a log line that says where
it happened but not what the exception said (it may quote a form field, a cookie or a token)."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

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

