"""Server-side sessions: a signed, HttpOnly, SameSite=Lax cookie naming a row in PostgreSQL.

The cookie is ``<random id>.<HMAC-SHA256 of it>``; the table keeps only the id's
SHA-256. A session starts anonymous (it holds pending OAuth flows) and gets a new
id when someone logs in (no session fixation). Every session has its own CSRF
token, which state-changing forms must echo.

An anonymous session lives only as long as a sign-in may take (``ANONYMOUS_LIFETIME``):
anyone can make one with a GET, so it must not cost a row for the 14 days a
logged-in session keeps. The sweep removes it soon after.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg

from inboxlens.errors import StartError

COOKIE = "inboxlens_session"
KEY_BYTES = 32
MAX_COOKIE = 200
ANONYMOUS_LIFETIME = timedelta(minutes=10)  # as long as a pending OAuth flow is honoured


@dataclass
class Session:
    id: str
    user_id: int | None
    csrf: str
    data: dict[str, Any] = field(default_factory=dict)
    changed: bool = False  # data changed: save it
    new_cookie: bool = False  # the id changed: send the cookie

    def __repr__(self) -> str:
        return f"Session(user_id={self.user_id})"


def load_key(path: Path) -> bytes:
    """The cookie-signing key, made on first use (0600, in the web's own state directory).

    One that is there but damaged or unreadable stops web rather than being replaced: several
    nodes share one key (``inboxlens keys import``), and a new one would end every session.
    """
    try:
        with open(path, "rb") as f:
            key = f.read(KEY_BYTES + 1)
    except FileNotFoundError:
        return _new_key(path)
    except PermissionError:
        raise StartError(f"web's cookie-signing key {path} is not readable by uid {os.getuid()}") from None
    if len(key) != KEY_BYTES:
        raise StartError(f"web's cookie-signing key {path} is damaged (not {KEY_BYTES} bytes): put back a copy "
                         "('inboxlens keys import' from another node) or delete it to make a new one (every "
                         "session ends)")
    return key


def _new_key(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return key


class SessionStore:
    def __init__(self, pool: asyncpg.Pool, key: bytes, days: int) -> None:
        self.pool = pool
        self.key = key
        self.lifetime = timedelta(days=days)

    def cookie_value(self, session: Session) -> str:
        return f"{session.id}.{self._mac(session.id)}"

    def _mac(self, session_id: str) -> str:
        return hmac.new(self.key, session_id.encode(), hashlib.sha256).hexdigest()

    def _id_from(self, cookie: str | None) -> str | None:
        if not cookie or len(cookie) > MAX_COOKIE or "." not in cookie:
            return None
        session_id, mac = cookie.rsplit(".", 1)
        return session_id if hmac.compare_digest(mac, self._mac(session_id)) else None

    async def load(self, cookie: str | None) -> Session | None:
        session_id = self._id_from(cookie)
        if session_id is None:
            return None
        row = await self.pool.fetchrow(
            "SELECT user_id, csrf_token, data FROM web_sessions WHERE id_hash = $1 AND expires_at > now()",
            _hash(session_id))
        if row is None:
            return None
        return Session(session_id, row["user_id"], row["csrf_token"], json.loads(row["data"]))

    async def create(self, user_id: int | None = None, data: dict[str, Any] | None = None) -> Session:
        session = Session(secrets.token_urlsafe(32), user_id, secrets.token_urlsafe(32), data or {}, new_cookie=True)
        await self.pool.execute(
            "INSERT INTO web_sessions (id_hash, user_id, csrf_token, data, expires_at) VALUES ($1, $2, $3, $4, $5)",
            _hash(session.id), user_id, session.csrf, json.dumps(session.data), self._expiry(user_id))
        return session

    async def save(self, session: Session) -> None:
        await self.pool.execute("UPDATE web_sessions SET data = $2 WHERE id_hash = $1",
                                _hash(session.id), json.dumps(session.data))
        session.changed = False

    async def log_in(self, session: Session, user_id: int) -> Session:
        """A new id and CSRF token for the logged-in session; the old id stops working."""
        await self.delete(session)
        fresh = await self.create(user_id, session.data)
        return fresh

    async def delete(self, session: Session) -> None:
        await self.pool.execute("DELETE FROM web_sessions WHERE id_hash = $1", _hash(session.id))

    async def sweep(self) -> int:
        status = await self.pool.execute("DELETE FROM web_sessions WHERE expires_at <= now()")
        return int(str(status).split()[-1])

    def _expiry(self, user_id: int | None) -> datetime:
        return datetime.now(timezone.utc) + self._lifetime(user_id)

    def _lifetime(self, user_id: int | None) -> timedelta:
        return self.lifetime if user_id is not None else min(self.lifetime, ANONYMOUS_LIFETIME)

    def cookie_max_age(self, session: Session) -> int:
        return int(self._lifetime(session.user_id).total_seconds())

    def address_key(self) -> bytes:
        """The key audit events hash a forgotten mailbox address with (derived: never the cookie key itself)."""
        return hmac.new(self.key, b"inboxlens audit address v1", hashlib.sha256).digest()


def _hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()
