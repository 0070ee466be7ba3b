"""Who may run a handler: a decorator on each handler, checked on every call.

``@requires_user`` (HTML pages: a logged-in session) and ``@requires_api_caller``
(``/api/v1``: a bearer token or a session, set by the API's ``authenticate``
middleware) answer 401 themselves when nobody is there, and hand the handler the
checked identity through a typed request key. Never a URL prefix (a new route under
another path would be open) and never ``assert`` (``python -O`` strips asserts);
``tests/web/test_auth.py`` checks that no ``assert`` is left in ``inboxlens/web``.
"""

from __future__ import annotations

import functools
from typing import Awaitable, Callable

from aiohttp import web

from inboxlens.web.api.errors import ApiError
from inboxlens.web.pages import render
from inboxlens.web.state import CALLER, Caller, current_session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER_ID = web.RequestKey("user_id", int)


def requires_user(handler: Handler) -> Handler:
    """The handler runs only for a logged-in session; ``request[USER_ID]`` is its user."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        session = current_session(request)
        if session is None or session.user_id is None:
            return login_required()
        request[USER_ID] = session.user_id
        return await handler(request)

    return checked


def requires_api_caller(handler: Handler) -> Handler:
    """The handler runs only for an authenticated API caller (``request[CALLER]``)."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        caller: Caller | None = request.get(CALLER)
        if caller is None:
            raise ApiError(401, "unauthorized", "Send an API token: Authorization: Bearer ilk_...",
                           {"WWW-Authenticate": 'Bearer realm="inboxlens"'})
        return await handler(request)

    return checked


def login_required() -> web.Response:
    text = render.layout("That did not work", render.problem("Please log in first."))
    return web.Response(text=text, status=401, content_type="text/html")
