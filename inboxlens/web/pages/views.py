"""Web handlers: onboarding (connect, reconnect), login, logout, account settings, disconnect,
and the settings page where API tokens are made (shown once) and revoked.

Every state-changing request is a POST carrying the session's CSRF token. A user
only ever reaches their own accounts: anyone else's answers 404, like a missing one.
The plaintext refresh token lives in this process only inside ``finish_connect``.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import zoneinfo
from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp import web

from inboxlens.config.schema import ProfilesConfig
from inboxlens.errors import VaultError
from inboxlens.web import accounts, tokens
from inboxlens.web.auth import USER_ID, requires_user
from inboxlens.web.pages import render as pages
from inboxlens.web.oauth import FlowError, Grant, new_secret
from inboxlens.web.state import (DB, METRICS, PROFILES, PROVIDERS, RETRY_AFTER, SESSIONS, VAULT, VERIFIED_TOKENS,
                                 current_session, ensure_session)

log = logging.getLogger("inboxlens.web")
FLOW_SECONDS = 600
MAX_FLOWS = 5
_SAFE_NEXT = re.compile(r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,500}")


def html(title: str, body: str, status: int = 200, *, request: web.Request | None = None) -> web.Response:
    session = current_session(request) if request is not None else None
    user = request.get("user_email", "") if request is not None else ""
    text = pages.layout(title, body, user_email=user, csrf=session.csrf if session and user else "")
    return web.Response(text=text, status=status, content_type="text/html")


def problem(status: int, message: str, hint: str = "", request: web.Request | None = None) -> web.Response:
    return html("Something went wrong" if status >= 500 else "That did not work", pages.problem(message, hint),
                status, request=request)


def busy(response: web.Response) -> web.Response:
    """A 503 that will pass: it says when to try again."""
    response.headers["Retry-After"] = RETRY_AFTER
    return response


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def safe_next(value: str | None) -> str:
    """Only a path on this site: no scheme, no host, no '//' (an open redirect otherwise)."""
    return value if value and _SAFE_NEXT.fullmatch(value) else "/"


def time_zone(value: str | None) -> str | None:
    if not value or len(value) > 64:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
    return value


async def home(request: web.Request) -> web.Response:
    providers = [(n, request.app[PROVIDERS].label(n)) for n in request.app[PROVIDERS].names()]
    session = current_session(request)
    if session is None or session.user_id is None:
        return html("Welcome", pages.welcome(providers, request.app[PROVIDERS].base_url), request=request)
    rows = await accounts.accounts_of(request.app[DB], session.user_id)
    known = request.app[PROVIDERS].configs
    for row in rows:
        row["status"] = await accounts.live_status(request.app[DB], request.app[VAULT], row)
        row["provider_label"] = request.app[PROVIDERS].label(row["provider"]) if row["provider"] in known else ""
    return html("Your mailboxes", pages.dashboard(rows, providers, session.csrf), request=request)


async def start_connect(request: web.Request) -> web.Response:
    return await _start(request, "connect", mailbox=True)


async def start_login(request: web.Request) -> web.Response:
    return await _start(request, "login", mailbox=False)


@requires_user
async def start_reconnect(request: web.Request) -> web.StreamResponse:
    account_id = parse_id(request.match_info["account_id"])
    account = await accounts.account_of(request.app[DB], request[USER_ID], account_id) if account_id else None
    if account is None:
        return problem(404, "No such mailbox.", request=request)
    return await _start(request, "reconnect", mailbox=True, provider=account["provider"], account=account)


async def _start(request: web.Request, purpose: str, *, mailbox: bool, provider: str | None = None,
                 account: dict[str, Any] | None = None) -> web.Response:
    name = provider or request.match_info["provider"]
    if name not in request.app[PROVIDERS].configs:
        return problem(404, f"No provider named {name!r} is configured here.", request=request)
    session = await ensure_session(request)
    state, verifier, nonce = new_secret(), new_secret(), new_secret()
    # "Also use my contacts": Google's CardDAV on the same grant (one more scope), synced by harvest.
    contacts = mailbox and name == "google" and request.query.get("contacts") == "1"
    flows = {k: v for k, v in session.data.get("flows", {}).items() if v["created"] > time.time() - FLOW_SECONDS}
    flows = dict(sorted(flows.items(), key=lambda kv: kv[1]["created"])[-(MAX_FLOWS - 1):])
    flows[state] = {"provider": name, "purpose": purpose, "verifier": verifier, "nonce": nonce,
                    "next": safe_next(request.query.get("next")), "tz": time_zone(request.query.get("tz")) or "UTC",
                    "account": account["id"] if account else None, "created": time.time(), "contacts": contacts}
    session.data["flows"] = flows
    session.changed = True
    try:
        url = await request.app[PROVIDERS].authorization_url(
            name, mailbox=mailbox, state=state, verifier=verifier, nonce=nonce,
            login_hint=account["address"] if account else "",
            extra_scopes=(request.app[PROFILES].google_contacts_scope,) if contacts else ())
    except FlowError as e:
        return problem(502, str(e), request=request)
    return redirect(url)


async def callback(request: web.Request) -> web.Response:
    name = request.match_info["provider"]
    session = current_session(request)
    flow = session.data.get("flows", {}).pop(request.query.get("state", ""), None) if session else None
    if session is not None and flow is not None:
        session.changed = True
    if flow is None or flow["provider"] != name or flow["created"] < time.time() - FLOW_SECONDS:
        _refused(name, "unknown, expired or reused state")
        return problem(400, "This sign-in link is not valid here, has expired, or was already used.",
                       "Start again from the InboxLens page, in the same browser.", request)
    if "error" in request.query:
        return _provider_error(request, name, request.query["error"])
    code = request.query.get("code", "")
    if not code or len(code) > 2048:
        _refused(name, "no authorization code")
        return problem(400, "The provider sent no authorization code.", "Start again.", request)
    try:
        grant = await request.app[PROVIDERS].exchange(name, code, flow["verifier"], flow["nonce"])
    except FlowError as e:
        _refused(name, e.reason)
        return problem(e.status, str(e), request=request)
    if flow["purpose"] == "login":
        return await _finish_login(request, grant, flow)
    return await finish_connect(request, name, grant, flow)


def _refused(provider: str, reason: str) -> None:
    """Every refused callback leaves a line saying why (a reason code: no token, code or claim value)."""
    log.warning("sign-in callback from %s refused: %s", provider, reason)


def _provider_error(request: web.Request, name: str, error: str) -> web.Response:
    label = request.app[PROVIDERS].label(name)
    code = error if re.fullmatch(r"[a-z_]{1,40}", error) else "unknown"
    _refused(name, f"the provider answered error={code}")
    if error == "access_denied":
        return problem(403, f"You did not allow InboxLens access at {label}, so nothing was connected.",
                       "If that was a mistake, start again and choose Allow.", request)
    return problem(502, f"{label} reported an error ({code}); nothing was connected.", "Please try again.", request)


async def _finish_login(request: web.Request, grant: Grant, flow: dict[str, Any]) -> web.Response:
    user_id = await accounts.user_for_login(request.app[DB], flow["provider"], grant.subject, grant.email)
    if user_id is None:
        _refused(flow["provider"], "no user has this provider identity")
        return problem(403, f"There is no InboxLens user for {grant.email} at "
                            f"{request.app[PROVIDERS].label(flow['provider'])}.",
                       "Connect a mailbox first: that creates your user.", request)
    await _log_in(request, user_id)
    await accounts.audit(request.app[DB], "login", user_id, None, address=grant.email)
    return redirect(flow["next"])


async def finish_connect(request: web.Request, provider: str, grant: Grant, flow: dict[str, Any]) -> web.Response:
    if grant.refresh_token is None:
        _refused(provider, "no refresh token came back")
        return problem(400, *no_refresh_token(request, provider), request)
    session = current_session(request)
    user_id = session.user_id if session else None
    if flow["purpose"] == "reconnect":
        account = await accounts.account_of(request.app[DB], user_id or 0, int(flow["account"]))
        if account is None or account["address"] != grant.email:
            _refused(provider, "reconnect signed in as another mailbox")
            return problem(400, f"You signed in as {grant.email}, which is not the mailbox being reconnected.",
                           "Start again and choose the right account at the provider.", request)
    try:
        user_id, account_id, created = await _store(request, provider, grant, grant.refresh_token, flow, user_id)
    except accounts.AddressTaken as e:
        _refused(provider, "the address belongs to another user or provider identity")
        return problem(409, str(e), "Log in as that user, or disconnect the mailbox there first.", request)
    except VaultError as e:  # the mailbox's address stays out of the log, as in every line here
        log.error("the vault did not store a %s token (%s); nothing was connected", provider, type(e).__name__)
        return problem(503, "InboxLens could not store the access safely; nothing was connected.",
                       "Please try again in a moment.", request)
    except accounts.MarkBusy:  # no database connection for the pending mark: too many connects at once
        log.error("a connect found no free database connection within %g s", accounts.MARK_WAIT)
        return busy(problem(503, "InboxLens is busy; nothing was connected.", "Please try again in a moment.",
                            request))
    await _log_in(request, user_id)
    log.info("%s account %d (%s)", "connected" if created else "reconnected", account_id, provider)
    return redirect(flow["next"])


def no_refresh_token(request: web.Request, provider: str) -> tuple[str, str]:
    """Why no refresh token came back, and what to change: the page's message and hint."""
    providers = request.app[PROVIDERS]
    label, scopes = providers.label(provider), providers.scopes(provider, mailbox=True)
    params = providers.authorize_params(provider, mailbox=True)
    asked = f"InboxLens asked for the scopes \"{' '.join(scopes) or '(none)'}\""
    message = f"{label} did not send a refresh token, so InboxLens could not keep access. {asked}" + \
        (" with prompt=consent." if params.get("prompt") == "consent" else ".")
    if "offline_access" not in scopes and params.get("access_type") != "offline":
        return message, (f"Offline access was not asked for: the administrator should add \"offline_access\" to "
                         f"providers.{provider}.scopes (or the provider's own offline parameter to authorize_params).")
    if params.get("prompt") != "consent":
        return message, (f"This happens when access was granted before. Remove InboxLens from your {label} "
                         "account's connected apps and connect again, or the administrator adds "
                         f"prompt = \"consent\" to providers.{provider}.authorize_params.")
    return message, (f"{label} refused offline access to this client: the administrator should allow the "
                     f"refresh_token grant (offline access) for client {providers.configs[provider].client_id} at {label}.")


