"""Demo mode (``inboxlens demo``): every answer marked as demo data, and the printed sign-in link.

On only when the state directory is a demo's: named ``*-demo`` and holding ``demo.json``,
which ``inboxlens demo`` writes (the demo user's address and the SHA-256 of the sign-in
code it printed). A real service's state has neither, so none of this exists there: no
route, no middleware. Untrusted input: the ``code`` of ``/demo/login``, compared in
constant time with the hash; it works once per web process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from inboxlens.web.pages import render, views
from inboxlens.web.state import DB, SESSIONS, current_session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEADER = "X-InboxLens-Demo"
MARKER = "demo.json"
SUFFIX = "-demo"


@dataclass
class Demo:
    email: str
    login_sha256: str
    used: bool = field(default=False)


DEMO = web.AppKey("demo", Demo)


def load(state_dir: Path) -> Demo | None:
    if not state_dir.name.endswith(SUFFIX):
        return None
    try:
        data = json.loads((state_dir / MARKER).read_text())
        return Demo(str(data["email"]), str(data["login_sha256"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def install(app: web.Application, state_dir: Path) -> bool:
    """Demo mode on ``app`` if ``state_dir`` is a demo's; whether it is."""
    demo = load(state_dir)
    if demo is None:
        return False
    app[DEMO] = demo
    app.middlewares.insert(0, mark)  # outermost: error pages and API answers are marked too
    app.router.add_get("/demo/login", login)
    return True


@web.middleware
async def mark(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as e:  # what no inner middleware turned into a page
        e.headers[HEADER] = "1"
        raise
    response.headers[HEADER] = "1"
    if isinstance(response, web.Response) and response.content_type == "text/html" and \
            isinstance(response.body, bytes):
        response.body = response.body.replace(b"<body>", b"<body>" + render.DEMO_BANNER.encode(), 1)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    demo = request.app[DEMO]
    code = request.query.get("code", "")
    digest = hashlib.sha256(code.encode()).hexdigest()
    if demo.used or not hmac.compare_digest(digest, demo.login_sha256):
        return views.problem(403, "This demo sign-in link was used already, or is wrong.",
                             "Run 'inboxlens demo' again for a new one.", request)
    user_id = await request.app[DB].fetchval("SELECT id FROM users WHERE email = $1", demo.email)
    if user_id is None:
        return views.problem(404, "The demo user is gone.", "Run 'inboxlens demo' again.", request)
    demo.used = True
    session = current_session(request)
    store = request.app[SESSIONS]
    request["session"] = await store.log_in(session, int(user_id)) if session else await store.create(int(user_id))
    return views.redirect("/dashboard")
