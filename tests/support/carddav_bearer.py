"""A stand-in for Google's CardDAV, for tests: Bearer tokens in front of a real Radicale.

Google serves a mailbox's contacts at ``/carddav/v1/principals/<address>/lists/default/`` to a
client holding an OAuth access token with the contacts scope. This proxy, on loopback, does
the same in front of one Radicale address book: each request's Bearer token is checked with
the local OAuth provider's introspection endpoint (active, the scope granted, issued for that
address), then forwarded with the Radicale user's Basic credentials; the book's path is
rewritten both ways (request bodies name hrefs, answers list them). Anything else answers 401
or 404, as Google would. ``requests`` and ``refused`` count what came in.
"""

from __future__ import annotations

import base64
import socket
from urllib.parse import quote

import aiohttp
from aiohttp import web

from tests.support.radicale import Radicale

FORWARDED = ("Depth", "Content-Type")


class BearerCardDav:
    def __init__(self, introspect_url: str, scope: str, radicale: Radicale, user: str, book_url: str,
                 address: str) -> None:
        self.introspect_url, self.scope = introspect_url, scope
        self.radicale, self.user, self.address = radicale, user, address
        self.book_path = book_url.removeprefix(radicale.base_url)
        self.path = f"/carddav/v1/principals/{quote(address, safe='@')}/lists/default/"
        self.requests = self.refused = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url_template(self) -> str:
        """What ``[profiles] google_carddav_url`` is set to."""
        return self.url + "/carddav/v1/principals/{address}/lists/default/"

    async def start(self) -> "BearerCardDav":
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not await self._authorized(request.headers.get("Authorization", "")):
            self.refused += 1
            return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="contacts"'})
        if not request.path.startswith(self.path):
            return web.Response(status=404)
        body = (await request.read()).replace(self.path.encode(), self.book_path.encode())
        basic = base64.b64encode(f"{self.user}:{self.radicale.users[self.user]}".encode()).decode()
        headers = {**{k: v for k, v in request.headers.items() if k in FORWARDED},
                   "Authorization": f"Basic {basic}", "Accept-Encoding": "identity"}
        assert self._http is not None
        async with self._http.request(request.method, self.radicale.base_url + self.book_path +
                                      request.path[len(self.path):], data=body, headers=headers,
                                      allow_redirects=False) as answer:
            data = (await answer.read()).replace(self.book_path.encode(), self.path.encode())
            return web.Response(status=answer.status, body=data,
                                headers={k: v for k, v in answer.headers.items() if k in ("Content-Type", "ETag")})

    async def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            return False
        assert self._http is not None
        async with self._http.post(self.introspect_url, data={"token": token}) as answer:
            info = await answer.json()
        return (info.get("active") is True and self.scope in str(info.get("scope", "")).split()
                and info.get("email") == self.address)
