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

# What asyncpg raises while PostgreSQL is down, restarting, shutting down or cancelling: the
# request gets a 503 "try again shortly", not a 500 (app.headers, api.errors.errors). A timeout
# (the pool had no connection to give in time) is an OSError too.
DATABASE_DOWN: tuple[type[BaseException], ...] = (OSError, asyncpg.PostgresConnectionError,
                                                  asyncpg.exceptions.OperatorInterventionError,
                                                  asyncpg.InterfaceError)
RETRY_AFTER = "5"  # seconds: about what a supervised PostgreSQL takes to come back

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
