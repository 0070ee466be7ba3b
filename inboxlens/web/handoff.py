"""Handing a fresh API token to the browser extension without copy and paste.

The extension's service worker starts ``chrome.identity.launchWebAuthFlow`` at
``GET /extension/connect?state=S&challenge=C``, where ``C`` is the base64url SHA-256 of
a verifier only the service worker holds (PKCE, RFC 7636, S256). The page runs in a
browser window with the user's own session: a logged-in user sees what is asked and
approves with a CSRF-protected POST. That creates a hand-off code (32 random bytes),
stored as its SHA-256 with the challenge, bound to the user, valid for
``CODE_SECONDS`` and at most ``MAX_LIVE`` at once per user, and answers 303 to
``https://<extension id>.chromiumapp.org/handoff?code=...&state=S``: Chrome hands
that URL to the extension that started the flow and never loads it. The service worker
then POSTs ``{"code", "verifier"}`` to ``/api/v1/extension/token`` and gets a new API
token (``tokens.py``) named for the extension, in the answer's body only.

Why it is safe: the redirect goes only to the extension id this server knows
(``render.EXTENSION_ID``), never to a URL from the request; a code is deleted by its first
exchange, whatever the verifier, and is useless without the verifier, after
``CODE_SECONDS``, or once used; the exchange answers only the extension's origin (or a
caller with no Origin); it is anonymous, so it draws from the per-address limit
(``limits.py``). Neither code nor token is logged; the token is never in a URL or a page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from datetime import datetime, timedelta, timezone
from html import escape
from urllib.parse import quote, urlencode

import asyncpg
from aiohttp import web

from inboxlens.web import accounts, tokens
from inboxlens.web.api.errors import ApiError
from inboxlens.web.auth import USER_ID, requires_user
from inboxlens.web.pages import render
from inboxlens.web.pages.views import html, problem, redirect
from inboxlens.web.state import DB, PROVIDERS, current_session

CODE_SECONDS = 120
MAX_LIVE = 5
CODE_BYTES = 32
EXTENSION_ORIGIN = f"chrome-extension://{render.EXTENSION_ID}"
REDIRECT_ORIGIN = f"https://{render.EXTENSION_ID}.chromiumapp.org"
REDIRECT = f"{REDIRECT_ORIGIN}/handoff"
APPROVAL_PAGE = web.RequestKey("handoff_approval_page", bool)
_B64_32 = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding
_STATE = re.compile(r"[A-Za-z0-9_-]{16,128}")


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def challenge_of(verifier: str) -> str:
    """PKCE S256: base64url(SHA-256(verifier)) without padding, as the extension computes it."""
    return base64.urlsafe_b64encode(digest(verifier)).rstrip(b"=").decode()


async def create(pool: asyncpg.Pool, user_id: int, challenge: str) -> str | None:
    """A new hand-off code for the user, bound to the PKCE challenge; None past MAX_LIVE live codes."""
    code = secrets.token_urlsafe(CODE_BYTES)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT id FROM users WHERE id = $1 FOR UPDATE", user_id)
        await conn.execute("DELETE FROM extension_handoffs WHERE user_id = $1 AND expires_at <= now()", user_id)
        if await conn.fetchval("SELECT count(*) FROM extension_handoffs WHERE user_id = $1", user_id) >= MAX_LIVE:
            return None
        await conn.execute("INSERT INTO extension_handoffs (user_id, code_hash, challenge, expires_at) "
                           "VALUES ($1, $2, $3, now() + $4::interval)", user_id, digest(code),
                           challenge, timedelta(seconds=CODE_SECONDS))
    return code


async def redeem(pool: asyncpg.Pool, code: str, verifier: str) -> int | None:
    """The user a code was made for, if it is live and the verifier matches; the code is gone either way."""
    if not (_B64_32.fullmatch(code) and _B64_32.fullmatch(verifier)):
        return None
    row = await pool.fetchrow("DELETE FROM extension_handoffs WHERE code_hash = $1 "
                              "RETURNING user_id, challenge, expires_at > now() AS live", digest(code))
    if row is None or not row["live"]:
        return None
    if not hmac.compare_digest(str(row["challenge"]), challenge_of(verifier)):
        return None
    return int(row["user_id"])


def token_name(now: datetime) -> str:
    return f"Browser extension, {now.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


# ---- the pages: GET shows what is asked, POST (CSRF-checked by app.guard) approves or declines ----

def _flow(values: dict[str, str]) -> tuple[str, str] | None:
    state, challenge = values.get("state", ""), values.get("challenge", "")
    return (state, challenge) if _STATE.fullmatch(state) and _B64_32.fullmatch(challenge) else None


async def confirm(request: web.Request) -> web.StreamResponse:
    flow = _flow(dict(request.query))
    if flow is None:
        return problem(400, "This link is not a hand-off the InboxLens extension started.",
                       "Start again from the extension's settings: Connect without copying a token.", request)
    session = current_session(request)
    if session is None or session.user_id is None:
        # 200, not 401: launchWebAuthFlow gives up on a first page that answers 4xx ("could not be loaded").
        return html("Log in first", _log_in_first(request), request=request)
    request[APPROVAL_PAGE] = True
    return html("Connect the browser extension", _approval(*flow, session.csrf), request=request)


def _log_in_first(request: web.Request) -> str:
    back = quote(request.path_qs, safe="")
    links = "".join(f'<li><a href="/login/{quote(name)}?next={back}">Log in with '
                    f"{escape(request.app[PROVIDERS].label(name))}</a></li>"
                    for name in request.app[PROVIDERS].names())
    return ("<p>The InboxLens browser extension asks this server for an API token. Log in in this window "
            f"first; you then see what it asks before anything is made.</p><ul>{links}</ul>")


def _approval(state: str, challenge: str, csrf: str) -> str:
    hidden = (render.csrf_field(csrf) + f'<input type="hidden" name="state" value="{escape(state)}">'
              f'<input type="hidden" name="challenge" value="{escape(challenge)}">')
    return (f'<p>The InboxLens browser extension in this browser (id <code>{render.EXTENSION_ID}</code>) asks '
            "for a new API token. With it, the extension reads everything InboxLens knows about your mailboxes "
            "(it shows it beside your mail), until you revoke it on the Settings page.</p>"
            "<p>Allow this only if you just clicked <strong>Connect</strong> in the extension's settings.</p>"
            f'<form method="post" action="/extension/connect" class="inline">{hidden}'
            '<button type="submit" name="decision" value="allow" id="allow">Allow</button></form> '
            f'<form method="post" action="/extension/connect" class="inline">{hidden}'
            '<button type="submit" name="decision" value="deny" class="danger">Cancel</button></form>')


@requires_user
async def approve(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    flow = _flow({k: str(v) for k, v in form.items() if k in ("state", "challenge")})
    if flow is None:
        return problem(400, "This hand-off request is malformed.", "Start again from the extension.", request)
    state, challenge = flow
    if form.get("decision") != "allow":
        return redirect(f"{REDIRECT}?{urlencode({'error': 'access_denied', 'state': state})}")
    code = await create(request.app[DB], request[USER_ID], challenge)
    if code is None:
        return problem(429, f"{MAX_LIVE} hand-offs are already waiting for the extension.",
                       f"Wait {CODE_SECONDS // 60} minutes and start again.", request)
    await accounts.audit(request.app[DB], "extension_handoff_approved", request[USER_ID], None)
    return redirect(f"{REDIRECT}?{urlencode({'code': code, 'state': state})}")


# ---- the exchange, under /api/v1: the code and its verifier for a new token ----

async def exchange(request: web.Request) -> web.Response:
    origin = request.headers.get("Origin")
    if origin is not None and origin != EXTENSION_ORIGIN:
        raise ApiError(403, "origin_not_allowed", "Only the InboxLens extension may exchange a hand-off code.")
    if "Authorization" in request.headers:  # it would skip the per-address limit (limits.py) that bounds guessing
        raise ApiError(400, "bad_request", "Send a hand-off code without an Authorization header.")
    code, verifier = await _body(request)
    pool: asyncpg.Pool = request.config_dict[DB]
    user_id = await redeem(pool, code, verifier)
    if user_id is None:
        raise ApiError(400, "invalid_grant", "This hand-off code is unknown, expired, already used, "
                                             "or does not match its verifier; start again from the extension.")
    made = await tokens.create(pool, user_id, token_name(datetime.now(timezone.utc)))
    if made is None:
        raise ApiError(409, "too_many_tokens", f"You already have {tokens.MAX_PER_USER} API tokens; "
                                               "revoke one on the Settings page first.")
    info, secret = made
    await accounts.audit(pool, "api_token_created", user_id, None, token_id=info.id, name=info.name,
                         via="extension hand-off")
    return web.json_response({"token": secret, "name": info.name}, status=201)


async def _body(request: web.Request) -> tuple[str, str]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the code as JSON: {\"code\": ..., \"verifier\": ...}.")
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "The body is not JSON.") from None
    if not isinstance(body, dict) or set(body) != {"code", "verifier"} \
            or not all(isinstance(v, str) for v in body.values()):
        raise ApiError(400, "bad_request", "The body must be exactly {\"code\": string, \"verifier\": string}.")
    return body["code"], body["verifier"]


async def _let_the_form_redirect(request: web.Request, response: web.StreamResponse) -> None:
    """CSP form-action also governs where a form's POST may redirect: the approval page's, to the extension's."""
    if request.get(APPROVAL_PAGE):
        policy = response.headers.get("Content-Security-Policy", "")
        response.headers["Content-Security-Policy"] = policy.replace("form-action 'self'",
                                                                     f"form-action 'self' {REDIRECT_ORIGIN}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/extension/connect", confirm)
    app.router.add_post("/extension/connect", approve)
    app.on_response_prepare.append(_let_the_form_redirect)  # after app.headers has set the policy
