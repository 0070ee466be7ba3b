"""API tokens: what the browser extension sends as ``Authorization: Bearer ilk_...``.

A token is ``ilk_`` + 32 random bytes (base64url): the prefix makes a leaked one easy
to recognise (secret scanners, logs). PostgreSQL keeps only its SHA-256, a name and
when it was made and last used; the user sees the token once, when it is made.
``last_used_at`` is written at most once a minute per token, so a busy extension
does not turn every read into a write.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

PREFIX = "ilk_"
SECRET_BYTES = 32
MAX_NAME = 100
MAX_PER_USER = 50
TOUCH_EVERY = timedelta(minutes=1)
_SHAPE = re.compile(PREFIX + r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Principal:
    """Who an API request acts for: the user, and the token it came with."""

    user_id: int
    token_id: int


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def well_formed(token: str) -> bool:
    return _SHAPE.fullmatch(token) is not None


def clean_name(name: str) -> str | None:
    name = " ".join(name.split())
    return name if 0 < len(name) <= MAX_NAME else None


async def create(pool: asyncpg.Pool, user_id: int, name: str) -> tuple[TokenInfo, str] | None:
    """A new token for the user (its plaintext, shown once), or None at the per-user limit."""
    token = new_token()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT id FROM users WHERE id = $1 FOR UPDATE", user_id)
        if await conn.fetchval("SELECT count(*) FROM api_tokens WHERE user_id = $1", user_id) >= MAX_PER_USER:
            return None
        row = await conn.fetchrow("INSERT INTO api_tokens (user_id, name, token_hash) VALUES ($1, $2, $3) "
                                  "RETURNING id, name, created_at, last_used_at", user_id, name, digest(token))
    return TokenInfo(**dict(row)), token


async def tokens_of(pool: asyncpg.Pool, user_id: int) -> list[TokenInfo]:
    rows = await pool.fetch("SELECT id, name, created_at, last_used_at FROM api_tokens WHERE user_id = $1 "
                            "ORDER BY created_at, id", user_id)
    return [TokenInfo(**dict(r)) for r in rows]


async def revoke(pool: asyncpg.Pool, user_id: int, token_id: int) -> str | None:
    """Delete the user's token; its name, or None if they have no such token."""
    name = await pool.fetchval("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2 RETURNING name",
                               token_id, user_id)
    return str(name) if name is not None else None


async def authenticate(pool: asyncpg.Pool, token: str) -> Principal | None:
    """The principal a presented token stands for, or None (malformed, unknown or revoked)."""
    if not well_formed(token):
        return None
    row = await pool.fetchrow("SELECT id, user_id, last_used_at < now() - $2::interval OR last_used_at IS NULL "
                              "AS stale FROM api_tokens WHERE token_hash = $1", digest(token), TOUCH_EVERY)
    if row is None:
        return None
    if row["stale"]:
        await pool.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = $1", row["id"])
    return Principal(int(row["user_id"]), int(row["id"]))