async def _store(request: web.Request, provider: str, grant: Grant, refresh_token: str, flow: dict[str, Any],
                 user_id: int | None) -> tuple[int, int, bool]:
    """Account row and sealed token together: the row commits only after the vault stored the token.
    The account id is marked pending before the set, so a death between the set and the commit
    leaves a token the sweep forgets (``accounts.forget_orphans``), never one nobody can see."""
    vault = request.app[VAULT]
    pool: asyncpg.Pool = request.app[DB]
    async with pool.acquire() as conn, conn.transaction():
        user_id = user_id or await accounts.user_for_connect(conn, provider, grant.subject, grant.email)
        account_id, created = await accounts.attach_account(conn, user_id, grant.email, provider, grant.subject,
                                                            flow["tz"])
        key = await vault.public_key()  # fetched each time: a rotated key is picked up at once
        await accounts.mark_pending(pool, conn, account_id)  # committed before the set, then locked by conn
        await vault.set(str(account_id), provider, key.seal(str(account_id), provider, refresh_token))
        if flow.get("contacts"):
            await _google_book(conn, request.app[PROFILES], grant, user_id, account_id)
        await accounts.audit(conn, "connect" if created else "reconnect", user_id, account_id,
                             address=grant.email, provider=provider, key_id=key.key_id)
    await accounts.settle_pending(pool, account_id)
    return user_id, account_id, created


