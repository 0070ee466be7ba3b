"""A database that does not answer is a 503 with Retry-After ("try again"), not a 500; a bug
that merely passes through asyncpg, or a socket error that is not the database's, stays a 500.

Real asyncpg against the embedded PostgreSQL: a port nobody listens on (PostgreSQL restarting),
a backend terminated mid-transaction (as when the server is killed: the rollback then fails
with an InterfaceError caused by the lost connection), and asyncpg misused (a bug).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inboxlens.web.api.errors import errors as api_errors
from inboxlens.web.app import headers
from inboxlens.web.state import database_down

DSN = web.AppKey("dsn", str)


async def refused(request: web.Request) -> web.Response:
    with socket.socket() as s:  # a loopback port that was free a moment ago, and listened on by nobody
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await asyncpg.connect(f"postgresql://inboxlens@127.0.0.1:{port}/inboxlens", timeout=5)
    return web.Response(text="unreachable")


async def killed(request: web.Request) -> web.Response:
    dsn = request.app[DSN]
    conn, admin = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1")
            await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            await conn.execute("SELECT 2")
    finally:
        conn.terminate()
        await admin.close()
    return web.Response(text="unreachable")


async def misused(request: web.Request) -> web.Response:
    conn = await asyncpg.connect(request.app[DSN])
    try:
        await conn.fetchval("SELECT $1::int")  # one argument expected, none given: our bug
    finally:
        await conn.close()
    return web.Response(text="unreachable")


async def hung_up(request: web.Request) -> web.Response:
    raise ConnectionResetError("Connection lost")  # as aiohttp says of a browser gone mid-body


ROUTES = {"/refused": refused, "/killed": killed, "/misused": misused, "/hung-up": hung_up}


@pytest.fixture
async def client(pg_db: str) -> AsyncIterator[TestClient]:
    app = web.Application(middlewares=[headers])
    api = web.Application(middlewares=[api_errors])
    app[DSN] = api[DSN] = pg_db
    for path, handler in ROUTES.items():
        app.router.add_get(path, handler)
        app.router.add_get("/api/v1/direct" + path, handler)  # an API path the outer middleware answers
        api.router.add_get(path, handler)
    app.add_subapp("/api/v1", api)
    async with TestClient(TestServer(app)) as running:
        yield running


@pytest.mark.parametrize("path", ["/refused", "/killed"])
async def test_a_database_that_does_not_answer_is_a_503_to_retry(client: TestClient, path: str,
                                                                 caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        page = await client.get(path)
        answers = [await client.get(f"/api/v1{path}"), await client.get(f"/api/v1/direct{path}")]
    text = await page.text()
    assert page.status == 503 and "database did not answer" in text and "Try again" in text, (page.status, text)
    assert page.headers["Retry-After"] == "5" and "Content-Security-Policy" in page.headers
    for api in answers:
        assert api.status == 503 and api.headers["Retry-After"] == "5"
        assert (await api.json())["error"]["code"] == "database_unavailable"
    assert f"GET {path}: the database did not answer" in caplog.text
    assert "Traceback" not in caplog.text and "127.0.0.1" not in caplog.text  # a class name, never a DSN
    assert "failed" not in caplog.text


@pytest.mark.parametrize("path", ["/misused", "/hung-up"])
async def test_a_bug_or_another_sockets_error_stays_a_500(client: TestClient, path: str,
                                                          caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        page = await client.get(path)
        api = await client.get(f"/api/v1{path}")
    assert page.status == 500 and "Retry-After" not in page.headers
    assert api.status == 500 and (await api.json())["error"]["code"] == "internal_error"
    assert f"GET {path} failed" in caplog.text and "did not answer" not in caplog.text


@pytest.mark.parametrize("attempt", range(8))  # asyncpg raises one of two errors under the kill, at random
async def test_a_connection_killed_under_a_transaction_is_the_database_down(pg_db: str, attempt: int):
    """What Transaction.__aexit__ raises when the connection died: an InterfaceError ("the
    underlying connection is closed") whose context is the lost connection, or asyncpg's
    InternalClientError (MagicStack/asyncpg#784)."""
    conn, admin = await asyncpg.connect(pg_db), await asyncpg.connect(pg_db)
    try:
        with pytest.raises(Exception) as raised:
            async with conn.transaction():
                await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
                await conn.execute("SELECT 2")
    finally:
        conn.terminate()
        await admin.close()
    assert isinstance(raised.value, asyncpg.InterfaceError)  # the rollback's, not the statement's
    assert database_down(raised.value) is not None, repr(raised.value.__context__)
    assert database_down(ValueError("x")) is None and database_down(ConnectionResetError("x")) is None
    assert database_down(asyncpg.InterfaceError("cannot perform operation: another operation is in progress")) is None


def test_the_chain_is_walked_as_python_prints_it():
    """A cause or a context is followed, a context hidden with `from None` is not; asyncpg's
    protocol and codec bugs are not the database being down."""
    def raised(outer: BaseException, inner: BaseException, hide: bool = False) -> BaseException:
        try:
            try:
                raise inner
            except BaseException:
                if hide:
                    raise outer from None
                raise outer
        except BaseException as e:
            return e
    lost = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    assert database_down(raised(asyncpg.InterfaceError("cannot roll back"), lost)) is lost
    assert database_down(raised(RuntimeError("a handler's own bug"), lost, hide=True)) is None
    assert database_down(asyncpg.exceptions.ProtocolViolationError("bad message")) is None
    assert database_down(asyncpg.exceptions.InternalClientError("missing codec information for OID 1")) is None
    under_a_query = asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation (2) is "
                                                           "in progress")
    assert database_down(under_a_query) is under_a_query
