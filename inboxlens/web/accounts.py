"""Users, mail accounts and the audit trail in PostgreSQL (web's side), and what the
dashboard and the REST API both do to an account: its live status, sync now, disconnect.

A sign-in is identified by the provider and the ID token's subject, never by an e-mail
address alone (two providers, or one provider over time, may assert the same address).
A mailbox connected before subjects were kept gets its subject at its next sign-in
through the same provider with the same address. Once a mailbox is disconnected, the
audit trail keeps only a keyed hash (HMAC-SHA256) of its address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Callable

import asyncpg

from inboxlens.errors import InboxLensError, VaultError
from inboxlens.metrics.store import MetricsStore
from inboxlens.profiles import rows
from inboxlens.vault.client import VaultClient


class MarkBusy(InboxLensError):
    """No database connection for a pending mark within MARK_WAIT: too many connects or adds at once."""


class AddressTaken(InboxLensError):
    """The mailbox is already attached to another InboxLens user."""


AUDIT_BATCH = 500


async def user_for_login(pool: asyncpg.Pool, provider: str, subject: str, email: str) -> int | None:
    """The user whose mailbox at this provider has this subject (filled in for a mailbox from before subjects)."""
    async with pool.acquire() as conn, conn.transaction():
        value = await conn.fetchval("SELECT user_id FROM mail_accounts WHERE provider = $1 AND subject = $2 "
                                    "ORDER BY id LIMIT 1", provider, subject)
        if value is None:
            value = await conn.fetchval("UPDATE mail_accounts SET subject = $2 WHERE provider = $1 AND address = $3 "
                                        "AND subject IS NULL RETURNING user_id", provider, subject, email)
    return int(value) if value is not None else None


async def user_for_connect(conn: asyncpg.Connection, provider: str, subject: str, email: str) -> int:
    """Whom a mailbox connected without a logged-in session belongs to (attach_account checks the rest).

    Its provider identity's user; else the user that has this mailbox; else a new user. A
    user row named after the address but holding other mailboxes is not handed to whoever
    asserts that address: they must log in as that user first.
    """
    known = await conn.fetchval("SELECT user_id FROM mail_accounts WHERE provider = $1 AND subject = $2 "
                                "ORDER BY id LIMIT 1", provider, subject) \
        or await conn.fetchval("SELECT user_id FROM mail_accounts WHERE address = $1", email)
    if known is not None:
        return int(known)
    holder = await conn.fetchrow("SELECT u.id, EXISTS (SELECT 1 FROM mail_accounts a WHERE a.user_id = u.id) AS busy "
                                 "FROM users u WHERE u.email = $1", email)
    if holder is not None and holder["busy"]:
        raise AddressTaken(f"{email} is the name of an InboxLens user with other mailboxes; log in as that user "
                           "first, then connect it.")
    return await find_or_create_user(conn, email)


async def find_or_create_user(conn: asyncpg.Connection, email: str) -> int:
    user_id = await conn.fetchval(
        "INSERT INTO users (email) VALUES ($1) ON CONFLICT (email) DO UPDATE SET email = excluded.email RETURNING id",
        email)
    return int(user_id)


async def attach_account(conn: asyncpg.Connection, user_id: int, address: str, provider: str, subject: str,
                         tz: str) -> tuple[int, bool]:
    """The account row for this mailbox under this user, created if new; (id, created)."""
    row = await conn.fetchrow("SELECT id, user_id, provider, subject FROM mail_accounts WHERE address = $1 FOR UPDATE",
                              address)
    if row is not None:
        if row["user_id"] != user_id:
            raise AddressTaken(f"{address} is already connected to another InboxLens user.")
        if row["provider"] == provider and row["subject"] not in (None, subject):
            raise AddressTaken(f"{address} was connected by another account at this provider.")
        await conn.execute("UPDATE mail_accounts SET provider = $2, subject = $3, status = 'active', "
                           "connected_at = now() WHERE id = $1", row["id"], provider, subject)
        return int(row["id"]), False
    account_id = await conn.fetchval(
        "INSERT INTO mail_accounts (user_id, address, provider, subject, time_zone) VALUES ($1, $2, $3, $4, $5) "
        "RETURNING id", user_id, address, provider, subject, tz)
    return int(account_id), True


async def accounts_of(pool: asyncpg.Pool, user_id: int) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT id, address, provider, time_zone, status, connected_at, last_sync_at "
                            "FROM mail_accounts WHERE user_id = $1 ORDER BY address", user_id)
    return [dict(r) for r in rows]


async def accounts_with_sync(pool: asyncpg.Pool, user_id: int) -> list[dict[str, Any]]:
    """The user's accounts with harvest's view of them (zeros for one never scheduled)."""
    rows = await pool.fetch(
        "SELECT a.id, a.address, a.provider, a.time_zone, a.status, a.connected_at, a.last_sync_at, "
        "h.next_run_at, coalesce(h.messages_seen, 0) AS messages_seen, coalesce(h.failures, 0) AS failures, "
        "h.last_error FROM mail_accounts a LEFT JOIN harvest_state h ON h.account_id = a.id "
        "WHERE a.user_id = $1 ORDER BY a.address", user_id)
    return [dict(r) for r in rows]


async def account_of(pool: asyncpg.Pool | asyncpg.Connection, user_id: int, account_id: int) -> dict[str, Any] | None:
    """An account only if it belongs to this user (anyone else's looks exactly like a missing one)."""
    row = await pool.fetchrow("SELECT id, address, provider, time_zone, status FROM mail_accounts "
                              "WHERE id = $1 AND user_id = $2", account_id, user_id)
    return dict(row) if row else None


async def set_time_zone(pool: asyncpg.Pool, user_id: int, account_id: int, tz: str) -> bool:
    status = await pool.execute("UPDATE mail_accounts SET time_zone = $3 WHERE id = $1 AND user_id = $2",
                                account_id, user_id, tz)
    return str(status) == "UPDATE 1"


async def set_status(pool: asyncpg.Pool, account_id: int, status: str) -> None:
    await pool.execute("UPDATE mail_accounts SET status = $2 WHERE id = $1", account_id, status)


async def live_status(pool: asyncpg.Pool, vault: VaultClient, account: dict[str, Any]) -> str:
    """The vault knows first when a grant is gone: the status, updated from what it says."""
    try:
        state = await vault.token_state(str(account["id"]))
    except VaultError:
        return str(account["status"])
    if state == "reauth_required" and account["status"] != "reauth_required":
        await set_status(pool, int(account["id"]), "reauth_required")
        return "reauth_required"
    return "missing token" if state == "missing" else str(account["status"])


async def request_sync(pool: asyncpg.Pool, account_id: int) -> Any:
    """Make the account due now (harvest picks it up on its next tick); when it is due."""
    return await pool.fetchval(
        "INSERT INTO harvest_state (account_id, next_run_at) VALUES ($1, now()) ON CONFLICT (account_id) "
        "DO UPDATE SET next_run_at = least(harvest_state.next_run_at, now()) RETURNING next_run_at", account_id)


async def disconnect(pool: asyncpg.Pool, vault: VaultClient, metrics: MetricsStore, user_id: int,
                     account: dict[str, Any], *, address_key: bytes) -> tuple[str, dict[str, int]]:
    """Revoke and forget the token, delete the account and its metrics; (revocation, deleted).

    The vault goes first: if it cannot be reached (VaultError), nothing is deleted. The
    audit trail keeps the address only as a keyed hash from then on (``address_key``).
    """
    account_id = int(account["id"])
    held = await holdings(metrics, account_id)
    answer = await vault.forget(str(account_id), revoke=True)
    async with pool.acquire() as conn, conn.transaction():
        deleted = {**await delete_account(conn, user_id, account_id), **held}
        hashed = address_hmac(address_key, str(account["address"]))
        await conn.execute(_FORGET_ADDRESS, str(account["address"]), hashed, user_id)
        await audit(conn, "disconnect", user_id, account_id, address_hmac=hashed,
                    revocation=answer["revocation"], deleted=deleted)
    await metrics.forget_account(account_id)
    return str(answer["revocation"]), deleted


# A connect's set and its account's commit are two stores: a token handed to the vault is
# marked pending first (committed on its own), then the connect's transaction locks the mark
# (FOR UPDATE) until it commits, and unmarks it after. A mark older than any connect takes
# (web's vault calls time out after seconds), unlocked, whose account does not exist is a token
# nobody can see: the sweep has the vault forget it. Not revoke it: at some providers (Google)
# revoking one refresh token ends the whole grant, the one a retried connect may just have got.
# Adding a CardDAV book does the same with its password (``books.PENDING``).
ORPHAN_AFTER = timedelta(seconds=30)
MARK_WAIT = 5.0  # seconds for the mark's own connection (the connect's transaction holds another)


@dataclass(frozen=True)
class Pending:
    """Where marks of one kind live: the table, its id column, the table the id's row commits
    to, and the vault key the id's secret is stored under. Names are ours, never a caller's."""
    table: str
    column: str
    owner: str
    vault_key: Callable[[int], str]


CONNECTS = Pending("connect_pending", "account_id", "mail_accounts", str)


async def mark_pending(pool: asyncpg.Pool, conn: asyncpg.Connection, account_id: int,
                       wait: float = MARK_WAIT, kind: Pending = CONNECTS) -> None:
    """Mark on a second connection, waited for at most ``wait`` seconds (MarkBusy: a pool full
    of connects, each holding one connection, fails fast instead of waiting on itself); then
    lock the mark in the connect's transaction ``conn``, so no sweep judges it meanwhile."""
    try:
        own = await pool.acquire(timeout=wait)
    except TimeoutError:
        raise MarkBusy(f"no database connection for the mark within {wait:g} s") from None
    try:
        await own.execute(f"INSERT INTO {kind.table} ({kind.column}) VALUES ($1) ON CONFLICT ({kind.column}) "
                          "DO UPDATE SET created_at = now()", account_id)
    finally:
        await pool.release(own)
    await conn.execute(f"SELECT 1 FROM {kind.table} WHERE {kind.column} = $1 FOR UPDATE", account_id)


async def settle_pending(pool: asyncpg.Pool, account_id: int, kind: Pending = CONNECTS) -> None:
    """Unmark after the commit; if that fails, the sweep unmarks it (its account exists)."""
    try:
        await pool.execute(f"DELETE FROM {kind.table} WHERE {kind.column} = $1", account_id)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pass


async def forget_orphans(pool: asyncpg.Pool, vault: VaultClient, older: timedelta = ORPHAN_AFTER,
                         kind: Pending = CONNECTS) -> list[int]:
    """Tokens stored for accounts whose connect never committed (with ``books.PENDING``: passwords for
    books whose add never committed): forgotten in the vault, then unmarked; marks whose row
    exists are just unmarked; a mark a connect still holds locked is skipped. Returns the ids
    forgotten. A vault that cannot be reached leaves the mark for the next sweep."""
    forgotten = []
    table, column = kind.table, kind.column
    for marked in await pool.fetch(f"SELECT {column} FROM {table} WHERE created_at < now() - "
                                   f"$1::interval ORDER BY {column} LIMIT 100", older):
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(f"SELECT {column} AS id FROM {table} WHERE {column} = $1 AND created_at < "
                                      "now() - $2::interval FOR UPDATE SKIP LOCKED", marked[column], older)
            if row is None:
                continue  # a connect holds it, or it was re-marked or settled meanwhile
            # Whether its row exists, asked after the lock is ours (a statement of its own, so a fresh
            # snapshot): a connect that committed and let go just before would be missed otherwise.
            kept = await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {kind.owner} WHERE id = $1)", row["id"])
            if not kept and (await vault.forget(kind.vault_key(row["id"]), revoke=False)).get("forgotten"):
                forgotten.append(int(row["id"]))
            await conn.execute(f"DELETE FROM {table} WHERE {column} = $1", row["id"])
    return forgotten