async def _google_book(conn: asyncpg.Connection, profiles: ProfilesConfig, grant: Grant, user_id: int,
                       account_id: int) -> None:
    """The mailbox's Google contacts as an address book (once per mailbox), when the grant has the scope."""
    if grant.scope is not None and profiles.google_contacts_scope not in grant.scope.split():
        log.info("account %d: the contacts scope was not granted; no address book added", account_id)
        return
    held = await conn.fetchrow("SELECT count(*) AS books, count(*) FILTER (WHERE account_id = $2) AS this "
                               "FROM address_books WHERE user_id = $1", user_id, account_id)
    if held["this"] or held["books"] >= profiles.max_books_per_user:
        return
    url = profiles.google_carddav_url.replace("{address}", quote(grant.email, safe="@"))
    book = await conn.fetchval("INSERT INTO address_books (user_id, kind, label, url, account_id) "
                               "VALUES ($1, 'google', 'Google contacts', $2, $3) RETURNING id", user_id, url, account_id)
    await conn.execute("INSERT INTO address_book_sync (book_id) VALUES ($1)", book)
    log.info("account %d: Google contacts added as address book %d", account_id, book)


async def _log_in(request: web.Request, user_id: int) -> None:
    session = current_session(request)
    if session is not None and session.user_id == user_id:
        return
    fresh = await request.app[SESSIONS].log_in(session, user_id) if session else \
        await request.app[SESSIONS].create(user_id)
    request["session"] = fresh


