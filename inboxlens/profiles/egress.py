"""Where a product process may connect when it fetches a URL a user gave (server-side request forgery).

A user names a CardDAV server, and a card names a photo's URL; harvest fetches them from
inside the network InboxLens runs in, where the most sensitive services listen on loopback
or private addresses (the metrics listener, PostgreSQL's TCP port, a cloud's metadata
service on a link-local address). Unless ``[profiles] allow_private_addresses`` is true,
every address that is not globally routable is refused: loopback, private, shared (CGNAT),
link-local, multicast, reserved, unspecified, and those embedded in IPv6 (IPv4-mapped,
NAT64, 6to4).

The check holds for the address actually connected, not for the URL's text: ``session``
builds an aiohttp connector whose resolver drops refused answers (``GuardedResolver``), and
whose socket factory checks the address each socket is about to connect to, which is where a
literal IP (aiohttp does not resolve one) and a name that resolves to another address each
time (DNS rebinding) are caught. Sessions never read a proxy from the environment, never
decompress (a small answer cannot expand past a bound) and ask for no compression.

One message for "refused here" and "could not connect" alike (``cannot_connect``): the
user who typed the URL must not learn from errors which internal addresses answer.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from typing import Any, Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from inboxlens.profiles.vcard import _MAGIC  # the image types a card's inline photo may have

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
PHOTO_BYTES = 256 * 1024
PHOTO_TIMEOUT = 15.0
PHOTO_REDIRECTS = 3
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def origin(url: str) -> str:
    """scheme://host:port, the only part of a URL a message may name (a path may hold an address)."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    return f"{parts.scheme}://{host}:{port}"


def cannot_connect(url: str) -> str:
    """The one message for a refused address, a name that does not resolve, and a failed connect."""
    return f"cannot connect to {origin(url)}"


def refused(address: str | IP) -> bool:
    """Whether ``address`` is one a user's URL may not reach (anything not globally routable)."""
    try:
        ip = address if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else \
            ipaddress.ip_address(str(address).split("%", 1)[0])  # an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:
            return refused(embedded)
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified)


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and keeps only the answers a user's URL may reach."""

    def __init__(self, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self.inner = inner or aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        try:
            answers = await self.inner.resolve(host, port, family)
        except ValueError:  # a name the resolver cannot even encode ("a..b", a label over 63 characters)
            raise OSError(errno.EHOSTUNREACH, "cannot connect") from None
        kept = [a for a in answers if self.allow_private or not refused(a["host"])]
        if not kept:
            raise OSError(errno.EHOSTUNREACH, "cannot connect")
        return kept

    async def close(self) -> None:
        await self.inner.close()


def socket_factory(allow_private: bool) -> Callable[[Any], socket.socket]:
    """A socket for one address aiohttp is about to connect to, unless that address is refused."""
    def open_socket(addr_info: Any) -> socket.socket:
        family, kind, proto, _, address = addr_info
        if not allow_private and refused(address[0]):
            raise OSError(errno.EHOSTUNREACH, "cannot connect")
        return socket.socket(family, kind, proto)
    return open_socket


def session(*, allow_private: bool, limit: int = 4, resolver: AbstractResolver | None = None,
            timeout: float = 30.0) -> aiohttp.ClientSession:
    """A client session for users' URLs: guarded connector, no proxy from the environment, no
    decompression. ``resolver``: what names resolve with (tests give a lying one)."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private, resolver), use_dns_cache=False,
                                     socket_factory=socket_factory(allow_private), limit=limit, limit_per_host=2)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                 headers={"Accept-Encoding": "identity"},
                                 timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0)))


async def check_url(url: str, *, allow_private: bool, resolver: AbstractResolver | None = None) -> bool:
    """Whether ``url``'s host resolves now to an address it may reach: web's check when a book is
    added (a hint for the user; the connect-time check is the one that holds)."""
    host = urlsplit(url).hostname or ""
    if not host:
        return False
    if allow_private:
        return True  # nothing is refused, so nothing is resolved: the first sync tells whether it answers
    try:
        return not refused(ipaddress.ip_address(host))
    except ValueError:
        pass  # a name
    try:
        return bool(await GuardedResolver(False, resolver).resolve(host, 443, socket.AF_UNSPEC))
    except OSError:
        return False


async def fetch_image(http: aiohttp.ClientSession, url: str, *, bound: int = PHOTO_BYTES,
                      timeout: float = PHOTO_TIMEOUT) -> tuple[bytes, str] | None:
    """A photo by URL: (bytes, media type told by its bytes: JPEG, PNG or GIF) within ``bound`` bytes
    and ``timeout`` seconds; None for anything else (refused, failed, too big, another type)."""
    if urlsplit(url).scheme not in ("http", "https"):
        return None
    try:
        async with asyncio.timeout(timeout):
            async with http.get(url, max_redirects=PHOTO_REDIRECTS) as answer:
                if answer.status != 200 or (answer.content_length or 0) > bound:
                    return None
                data = bytearray()
                async for chunk in answer.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > bound:
                        return None
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
        return None
    media_type = next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)
    return (bytes(data), media_type) if media_type is not None else None