async def holdings(metrics: MetricsStore, account_id: int) -> dict[str, int]:
    """What InboxLens learned from a mailbox, counted: shown before Disconnect and after it."""
    months = await metrics.monthly(account_id, date(1970, 1, 1), date.today() + timedelta(days=31))
    _, domains = await metrics.sender_domains_page(account_id, limit=1)
    return {"messages": sum(m.received + m.sent for m in months), "sender domains": domains}


async def delete_account(conn: asyncpg.Connection, user_id: int, account_id: int) -> dict[str, int]:
    """Delete the account and everything harvested for it; how many rows of each kind went.

    The profiles the mailbox brought (its Google address book's cards, its public profiles)
    are deleted by name first, not only by the cascades, so the owner's profile version is
    bumped with them (the public_profiles trigger finds the owner only while the row exists)
    and every card drops them at its next read."""
    books = await conn.fetchval("WITH gone AS (DELETE FROM address_books WHERE account_id = $1 AND user_id = $2 "
                                "RETURNING id) SELECT count(*) FROM gone", account_id, user_id)
    public = await conn.fetchval("WITH gone AS (DELETE FROM public_profiles p USING mail_accounts a WHERE "
                                 "p.account_id = a.id AND a.id = $1 AND a.user_id = $2 RETURNING 1) "
                                 "SELECT count(*) FROM gone", account_id, user_id)
    deleted = await conn.fetchval("DELETE FROM mail_accounts WHERE id = $1 AND user_id = $2 RETURNING id",
                                  account_id, user_id)
    await rows.bump_version(conn, user_id)
    return {"mail accounts": 1 if deleted is not None else 0, "address books": int(books),
            "public profiles": int(public)}


