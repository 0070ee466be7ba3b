"""A user's address books in PostgreSQL (web's side): add, list, remove, "sync now", and the
per-mailbox public-profile switch (docs/profiles.md). Pages are in ``pages/profiles.py``.

A CardDAV book's app password goes to the vault, sealed here with the vault's public key
exactly like a refresh token, under the key ``book:<id>`` with provider ``carddav``; it is
never stored, logged or shown here. The order of the two stores is what keeps nothing
half-done: the book's rows are inserted in a transaction, the vault stores the secret, then
the transaction commits; a failed commit has the vault forget the secret again, and a web
that dies in between leaves a mark (``book_pending``) that web's sweep finds: the vault
forgets a password whose book never committed (``accounts.forget_orphans``). Removing
goes the other way round: the vault forgets first (a book left without its password shows
an error and can be removed again; a password left without its book could not be found).
Every change to what a card shows bumps the user's profile version in its transaction.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import unicodedata
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiohttp.abc import AbstractResolver, ResolveResult

from inboxlens.errors import InboxLensError, VaultError
from inboxlens.profiles import egress, rows
from inboxlens.web import accounts
from inboxlens.vault.client import VaultClient

log = logging.getLogger("inboxlens.web")
PROVIDER = "carddav"  # the vault entry's provider for a book's app password
MAX_LABEL = 100
MAX_URL = 2048
MAX_USERNAME = 256
MAX_PASSWORD = 256
REACH_SECONDS = 5.0  # how long adding a book waits for its server's name to resolve
LOOKUPS = 4  # such lookups running at once in this process (a thread each); one more is told "busy"


class BookRefused(InboxLensError):
    """The user's own mistake or limit: the message is for them (never quotes a password)."""


class Busy(InboxLensError):
    """LOOKUPS names are being resolved for adds already: try again in a moment."""


def secret_id(book_id: int) -> str:
    return f"book:{book_id}"


PENDING = accounts.Pending("book_pending", "book_id", "address_books", secret_id)  # a book's password being stored


def clean_text(value: str, limit: int) -> str | None:
    """One line of 1 to ``limit`` characters without control characters, stripped; else None."""
    value = value.strip()
    if not 0 < len(value) <= limit or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        return None
    return value


def url_problem(url: str, allow_private: bool) -> str | None:
    """What is wrong with an address book's URL, for its owner; None when its shape is fine.

    Web never fetches it: harvest connects through the egress guard, which checks the address
    a name resolves to at connect time. Here only the URL's text is judged; ``reach_problem``
    then looks at what its name resolves to now."""
    if not 0 < len(url) <= MAX_URL or any(c.isspace() or not c.isprintable() for c in url):
        return f"The address book's URL must be 1 to {MAX_URL} characters, without spaces."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "That is not a URL InboxLens can use."
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "The URL must start with https:// and name a server."
    if parts.username is not None or "@" in parts.netloc:
        return "Put the user name and app password in their own fields, not in the URL."
    if parts.fragment or parts.query:
        return "The URL must be the address book's own, without ? or #."
    local = _local(parts.hostname)
    if parts.scheme == "http" and not (local == "loopback" and allow_private):
        return "The URL must start with https:// (plain http only to this machine, and only if the administrator " \
               "allows private addresses)."
    if local and not allow_private:
        return "InboxLens does not connect to local or private network addresses (the administrator can allow them)."
    return None


async def reach_problem(url: str, allow_private: bool, resolver: Any = None, owner: int | None = None) -> str | None:
    """After ``url_problem``: a message when the URL's server name does not resolve now, or
    resolves only to addresses InboxLens may not reach; None when it may be tried.

    A hint at add time, so a typo or an internal name is told at once rather than at the first
    sync; harvest's connect-time guard is the check that holds (a name may resolve elsewhere
    later). One message for both cases, as the guard has: the answer must not tell the user
    which internal names exist. ``resolver``: what names resolve with (tests give a lying one);
    by default the system's, at most LOOKUPS at a time and one per ``owner`` (a user id):
    ``Busy`` past that."""
    try:
        reachable = await asyncio.wait_for(
            egress.check_url(url, allow_private=allow_private, resolver=resolver or _Lookups(owner)), REACH_SECONDS)
    except TimeoutError:
        reachable = False
    if reachable:
        return None
    return (f"InboxLens cannot reach {egress.origin(url)}: its name does not resolve from here, or only to a local "
            "or private network address (the administrator can allow those). Check the URL.")


