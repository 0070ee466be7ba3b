"""The REST API under ``/api/v1``: an aiohttp sub-application with its own middleware.

Per request, outermost first: CORS (``cors.py``: preflights answered here, allowed
origins echoed); errors as JSON (``api_errors.py``); who is calling; their rate limit
(``ratelimit.py``). A caller is a bearer API token (``tokens.py``; the extension) or
the dashboard's session cookie, which must also send the session's CSRF token in
``X-CSRF-Token`` to change anything. The root app's form-CSRF guard skips this prefix.
Handlers are in ``api_views.py``; the OpenAPI document that describes them all, in
``openapi.py`` (served at ``/api/v1/openapi.json``, no authentication).
"""

from __future__ import annotations

import hashlib
import math

from aiohttp import web

from inboxlens.web.api import views as api_views, openapi
from inboxlens.web import handoff, tokens
from inboxlens.web.api.errors import ApiError, Handler, errors
from inboxlens.web.api.cors import cors
from inboxlens.web.state import API_LIMITER, CALLER, DB, VERIFIED_TOKENS, Caller, current_session
from inboxlens.web.pages.views import csrf_ok

PREFIX = "/api/v1"
PUBLIC = frozenset({"openapi", "extension_token"})  # route names that need no caller (the code is the credential)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="inboxlens"'}


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    if match.http_exception is None and match.route.name not in PUBLIC:
        request[CALLER] = await _caller(request)
    return await handler(request)


async def _caller(request: web.Request) -> Caller:
    header = request.headers.get("Authorization")
    if header is not None:
        return await _bearer(request, header)
    session = current_session(request)
    if session is None or session.user_id is None:
        raise ApiError(401, "unauthorized", "Send an API token: Authorization: Bearer ilk_...", BEARER_CHALLENGE)
    if request.method in STATE_CHANGING and not csrf_ok(request, request.headers.get("X-CSRF-Token", "")):
        raise ApiError(403, "csrf_failed", "A cookie-authenticated change needs the session's X-CSRF-Token.")
    return Caller(session.user_id, "session:" + hashlib.sha256(session.id.encode()).hexdigest()[:32])


async def _bearer(request: web.Request, header: str) -> Caller:
    scheme, _, token = header.strip().partition(" ")
    verified = request.config_dict[VERIFIED_TOKENS]
    principal = await tokens.authenticate(request.config_dict[DB], token.strip(), verified) \
        if scheme.lower() == "bearer" else None
    if principal is None:
        # Never echo what was sent: it may be a real token of some other service.
        raise ApiError(401, "unauthorized", "This API token is not valid: it may have been revoked or mistyped.",
                       {"WWW-Authenticate": 'Bearer realm="inboxlens", error="invalid_token"'})
    return Caller(principal.user_id, f"token:{principal.token_id}", principal.accounts)


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    caller = request.get(CALLER)
    if caller is not None:
        wait = request.config_dict[API_LIMITER].take(caller.bucket)
        if wait > 0:
            raise ApiError(429, "rate_limited", "Too many requests for this API token; wait and try again.",
                           {"Retry-After": str(max(1, math.ceil(wait)))})
    return await handler(request)


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(openapi.DOCUMENT)


def make_api() -> web.Application:
    api = web.Application(middlewares=[cors, errors, authenticate, rate_limit])
    r = api.router
    get = {"allow_head": False}
    r.add_get("/openapi.json", openapi_document, name="openapi", **get)
    r.add_get("/me", api_views.me, name="me", **get)
    r.add_get("/accounts/{account_id}/rollups", api_views.rollups, name="rollups", **get)
    r.add_get("/accounts/{account_id}/correspondents", api_views.correspondents, name="correspondents", **get)
    r.add_get("/accounts/{account_id}/correspondents/{address}", api_views.card, name="card", **get)
    r.add_get("/accounts/{account_id}/owed", api_views.owed, name="owed", **get)
    r.add_get("/accounts/{account_id}/awaiting", api_views.awaiting, name="awaiting", **get)
    r.add_get("/accounts/{account_id}/senders", api_views.senders, name="senders", **get)
    r.add_post("/accounts/{account_id}/sync", api_views.sync, name="sync")
    r.add_delete("/accounts/{account_id}", api_views.disconnect, name="disconnect")
    r.add_get("/photos/{opaque}", api_views.photo, name="photo", **get)
    r.add_post("/extension/token", handoff.exchange, name="extension_token")
    return api
