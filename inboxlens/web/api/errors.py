"""Every REST API error is one JSON shape: ``{"error": {"code": ..., "message": ...}}``.

Codes are stable snake_case names clients may branch on; messages are for people.
Handlers raise ``ApiError``; the ``errors`` middleware also turns aiohttp's own
answers (unknown path, wrong method, body too large) and any unexpected exception
into this shape. A 500 says nothing about its cause; the log line says which
exception it was, never a header, token or query string.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import web

from inboxlens.errors import InboxLensError
from inboxlens.service_errors import traceback_without_message
from inboxlens.web.exporter import route_of
from inboxlens.web.state import RETRY_AFTER, database_down

log = logging.getLogger("inboxlens.web.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 16 * 1024  # counted on the bytes that arrive, chunked or not; larger is refused

# aiohttp's own HTTP exceptions, by status: (code, message).
STANDARD = {
    400: ("bad_request", "The request is malformed."),
    401: ("unauthorized", "Send a valid API token: Authorization: Bearer ilk_..."),
    403: ("forbidden", "This request is not allowed."),
    404: ("not_found", "There is nothing here."),
    405: ("method_not_allowed", "This path does not take that method."),
    413: ("payload_too_large", f"Request bodies are limited to {MAX_BODY} bytes."),
    429: ("rate_limited", "Too many requests; wait and try again."),
    500: ("internal_error", "Something went wrong on the server; it has been logged."),
}
DATABASE_UNAVAILABLE = ("database_unavailable", "The database did not answer; try again shortly.")


class ApiError(InboxLensError):
    """The caller's request cannot be answered as asked (a 4xx, with a stable code)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def from_http(e: web.HTTPException) -> web.Response:
    code, message = STANDARD.get(e.status, ("bad_request" if e.status < 500 else "internal_error",
                                            e.reason or "The request failed."))
    headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
    return error_response(e.status, code, message, headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not await _body_fits(request):
        return error_response(413, *STANDARD[413])
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.code, e.message, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return from_http(e)
    except Exception as e:  # the client learns nothing about the cause, the log where it was (not what it said)
        # PostgreSQL restarting or refusing connections: a 503 to try again, not "broken"
        if (cause := database_down(e)) is not None:
            log.warning("%s %s: the database did not answer (%s)", request.method, route_of(request),
                        type(cause).__name__)
            return error_response(503, *DATABASE_UNAVAILABLE, {"Retry-After": RETRY_AFTER})
        log.error("%s %s failed: %s", request.method, route_of(request), traceback_without_message(e))
        return error_response(500, *STANDARD[500])


async def _body_fits(request: web.Request) -> bool:
    """Whether the body is at most MAX_BODY bytes: Content-Length is only a claim (a chunked body has none).

    ``request.read()`` keeps what it read for the handler, and stops at the root app's
    ``client_max_size`` (64 KiB) whatever is sent, so this never reads without bound.
    """
    if (request.content_length or 0) > MAX_BODY:
        return False
    if not request.body_exists:
        return True
    try:
        return len(await request.read()) <= MAX_BODY
    except web.HTTPRequestEntityTooLarge:
        return False
