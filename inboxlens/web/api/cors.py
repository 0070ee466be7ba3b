"""CORS for ``/api/v1``: only the configured origins (``web.cors_origins``), never ``*``.

An allowed origin is echoed exactly, with ``Vary: Origin`` on every API answer so a
cache never hands one origin's answer to another. Credentials are not allowed
(no ``Access-Control-Allow-Credentials``): the extension sends a bearer token, so a
page on another origin can never ride on a user's session cookie. Any other origin
gets no CORS header at all, and its preflight a 403.
"""

from __future__ import annotations

from aiohttp import web

from inboxlens.web.api.errors import Handler, error_response
from inboxlens.web.state import CORS_ORIGINS

ALLOW_METHODS = "GET, POST, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type, X-CSRF-Token"
EXPOSE_HEADERS = "Retry-After"
MAX_AGE = "600"


def _allowed(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin is not None and origin in request.config_dict[CORS_ORIGINS] else None


def _is_preflight(request: web.Request) -> bool:
    return request.method == "OPTIONS" and "Origin" in request.headers \
        and "Access-Control-Request-Method" in request.headers


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = _allowed(request)
    if _is_preflight(request):
        return _preflight(origin)
    response = await handler(request)
    response.headers["Vary"] = "Origin"
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response


def _preflight(origin: str | None) -> web.Response:
    if origin is None:
        response = error_response(403, "origin_not_allowed", "This origin may not call the InboxLens API.")
    else:
        response = web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS, "Access-Control-Max-Age": MAX_AGE})
    response.headers["Vary"] = "Origin"
    return response