@requires_user
async def logout(request: web.Request) -> web.StreamResponse:
    session = current_session(request)
    if session is not None:
        await request.app[SESSIONS].delete(session)
        request["session"] = None
        request["clear_cookie"] = True
    return redirect("/")


@requires_user
async def change_time_zone(request: web.Request) -> web.StreamResponse:
    account_id = parse_id(request.match_info["account_id"])
    form = await request.post()
    tz = time_zone(str(form.get("time_zone", "")))
    if tz is None:
        return problem(400, "That is not a time zone InboxLens knows.", "Use an IANA name such as Europe/Paris.",
                       request)
    if not account_id or not await accounts.set_time_zone(request.app[DB], request[USER_ID], account_id, tz):
        return problem(404, "No such mailbox.", request=request)
    return redirect("/")


@requires_user
async def confirm_disconnect(request: web.Request) -> web.StreamResponse:
    user_id, account_id = request[USER_ID], parse_id(request.match_info["account_id"])
    account = await accounts.account_of(request.app[DB], user_id, account_id) if account_id else None
    session = current_session(request)
    if account is None or session is None:
        return problem(404, "No such mailbox.", request=request)
    held = await accounts.holdings(request.app[METRICS], int(account["id"]))
    provider = request.app[PROVIDERS].label(str(account["provider"]))
    return html("Disconnect", pages.confirm_disconnect(int(account["id"]), str(account["address"]), provider, held,
                                                       session.csrf), request=request)


@requires_user
async def disconnect(request: web.Request) -> web.StreamResponse:
    user_id, account_id = request[USER_ID], parse_id(request.match_info["account_id"])
    account = await accounts.account_of(request.app[DB], user_id, account_id) if account_id else None
    if account is None:
        return problem(404, "No such mailbox.", request=request)
    try:
        revocation, deleted = await accounts.disconnect(request.app[DB], request.app[VAULT], request.app[METRICS],
                                                        user_id, account,
                                                        address_key=request.app[SESSIONS].address_key())
    except VaultError:
        return problem(503, "InboxLens could not reach its token vault; nothing was disconnected.",
                       "Please try again in a moment.", request)
    return html("Disconnected", pages.disconnected(account["address"], revocation, deleted),
                request=request)


@requires_user
async def settings(request: web.Request) -> web.StreamResponse:
    return await settings_page(request)


async def settings_page(request: web.Request, created: tuple[str, str] | None = None,
                        status: int = 200, notice: str = "") -> web.Response:
    """Only ever called from a handler under @requires_user: request[USER_ID] is set.
    API tokens, then contact profiles (``profiles.section``); ``notice``: HTML already escaped."""
    from inboxlens.web.pages import profiles  # it imports this module's helpers
    session = current_session(request)
    csrf = session.csrf if session else ""
    listed = await tokens.tokens_of(request.app[DB], request[USER_ID])
    section = await profiles.section(request, request[USER_ID], csrf)
    return html("Settings", notice + pages.settings(listed, csrf, created) + section, status, request=request)


@requires_user
async def create_token(request: web.Request) -> web.StreamResponse:
    user_id = request[USER_ID]
    name = tokens.clean_name(str((await request.post()).get("name", "")))
    if name is None:
        return problem(400, f"A token needs a name of 1 to {tokens.MAX_NAME} characters.",
                       "Name it after where it is used, such as \"Chrome at work\".", request)
    made = await tokens.create(request.app[DB], user_id, name)
    if made is None:
        return problem(400, f"You already have {tokens.MAX_PER_USER} API tokens.", "Revoke one first.", request)
    info, secret = made
    await accounts.audit(request.app[DB], "api_token_created", user_id, None, token_id=info.id, name=name)
    return await settings_page(request, (name, secret), 201)


@requires_user
async def revoke_token(request: web.Request) -> web.StreamResponse:
    user_id, token_id = request[USER_ID], parse_id(request.match_info["token_id"])
    name = await tokens.revoke(request.app[DB], user_id, token_id) if token_id else None
    if name is None or token_id is None:
        return problem(404, "No such API token.", request=request)
    request.app[VERIFIED_TOKENS].forget(token_id)  # refused from now on here, not after VERIFIED_FOR
    await accounts.audit(request.app[DB], "api_token_revoked", user_id, None, token_id=token_id, name=name)
    return redirect("/settings")


def parse_id(text: str) -> int | None:
    """A row id from a URL: ASCII digits only ('١' is a digit to str.isdigit, and int() reads it as 1)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None


def csrf_ok(request: web.Request, token: str) -> bool:
    session = current_session(request)
    return session is not None and bool(token) and hmac.compare_digest(token, session.csrf)
