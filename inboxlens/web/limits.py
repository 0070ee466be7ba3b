"""Requests nobody is logged in for are cheap and bounded: one token bucket per client address.

Anyone can send them, and each GET /connect or /login starts a sign-in (a short-lived
session row, a redirect). ``anonymous`` runs after the session is known: a request
with a logged-in session, or an API request with a token (the API limits those per
token), draws nothing; the rest draw from their client address's bucket
(``web.anonymous_requests_per_minute``, ``web.anonymous_burst``) and get 429 past it.

The client address is the TCP peer's, unless the peer is one of ``web.trusted_proxies``:
then it is the nearest X-Forwarded-For hop that is not a trusted proxy. A header from
anyone else is ignored, or every request could name a fresh address.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Awaitable, Callable

from aiohttp import web

from inboxlens.web.api.errors import error_response
from inboxlens.web.api.routes import PREFIX as API_PREFIX
from inboxlens.web.pages import render
from inboxlens.web.state import ANONYMOUS_LIMITER, TRUSTED_PROXIES, current_session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
EXEMPT = ("/static/", "/healthz", "/readyz")
MAX_HOPS = 20


def normal(address: str) -> str | None:
    """An IP address in one spelling (so '::ffff:1.2.3.4' and friends compare), or None."""
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).compressed
    except ValueError:
        return None


def client_address(request: web.BaseRequest, trusted: frozenset[str]) -> str:
    peer = normal(request.remote or "") or "unknown"
    if peer not in trusted:
        return peer
    hops = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")[-MAX_HOPS:]
    for hop in reversed(hops):
        address = normal(hop)
        if address is None:
            return peer  # a malformed hop: trust nothing further out than the proxy itself
        if address not in trusted:
            return address
    return peer


def _is_api(request: web.Request) -> bool:
    return request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")


def _anonymous(request: web.Request) -> bool:
    if request.path.startswith(EXEMPT) or (_is_api(request) and "Authorization" in request.headers):
        return False
    session = current_session(request)
    return session is None or session.user_id is None


@web.middleware
async def anonymous(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _anonymous(request):
        address = client_address(request, request.app[TRUSTED_PROXIES])
        wait = request.app[ANONYMOUS_LIMITER].take("address:" + address)
        if wait > 0:
            return _too_many(request, max(1, math.ceil(wait)))
    return await handler(request)


def _too_many(request: web.Request, seconds: int) -> web.Response:
    headers = {"Retry-After": str(seconds)}
    if _is_api(request):
        return error_response(429, "rate_limited", "Too many requests from this address; wait and try again.",
                              headers)
    text = render.layout("Too many requests", render.problem(
        "Too many requests came from your address without a sign-in.", f"Wait {seconds} s and try again."))
    return web.Response(text=text, status=429, content_type="text/html", headers=headers)
