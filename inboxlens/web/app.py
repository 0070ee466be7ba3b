"""The web application: routes, and the middleware every request passes through.

Order per request: security headers on every answer (and a styled page for an unknown
path or method); the session from its cookie; the per-address limit for requests nobody
is logged in for (``limits.py``); for POST, the CSRF token. Who may run a handler is
said on the handler itself (``auth.py``: ``@requires_user``). Bodies are capped.
The REST API is a sub-application at ``/api/v1`` (``api.py``) with middleware of its
own: the form-CSRF guard here leaves it alone, and a bearer-token call loads no session.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import web

from inboxlens.errors import VaultError
from inboxlens.service_errors import traceback_without_message
from inboxlens.web import handoff, health
from inboxlens.web.exporter import REQUEST_METRICS, RequestMetrics, route_of
from inboxlens.web.limits import anonymous
from inboxlens.web.pages import dashboard, profiles as profile_pages, render as pages, views
from inboxlens.web.api.errors import DATABASE_UNAVAILABLE, STANDARD, error_response
from inboxlens.web.api.routes import PREFIX as API_PREFIX, make_api
from inboxlens.web.sessions import COOKIE
from inboxlens.web.state import (DB, KEEP_CACHE_CONTROL, SECURE_COOKIES, SESSIONS, VAULT, VERIFIED_TOKENS,
                                 current_session, database_down)
from inboxlens.web.tokens import VerifiedTokens

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 64 * 1024
log = logging.getLogger("inboxlens.web")

HEADERS = {
    # Nothing from elsewhere, no inline script or style, no framing; forms post only here.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # The callback URL carries the authorization code: never send it on as a Referer.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_api(request) and "Authorization" in request.headers:
        return await handler(request)  # the token says who it is; a cookie sent along is ignored
    store = request.app[SESSIONS]
    session = await store.load(request.cookies.get(COOKIE))
    request["session"] = session
    if session is not None and session.user_id is not None:
        request["user_email"] = await request.app[DB].fetchval("SELECT email FROM users WHERE id = $1",
                                                               session.user_id) or ""
    response = await handler(request)
    session = current_session(request)
    if session is not None and session.changed:
        await store.save(session)
    if session is not None and session.new_cookie:
        response.set_cookie(COOKIE, store.cookie_value(session), max_age=store.cookie_max_age(session), path="/",
                            httponly=True, samesite="Lax", secure=request.app[SECURE_COOKIES])
    elif request.get("clear_cookie"):
        response.del_cookie(COOKIE, path="/")
    return response


def _is_api(request: web.Request) -> bool:
    return request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_api(request):
        return await handler(request)  # the API checks callers and CSRF itself (api.py)
    if request.method == "POST" and request.path == profile_pages.IMPORT_PATH:
        return await handler(request)  # a multipart upload over MAX_BODY: the handler checks its CSRF token first
    if request.method == "POST":
        form = await request.post()
        if not views.csrf_ok(request, str(form.get("csrf_token", ""))):
            return views.problem(403, "This form has expired or did not come from InboxLens.",
                                 "Go back, reload the page and try again.", request)
    return await handler(request)


@web.middleware
async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as e:
        response = _styled(request, e)
    except Exception as e:  # a page's unexpected error: logged where it was, not what it said (a form field?)
        # PostgreSQL restarting or refusing connections: a 503 to try again, not "broken"
        if (cause := database_down(e)) is not None:
            log.warning("%s %s: the database did not answer (%s)", request.method, route_of(request),
                        type(cause).__name__)
            response = views.busy(error_response(503, *DATABASE_UNAVAILABLE) if _is_api(request) else
                                  views.problem(503, "InboxLens's database did not answer.",
                                                "Try again in a few seconds.", request))
        else:
            log.error("%s %s failed: %s", request.method, route_of(request), traceback_without_message(e))
            response = error_response(500, *STANDARD[500]) if _is_api(request) else \
                views.problem(500, "Something went wrong on our side; it has been logged.", "Try again in a moment.",
                              request)
    kept = response.headers.get("Cache-Control") if response.get(KEEP_CACHE_CONTROL) else None
    response.headers.update(HEADERS)
    if kept is not None:  # a profile photo: private, cacheable by the browser (api/views.py photo)
        response.headers["Cache-Control"] = kept
    return response


def _styled(request: web.Request, e: web.HTTPException) -> web.StreamResponse:
    """aiohttp's plain-text 404 and 405 for a page, as a page; the API answers its own JSON."""
    if _is_api(request) or e.status not in (404, 405):
        return e
    message = "There is no page here." if e.status == 404 else "This page does not take that kind of request."
    response = views.problem(e.status, message, request=request)
    if "Allow" in e.headers:
        response.headers["Allow"] = e.headers["Allow"]
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus whether the vault answers this process (it must, to onboard anyone)."""
    try:
        key = await request.app[VAULT].public_key()
    except VaultError as e:
        return web.json_response({"status": "degraded", "vault": type(e).__name__}, status=503)
    return web.json_response({"status": "ok", "vault": "ok", "vault_key_id": key.key_id})


async def static_css(request: web.Request) -> web.Response:
    return web.Response(text=pages.CSS, content_type="text/css", headers={"Cache-Control": "max-age=3600"})


async def static_js(request: web.Request) -> web.Response:
    return web.Response(text=pages.JS, content_type="application/javascript")


def make_app() -> web.Application:
    requests = RequestMetrics()  # first: it times the others too, and sees the status they answer
    app = web.Application(client_max_size=MAX_BODY, middlewares=[requests.middleware, headers, sessions, anonymous,
                                                                 guard])
    app[REQUEST_METRICS] = requests
    app[VERIFIED_TOKENS] = VerifiedTokens()
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", health.readyz)
    r.add_get("/static/app.css", static_css)
    r.add_get("/static/app.js", static_js)
    r.add_get("/", views.home)
    r.add_get("/connect/{provider}", views.start_connect)
    r.add_get("/login/{provider}", views.start_login)
    r.add_get("/reconnect/{account_id}", views.start_reconnect)
    r.add_get("/oauth/{provider}/callback", views.callback)
    r.add_post("/logout", views.logout)
    r.add_post("/accounts/{account_id}/time-zone", views.change_time_zone)
    r.add_get("/accounts/{account_id}/disconnect", views.confirm_disconnect)
    r.add_post("/accounts/{account_id}/disconnect", views.disconnect)
    r.add_get("/settings", views.settings)
    r.add_post("/settings/tokens", views.create_token)
    r.add_post("/settings/tokens/{token_id}/revoke", views.revoke_token)
    handoff.add_routes(app)
    app.add_subapp(API_PREFIX, make_api())
    dashboard.add_routes(app)
    profile_pages.add_routes(app)
    return app
