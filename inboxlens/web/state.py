"""Typed application state (aiohttp AppKeys), and the request's session and API caller."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiohttp import web

from inboxlens.config.schema import ProfilesConfig
from inboxlens.metrics.store import MetricsStore
from inboxlens.profiles.read import ProfileCache
from inboxlens.vault.client import VaultClient
from inboxlens.web.oauth import Providers
from inboxlens.web.api.ratelimit import RateLimiter
from inboxlens.web.sessions import Session, SessionStore
from inboxlens.web.tokens import VerifiedTokens

RETRY_AFTER = "5"  # seconds: about what a supervised PostgreSQL takes to come back
_DOWN = (asyncpg.PostgresConnectionError,  # the connection was lost or could not be made
         asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CrashShutdownError,
         asyncpg.exceptions.CannotConnectNowError,  # the server stops, crashed, or is starting up
         asyncpg.exceptions.TooManyConnectionsError)  # max_connections reached
# What asyncpg raises instead, about as often as not, when the server ends a connection under a
# query: an InternalClientError "cannot switch to state 15; another operation (2) is in progress"
# (MagicStack/asyncpg#784, #1069). Its other InternalClientErrors (a codec missing) are bugs.
_LOST_UNDER_A_QUERY = "cannot switch to state"
# asyncpg's own words for a connection that died under a transaction or a pool shutting down
# (an InterfaceError, like its misuse errors, which stay 500s).
_CLOSED = ("the underlying connection is closed", "connection is closed", "pool is closing", "pool is closed")


def database_down(e: BaseException) -> BaseException | None:
    """The exception in ``e``'s chain that says PostgreSQL did not answer (down, restarting,
    refusing connections), as opposed to a bug; None for anything else. The request then gets
    a 503 "try again shortly", not a 500 (app.headers, api.errors.errors). A socket error or
    timeout counts only when it was raised inside asyncpg (not, say, a browser that hung up
    mid-body); an InterfaceError only when it says the connection or pool is closed, or a lost
    connection caused it (a transaction that cannot roll back on a connection that died), never
    for misuse (wrong arguments, a connection used twice)."""
    seen: list[BaseException] = []
    link: BaseException | None = e
    while link is not None and link not in seen and len(seen) < 8:
        seen.append(link)
        if isinstance(link, asyncpg.exceptions.ProtocolViolationError):
            return None  # a PostgresConnectionError by class, but our (or asyncpg's) protocol bug
        if isinstance(link, _DOWN) or (isinstance(link, OSError) and _inside_asyncpg(link)) or (
                isinstance(link, asyncpg.InterfaceError) and any(words in str(link) for words in _CLOSED)) or (
                isinstance(link, asyncpg.exceptions.InternalClientError)
                and str(link).startswith(_LOST_UNDER_A_QUERY)):
            return link
        # The cause, else the exception being handled when this one was raised, unless `from None` hid it.
        link = link.__cause__ if link.__cause__ is not None else \
            (None if link.__suppress_context__ else link.__context__)
    return None


def _inside_asyncpg(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("asyncpg."):
            return True
        tb = tb.tb_next
    return False


VAULT = web.AppKey("vault", VaultClient)
DB = web.AppKey("db", asyncpg.Pool)
SESSIONS = web.AppKey("sessions", SessionStore)
PROVIDERS = web.AppKey("providers", Providers)
SECURE_COOKIES = web.AppKey("secure_cookies", bool)
METRICS = web.AppKey("metrics", MetricsStore)
CORS_ORIGINS = web.AppKey("cors_origins", frozenset[str])
API_LIMITER = web.AppKey("api_limiter", RateLimiter)
ANONYMOUS_LIMITER = web.AppKey("anonymous_limiter", RateLimiter)  # per client address, nobody logged in
TRUSTED_PROXIES = web.AppKey("trusted_proxies", frozenset[str])
PROFILES = web.AppKey("profiles", ProfilesConfig)  # [profiles]: books, the SSRF switch, Google's contacts
VERIFIED_TOKENS = web.AppKey("verified_tokens", VerifiedTokens)  # API tokens trusted for a second (tokens.py)
PROFILE_CACHE = web.AppKey("profile_cache", ProfileCache)  # cards' profile blocks and photo ids (profiles/read.py)


@dataclass(frozen=True)
class Caller:
    """Who an API request acts for, and the rate-limit bucket it draws from."""

    user_id: int
    bucket: str  # "token:<id>" or "session:<hash of the session id>"
    accounts: frozenset[int] | None = None  # a token's: the user's accounts as of VERIFIED_FOR ago at most


CALLER = web.RequestKey("caller", Caller)
KEEP_CACHE_CONTROL = "inboxlens_keep_cache_control"  # on a response: app.headers keeps its own Cache-Control


def current_session(request: web.Request) -> Session | None:
    session: Session | None = request.get("session")
    return session


async def ensure_session(request: web.Request) -> Session:
    session = current_session(request)
    if session is None:
        session = await request.app[SESSIONS].create()
        request["session"] = session
    return session