def address_hmac(key: bytes, address: str) -> str:
    """What the audit trail keeps of a forgotten address: matchable by whoever holds the key, readable by no one."""
    return hmac.new(key, address.lower().encode(), hashlib.sha256).hexdigest()


# $1 the address, $2 its keyed hash, $3 the user (NULL: any; the index on user_id narrows it otherwise).
_FORGET_ADDRESS = """
UPDATE audit_events SET detail = (detail - 'address') || jsonb_build_object('address_hmac', $2::text)
WHERE detail->>'address' = $1 AND ($3::bigint IS NULL OR user_id = $3)
"""


async def forget_disconnected_addresses(pool: asyncpg.Pool, address_key: bytes) -> int:
    """Audit events naming a mailbox no longer connected (from before hashing): hash them; how many."""
    done = 0
    while True:
        addresses = await pool.fetch(
            "SELECT DISTINCT detail->>'address' AS address FROM audit_events e WHERE detail ? 'address' AND NOT EXISTS "
            "(SELECT 1 FROM mail_accounts a WHERE a.address = e.detail->>'address') LIMIT $1", AUDIT_BATCH)
        for row in addresses:
            await pool.execute(_FORGET_ADDRESS, row["address"], address_hmac(address_key, row["address"]), None)
        done += len(addresses)
        if len(addresses) < AUDIT_BATCH:
            return done


async def audit(conn: asyncpg.Pool | asyncpg.Connection, kind: str, user_id: int | None,
                account_id: int | None, **detail: Any) -> None:
    await conn.execute("INSERT INTO audit_events (kind, user_id, account_id, detail) VALUES ($1, $2, $3, $4)",
                       kind, user_id, account_id, json.dumps(detail))
