"""Typed application state (aiohttp AppKeys) and the request's session."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from ..vault.client import VaultClient
from .oauth import Providers
from .sessions import Session, SessionStore

VAULT = web.AppKey("vault", VaultClient)
DB = web.AppKey("db", asyncpg.Pool)
SESSIONS = web.AppKey("sessions", SessionStore)
PROVIDERS = web.AppKey("providers", Providers)
SECURE_COOKIES = web.AppKey("secure_cookies", bool)


def current_session(request: web.Request) -> Session | None:
    session: Session | None = request.get("session")
    return session


async def ensure_session(request: web.Request) -> Session:
    session = current_session(request)
    if session is None:
        session = await request.app[SESSIONS].create()
        request["session"] = session
    return session