class _Lookups(AbstractResolver):
    """``getaddrinfo`` on a daemon thread of its own, at most LOOKUPS at a time in this process.

    asyncio's default executor is shared with every other lookup web makes (its providers),
    and a lookup that outlives REACH_SECONDS keeps running in it: a few hanging names would
    stall them all. Here a hanging lookup holds one of LOOKUPS threads until the system
    resolver gives up, and an add past the bound is told to try again (``Busy``), not queued."""

    lock = threading.Lock()
    running = 0
    owners: set[int] = set()  # users with a lookup running: one each

    def __init__(self, owner: int | None = None) -> None:
        self.owner = owner

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        with _Lookups.lock:
            if self.owner in _Lookups.owners:
                raise Busy("InboxLens is still checking the last server you named; nothing was added.")
            if _Lookups.running >= LOOKUPS:
                raise Busy("InboxLens is checking other address books' servers right now; nothing was added.")
            _Lookups.running += 1
            if self.owner is not None:
                _Lookups.owners.add(self.owner)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[Any]] = loop.create_future()

        def look_up() -> None:
            outcome: tuple[list[Any] | None, Exception | None] = (None, OSError("the lookup failed"))
            try:
                outcome = (_getaddrinfo(host, port, family, socket.SOCK_STREAM), None)
            except Exception as e:  # handed to the coroutine that waits, if it still does
                outcome = (None, e)
            finally:  # whatever happened, the place is given back
                self._done()
                try:
                    loop.call_soon_threadsafe(_settle, answer, *outcome)
                except RuntimeError:
                    pass  # the loop is closed: nobody waits any more

        try:
            threading.Thread(target=look_up, name="book-lookup", daemon=True).start()
        except BaseException as e:  # "can't start new thread": the process is at its limit
            self._done()
            if isinstance(e, Exception):
                raise Busy("InboxLens cannot check the server's name right now; nothing was added.") from None
            raise
        return [{"hostname": host, "host": info[4][0], "port": info[4][1], "family": info[0], "proto": info[2],
                 "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV} for info in await answer]

    def _done(self) -> None:
        with _Lookups.lock:
            _Lookups.running -= 1
            if self.owner is not None:
                _Lookups.owners.discard(self.owner)

    async def close(self) -> None:
        pass


_getaddrinfo = socket.getaddrinfo  # the system resolver (tests put a slow one here)


def _settle(answer: asyncio.Future[list[Any]], infos: list[Any] | None, error: Exception | None) -> None:
    if answer.done():  # given up on (REACH_SECONDS)
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(infos or [])


def _local(host: str) -> str | None:
    """"loopback", "private" (any address that is not global) or None, for a host as written."""
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: the egress guard judges what it resolves to, when harvest connects
    if address.is_loopback:
        return "loopback"
    return None if address.is_global else "private"


async def lock_and_count(conn: asyncpg.Connection, user_id: int, limit: int) -> None:
    """In the adding transaction: the user's row locked (two adds at once count in turn), and
    BookRefused when they have ``limit`` books already."""
    await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", user_id)
    problem = _over(await conn.fetchval("SELECT count(*) FROM address_books WHERE user_id = $1", user_id), limit)
    if problem:
        raise BookRefused(problem)


async def limit_problem(pool: asyncpg.Pool, user_id: int, limit: int) -> str | None:
    """Before anything is resolved or stored: the message when the user may add no book now
    (``lock_and_count`` judges again, in the adding transaction)."""
    if limit == 0:
        return _over(0, 0)
    return _over(await pool.fetchval("SELECT count(*) FROM address_books WHERE user_id = $1", user_id), limit)


def _over(held: int, limit: int) -> str | None:
    if held < limit:
        return None
    return (f"You have {held} address book(s); at most {limit} are allowed here. Remove one first."
            if limit else "The administrator has turned address books off on this server.")


async def add_carddav(pool: asyncpg.Pool, vault: VaultClient, user_id: int, *, label: str, url: str, username: str,
                      password: str, limit: int) -> int:
    """The new book's id; BookRefused (over the limit) or VaultError (nothing added, either way)."""
    stored: str | None = None
    try:
        async with pool.acquire() as conn, conn.transaction():
            await lock_and_count(conn, user_id, limit)
            book_id = int(await conn.fetchval(
                "INSERT INTO address_books (user_id, kind, label, url, username) VALUES ($1, 'carddav', $2, $3, $4) "
                "RETURNING id", user_id, label, url, username))
            await conn.execute("INSERT INTO address_book_sync (book_id, next_run_at) VALUES ($1, now())", book_id)
            key = await vault.public_key()  # fetched each time: a rotated key is picked up at once
            await accounts.mark_pending(pool, conn, book_id, kind=PENDING)  # a death after the set: swept
            await vault.set(secret_id(book_id), PROVIDER, key.seal(secret_id(book_id), PROVIDER, password))
            stored = secret_id(book_id)
    except BaseException:
        if stored is not None:  # the vault has it, the book did not commit: take it back
            await asyncio.shield(_forget_quietly(vault, stored))
        raise
    await accounts.settle_pending(pool, book_id, kind=PENDING)
    log.info("address book %d added (carddav)", book_id)
    return book_id


async def _forget_quietly(vault: VaultClient, key: str) -> None:
    try:
        await vault.forget(key, revoke=False)
    except VaultError as e:
        log.error("the vault kept the password of %s, whose book did not commit (%s)", key, type(e).__name__)


async def books_of(pool: asyncpg.Pool, user_id: int) -> list[dict[str, Any]]:
    found = await pool.fetch(
        """SELECT b.id, b.kind, b.label, b.created_at, b.account_id, s.last_sync_at, s.last_error, s.failures,
                  s.next_run_at, (SELECT count(*) FROM profile_cards c WHERE c.book_id = b.id) AS cards
           FROM address_books b LEFT JOIN address_book_sync s ON s.book_id = b.id
           WHERE b.user_id = $1 ORDER BY b.id""", user_id)
    return [dict(r) for r in found]


async def remove(pool: asyncpg.Pool, vault: VaultClient, user_id: int, book_id: int) -> bool:
    """Forget the book's password (CardDAV), then delete it with its cards; False if not the user's.
    VaultError: nothing removed."""
    kind = await pool.fetchval("SELECT kind FROM address_books WHERE id = $1 AND user_id = $2", book_id, user_id)
    if kind is None:
        return False
    if kind == "carddav":
        await vault.forget(secret_id(book_id), revoke=False)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM address_books WHERE id = $1 AND user_id = $2", book_id, user_id)
        await rows.bump_version(conn, user_id)
    log.info("address book %d removed (%s)", book_id, kind)
    return True


async def sync_now(pool: asyncpg.Pool, user_id: int, book_id: int) -> bool:
    """Make a synced book due now (harvest takes it at its next look); False if there is none such."""
    due = await pool.fetchval(
        "UPDATE address_book_sync s SET next_run_at = now() FROM address_books b "
        "WHERE s.book_id = b.id AND b.id = $1 AND b.user_id = $2 RETURNING s.book_id", book_id, user_id)
    return due is not None


async def public_switches(pool: asyncpg.Pool, user_id: int) -> list[dict[str, Any]]:
    found = await pool.fetch("SELECT id, address, public_profiles FROM mail_accounts WHERE user_id = $1 "
                             "ORDER BY address", user_id)
    return [dict(r) for r in found]


async def set_public(pool: asyncpg.Pool, user_id: int, account_id: int, on: bool) -> bool:
    """Opt a mailbox in or out of public profiles; out deletes what they brought. False if not the user's."""
    async with pool.acquire() as conn, conn.transaction():
        owned = await conn.fetchval("SELECT id FROM mail_accounts WHERE id = $1 AND user_id = $2 FOR UPDATE",
                                    account_id, user_id)
        if owned is None:
            return False
        if on:
            await conn.execute("UPDATE mail_accounts SET public_profiles = true WHERE id = $1", account_id)
        else:  # as profiles.public.forget_public_profiles does (harvest's module: web does not load it)
            await conn.execute("UPDATE mail_accounts SET public_profiles = false WHERE id = $1", account_id)
            await conn.execute("DELETE FROM public_profiles WHERE account_id = $1", account_id)
        await rows.bump_version(conn, user_id)
    return True
