"""The egress guard against real sockets: what a user's URL may reach, decided at connect time."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from inboxlens.profiles import carddav, egress
from inboxlens.profiles.carddav import AddressBook
from inboxlens.profiles.errors import AddressBookUnavailable
from tests.support.pg_tcp import free_port

PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)


class Resolver(AbstractResolver):
    """Answers from a script: each call takes the next address (the last one repeats); an empty
    script resolves nothing. Counts its calls."""

    def __init__(self, *addresses: str) -> None:
        self.addresses, self.calls = list(addresses), 0

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        self.calls += 1
        if not self.addresses:
            raise OSError(-2, "Name or service not known")
        address = self.addresses.pop(0) if len(self.addresses) > 1 else self.addresses[0]
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


class Server:
    """A loopback HTTP server that counts the requests that reached it."""

    def __init__(self) -> None:
        self.hits = 0
        self.body, self.content_type = PNG, "image/png"
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> "Server":
        async def answer(_: web.Request) -> web.Response:
            self.hits += 1
            return web.Response(body=self.body, content_type=self.content_type)
        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    running = await Server().start()
    yield running
    await running.stop()


async def get(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as answer:
        return answer.status


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
                                     "224.0.0.1", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::7f00:1",
                                     "2002:7f00:1::", "fe80::1%lo", "fc00::1", "192.0.2.1", "not an address"])
def test_addresses_that_are_not_globally_routable_are_refused(address: str):
    assert egress.refused(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700:4700::1111", "::ffff:93.184.215.14"])
def test_public_addresses_are_not(address: str):
    assert not egress.refused(address)


async def test_a_name_that_resolves_to_loopback_is_refused_unless_allowed(server: Server):
    url = f"http://photos.example:{server.port}/a.png"
    async with egress.session(allow_private=False, resolver=Resolver("127.0.0.1")) as http:
        with pytest.raises(aiohttp.ClientConnectorError):
            await get(http, url)
    assert server.hits == 0
    async with egress.session(allow_private=True, resolver=Resolver("127.0.0.1")) as http:
        assert await get(http, url) == 200
    assert server.hits == 1


async def test_a_literal_private_address_is_refused(server: Server):
    """aiohttp never resolves a literal IP: the socket factory is what refuses it."""
    async with egress.session(allow_private=False) as http:
        for host in ("127.0.0.1", "[::ffff:127.0.0.1]"):
            with pytest.raises(aiohttp.ClientConnectorError):
                await get(http, f"http://{host}:{server.port}/a.png")
    assert server.hits == 0


async def test_dns_rebinding_cannot_reach_the_private_address(server: Server):
    """The check when a URL is added sees a public answer; the connection, resolving again, gets
    loopback and is refused: the check holds for the address connected, not for an earlier look."""
    rebinding = Resolver("93.184.215.14", "127.0.0.1")
    url = f"http://dav.example:{server.port}/"
    assert await egress.check_url(url, allow_private=False, resolver=rebinding)
    async with egress.session(allow_private=False, resolver=rebinding) as http:
        with pytest.raises(aiohttp.ClientConnectorError):
            await get(http, url)
    assert server.hits == 0 and rebinding.calls == 2


async def test_the_socket_factory_refuses_even_behind_a_resolver_that_lies(server: Server):
    connector = aiohttp.TCPConnector(resolver=Resolver("127.0.0.1"), use_dns_cache=False,
                                     socket_factory=egress.socket_factory(False))
    async with aiohttp.ClientSession(connector=connector) as http:
        with pytest.raises(aiohttp.ClientConnectorError):
            await get(http, f"http://dav.example:{server.port}/")
    assert server.hits == 0


async def test_check_url_at_add_time():
    assert not await egress.check_url("https://10.1.2.3/dav/", allow_private=False)
    assert await egress.check_url("https://10.1.2.3/dav/", allow_private=True)
    assert not await egress.check_url("https://dav.example/", allow_private=False, resolver=Resolver())
    assert not await egress.check_url("https://dav.example/", allow_private=False, resolver=Resolver("10.0.0.1"))
    assert await egress.check_url("https://dav.example/", allow_private=False, resolver=Resolver("93.184.215.14"))
    # Names the system resolver cannot encode raise UnicodeError there: here, "cannot connect" like any other.
    for odd in ("dav..example", "d" * 64 + ".example"):
        assert not await egress.check_url(f"https://{odd}/", allow_private=False)
        with pytest.raises(OSError):
            await egress.GuardedResolver(False).resolve(odd, 443)


async def _sync_error(url: str, **kwargs: Any) -> str:
    with pytest.raises(AddressBookUnavailable) as failed:
        await carddav.sync(AddressBook(url, "alice", "pw"), **kwargs)
    assert failed.value.__context__ is None
    return str(failed.value)


async def test_refused_and_unreachable_read_the_same():
    """A listening loopback port refused by the guard, then nothing listening there: one message.
    A name resolving to a private address, and one that does not resolve: one message."""
    listening = await Server().start()
    url = f"http://127.0.0.1:{listening.port}/alice/contacts/"
    refused = await _sync_error(url)
    await listening.stop()
    unreachable = await _sync_error(url, allow_private_addresses=True)
    assert refused == unreachable == f"cannot connect to http://127.0.0.1:{listening.port}"
    assert listening.hits == 0
    named = f"https://dav.example:{free_port()}/alice/contacts/"
    async with egress.session(allow_private=False, resolver=Resolver("10.0.0.7")) as private:
        to_private = await _sync_error(named, session=private)
    async with egress.session(allow_private=False, resolver=Resolver()) as nothing:
        to_nowhere = await _sync_error(named, session=nothing)
    assert to_private == to_nowhere and "10.0.0.7" not in to_private and "contacts" not in to_private


async def test_fetch_image_is_bounded_typed_and_guarded(server: Server):
    url = f"http://127.0.0.1:{server.port}/p"
    async with egress.session(allow_private=False) as http:
        assert await egress.fetch_image(http, url) is None
    assert server.hits == 0
    async with egress.session(allow_private=True) as http:
        assert await egress.fetch_image(http, url) == (PNG, "image/png")
        assert await egress.fetch_image(http, url, bound=len(PNG) - 1) is None
        server.body, server.content_type = b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"
        assert await egress.fetch_image(http, url) is None
        assert await egress.fetch_image(http, "file:///etc/passwd") is None
        assert await egress.fetch_image(http, f"http://127.0.0.1:{free_port()}/p") is None
