"""API tokens: what the browser extension sends as ``Authorization: Bearer ilk_...``.

A token is ``ilk_`` + 32 random bytes (base64url): the prefix makes a leaked one easy
to recognise (secret scanners, logs). PostgreSQL keeps only its SHA-256, a name and
when it was made and last used; the user sees the token once, when it is made.
``last_used_at`` is written at most once a minute per token, so a busy extension
does not turn every read into a write.

A token PostgreSQL vouched for is taken on trust for ``VERIFIED_FOR`` seconds after
(``VerifiedTokens``): under load that is one lookup a second per token, not one per
request. So a token revoked elsewhere (another node, or straight in the database) is
refused within ``VERIFIED_FOR`` seconds; revoked on this process's settings page, at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import asyncpg

PREFIX = "ilk_"
SECRET_BYTES = 32
MAX_NAME = 100
MAX_PER_USER = 50
TOUCH_EVERY = timedelta(minutes=1)
VERIFIED_FOR = 1.0  # seconds a token PostgreSQL vouched for is trusted without asking again
MAX_VERIFIED = 1_000  # tokens kept so, the least recently vouched for going first
_SHAPE = re.compile(PREFIX + r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Principal:
    """Who an API request acts for: the user, the token it came with, and the user's mail
    accounts when PostgreSQL vouched for the token (a card needs no lookup of its own)."""

    user_id: int
    token_id: int
    accounts: frozenset[int] = frozenset()


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None


class VerifiedTokens:
    """Tokens PostgreSQL vouched for in the last ``ttl`` seconds, by SHA-256 (never the token).

    Only known tokens are kept: an unknown one is looked up every time, so guessing cannot
    fill this, and a token made a moment ago works at once.
    """

    def __init__(self, ttl: float = VERIFIED_FOR, max_size: int = MAX_VERIFIED,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.max_size, self.clock = ttl, max_size, clock
        self._kept: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()  # by when they were vouched for
        self._revoked: dict[int, float] = {}  # token id -> when forget() was told, for one ttl

    def get(self, token_hash: bytes) -> Principal | None:
        kept = self._kept.get(token_hash)
        if kept is None or self.clock() - kept[1] >= self.ttl:
            return None
        return kept[0]

    def put(self, token_hash: bytes, principal: Principal, asked: float) -> None:
        """``asked``: when the lookup that vouched for it began (``clock()``): the ttl counts from
        there, and a lookup that began before a ``forget`` of its token vouches for nothing."""
        if self._revoked.get(principal.token_id, -1.0) >= asked:
            return
        now = self.clock()
        self._kept.pop(token_hash, None)
        self._kept[token_hash] = (principal, asked)
        while self._kept and (len(self._kept) > self.max_size or now - next(iter(self._kept.values()))[1] >= self.ttl):
            self._kept.popitem(last=False)

    def forget(self, token_id: int) -> None:
        """A token revoked here is refused from now on, not after the ttl, even by a lookup that
        was under way (a lookup older than the ttl vouches for nothing anyway: kept one ttl)."""
        now = self.clock()
        self._revoked = {i: at for i, at in self._revoked.items() if now - at < self.ttl}
        self._revoked[token_id] = now
        for token_hash, (principal, _) in list(self._kept.items()):
            if principal.token_id == token_id:
                del self._kept[token_hash]

    def __len__(self) -> int:
        return len(self._kept)


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


_VOUCH = """
SELECT t.id, t.user_id, t.last_used_at < now() - $2::interval OR t.last_used_at IS NULL AS stale,
       ARRAY(SELECT a.id FROM mail_accounts a WHERE a.user_id = t.user_id) AS accounts
FROM api_tokens t WHERE t.token_hash = $1
"""


async def authenticate(pool: asyncpg.Pool, token: str, verified: VerifiedTokens | None = None) -> Principal | None:
    """The principal a presented token stands for, or None (malformed, unknown or revoked;
    revoked elsewhere within ``verified``'s ttl: it may still be trusted until then)."""
    if not well_formed(token):
        return None
    token_hash = digest(token)
    principal = verified.get(token_hash) if verified is not None else None
    if principal is not None:
        return principal
    asked = verified.clock() if verified is not None else 0.0  # before the lookup: its answer is as old
    row = await pool.fetchrow(_VOUCH, token_hash, TOUCH_EVERY)
    if row is None:
        return None
    if row["stale"]:
        await pool.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = $1", row["id"])
    principal = Principal(int(row["user_id"]), int(row["id"]), frozenset(row["accounts"]))
    if verified is not None:
        verified.put(token_hash, principal, asked)
    return principal
