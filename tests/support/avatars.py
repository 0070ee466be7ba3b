"""Gravatar and Libravatar on loopback, answering as their documentation says (neither can be reached from here).

- Gravatar's REST API v3 (docs.gravatar.com/rest-api): ``GET /v3/profiles/{sha256}`` answers the
  profile as JSON (display_name, job_title, company, profile_url, avatar_url, verified_accounts
  with service_type/service_label/url/is_hidden, links with label/url, ...) or 404 with
  ``{"error": "Profile not found", "code": "profile_not_found"}``.
- Gravatar's avatars: ``GET /avatar/{sha256}?d=404&s=200``: the image, or 404 with ``d=404``.
- Libravatar's avatars (wiki.libravatar.org/api): ``GET /libravatar/avatar/{sha256}?d=404&s=200``:
  the image, or 404; with ``hand_on`` set, an unknown hash is redirected to Gravatar, as
  Libravatar's own server does.

``faults[(service, hash)]`` makes one answer misbehave: "500", "429" (with Retry-After), "slow"
(never answers within the client's timeout), "huge" (a body over every bound), "garbage" (200,
not JSON), "array" (200, a JSON array), "nonimage" (200, an SVG), "gzip" (a compressed body
although identity was asked), "self-redirect" (302 to the same path on this server). service is
"profile", "gravatar" (the avatar) or "libravatar". Every request is recorded as it arrived
(``requests``: method, raw path with query, headers) so tests can check what left.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from inboxlens.config.schema import ProfilesConfig

JPEG = b"\xff\xd8\xff\xe0" + b"\0\x10JFIF" + bytes(200)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)
GIF = b"GIF89a" + bytes(200)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@dataclass(frozen=True)
class Seen:
    method: str
    raw_path: str  # path and query exactly as sent
    headers: tuple[tuple[str, str], ...]
    service: str
    at: float  # time.monotonic() on arrival


@dataclass
class AvatarService:
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # sha256 hex: Gravatar profile
    gravatar_images: dict[str, bytes] = field(default_factory=dict)
    libravatar_images: dict[str, bytes] = field(default_factory=dict)
    faults: dict[tuple[str, str], str] = field(default_factory=dict)
    hand_on: bool = False  # Libravatar redirects an unknown hash to Gravatar
    requests: list[Seen] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._arrived = asyncio.Condition()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> AvatarService:
        app = web.Application()
        app.router.add_get("/v3/profiles/{hash}", self._profile)
        app.router.add_get("/avatar/{hash}", self._gravatar_avatar)
        app.router.add_get("/libravatar/avatar/{hash}", self._libravatar_avatar)
        app.router.add_get("/{tail:.*}", self._elsewhere)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def config(self, **overrides: Any) -> ProfilesConfig:
        """The admin's [profiles] pointing at this server."""
        return ProfilesConfig(**{"gravatar_api_url": f"{self.url}/v3", "gravatar_avatar_url": f"{self.url}/avatar",
                                 "libravatar_avatar_url": f"{self.url}/libravatar/avatar",
                                 "public_lookups_per_minute": 6000, **overrides})

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` requests have arrived in all."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    def of(self, service: str) -> list[Seen]:
        return [r for r in self.requests if r.service == service]

    async def _seen(self, request: web.Request, service: str) -> str | None:
        self.requests.append(Seen(request.method, request.raw_path, tuple(request.headers.items()), service,
                                  time.monotonic()))
        async with self._arrived:
            self._arrived.notify_all()
        return self.faults.get((service, request.match_info.get("hash", "")))

    async def _fault(self, fault: str, request: web.Request) -> web.StreamResponse:
        if fault == "slow":
            try:
                await asyncio.wait_for(self._release.wait(), 60)
            except TimeoutError:
                pass
            return web.Response(status=504)
        if fault == "self-redirect":
            raise web.HTTPFound(request.path + "?d=404&s=200&again=1")  # same origin: followed
        bodies: dict[str, tuple[int, bytes, dict[str, str]]] = {
            "500": (500, b"oops", {}),
            "429": (429, b'{"error": "Too many requests"}', {"Retry-After": "120"}),
            "huge": (200, JPEG + bytes(300 * 1024), {}),
            "garbage": (200, b"<html>not json</html>", {}),
            "array": (200, b"[1, 2, 3]", {}),
            "nonimage": (200, SVG, {"Content-Type": "image/svg+xml"}),
            "gzip": (200, gzip.compress(b"{}"), {"Content-Encoding": "gzip"}),
        }
        status, body, headers = bodies[fault]
        return web.Response(status=status, body=body, headers=headers)

    async def _profile(self, request: web.Request) -> web.StreamResponse:
        fault = await self._seen(request, "profile")
        if fault and "again" not in request.query:
            return await self._fault(fault, request)
        profile = self.profiles.get(request.match_info["hash"])
        if profile is None:
            return web.json_response({"error": "Profile not found", "code": "profile_not_found"}, status=404)
        return web.json_response(profile)

    async def _gravatar_avatar(self, request: web.Request) -> web.StreamResponse:
        fault = await self._seen(request, "gravatar")
        if fault and "again" not in request.query:
            return await self._fault(fault, request)
        return self._image(self.gravatar_images.get(request.match_info["hash"]), request)

    async def _libravatar_avatar(self, request: web.Request) -> web.StreamResponse:
        fault = await self._seen(request, "libravatar")
        if fault and "again" not in request.query:
            return await self._fault(fault, request)
        found = self.libravatar_images.get(request.match_info["hash"])
        if found is None and self.hand_on:
            raise web.HTTPFound(f"http://localhost:1/avatar/{request.match_info['hash']}?d=404&s=200")
        return self._image(found, request)

    async def _elsewhere(self, request: web.Request) -> web.StreamResponse:
        await self._seen(request, "elsewhere")
        return web.Response(status=404)

    @staticmethod
    def _image(data: bytes | None, request: web.Request) -> web.StreamResponse:
        if data is None:
            if request.query.get("d") == "404":
                return web.Response(status=404, text="Not found")
            return web.Response(body=GIF, content_type="image/gif")  # the default picture
        kind = {b"\xff": "image/jpeg", b"\x89": "image/png", b"G": "image/gif"}.get(data[:1], "image/jpeg")
        return web.Response(body=data, content_type=kind)


def profile_json(hash_hex: str, name: str = "Ann Lee", **extra: Any) -> dict[str, Any]:
    """A Gravatar v3 profile as its docs show one."""
    return {"hash": hash_hex, "display_name": name, "profile_url": f"https://gravatar.com/{name.split()[0].lower()}",
            "avatar_url": f"https://0.gravatar.com/avatar/{hash_hex}", "avatar_alt_text": "", "location": "Berlin",
            "description": "Chemist.", "job_title": "Chemist", "company": "Acme", "pronunciation": "", "pronouns": "",
            "verified_accounts": [
                {"service_type": "mastodon", "service_label": "Mastodon", "service_icon": "https://x/y.svg",
                 "url": "https://social.example/@ann", "is_hidden": False},
                {"service_type": "github", "service_label": "GitHub", "service_icon": "https://x/g.svg",
                 "url": "https://github.com/ann-hidden", "is_hidden": True},
                {"service_type": "evil", "service_label": "Evil", "service_icon": "", "url": "javascript:alert(1)",
                 "is_hidden": False}],
            **extra}
