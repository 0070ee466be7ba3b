"""Harvest's address-book syncs: CardDAV books (and Google's, on a mail account's grant), beside
the Scheduler, in the same process.

Each tick, due books (``address_book_sync.next_run_at <= now()``) are leased like mailboxes
(``lease_owner``, ``lease_expires_at``, ``FOR UPDATE SKIP LOCKED``), at most ``at_once`` at a
time on a node, so one book is synced by one process at a time across every node. A sync
asks the vault for its credential (``secret("book:<id>")``: the app password web sealed; or,
for a Google book, ``get(<account id>)``: an access token, sent as a Bearer), runs
``carddav.sync`` from the stored ``SyncState``, fetches photos given by URL through the egress
guard, and applies the result in one transaction, only while it still holds the lease: cards
put and deleted (``profiles.rows``), the user's profile version bumped, the new state kept,
the error cleared, the next run set ``sync_interval_seconds`` ahead.

A sync that fails changes no card: ``last_error`` gets a message for the book's owner (never a
path, an address or a credential: ``ContactsError`` messages name the server by scheme, host
and port), ``failures`` counts up and the next try backs off. Web asks for a sync now by
setting ``next_run_at = now()``; the next tick takes it. Stopping takes no new book, lets the
running syncs finish within the drain, then interrupts the rest, which give their leases back
and stay due. Log lines: a book's id and counts, never a URL, a card or a credential.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping

import asyncpg

from inboxlens.errors import ReauthRequired, UnknownAccount, VaultError
from inboxlens.profiles import carddav, egress, rows
from inboxlens.profiles.carddav import AddressBook, CardDavLimits, SyncResult, SyncState
from inboxlens.profiles.errors import AddressBookRefused, ContactsError
from inboxlens.profiles.vcard import Photo, Profile
from inboxlens.service_errors import LeaseLost, VaultUnavailable
from inboxlens.vault.client import VaultClient

log = logging.getLogger("inboxlens.harvest.books")
BACKOFF_FIRST = timedelta(minutes=5)  # after one failure; doubling with each, up to the interval x 4
PHOTOS_AT_ONCE = 4
PHOTOS_PER_SYNC = 200  # photos by URL fetched in one sync; the rest wait for their card's next change
CANCEL_GRACE = 5.0
VAULT_DOWN = "InboxLens could not reach its token vault; it tries again shortly"


@dataclass(frozen=True)
class BookSettings:
    interval: timedelta = timedelta(hours=1)  # [profiles] sync_interval_seconds
    lease: timedelta = timedelta(minutes=30)  # a sync that runs longer is cut short before its lease ends
    at_once: int = 2  # books synced at once by this process
    allow_private_addresses: bool = False  # [profiles]: CardDAV and photo URLs on this network
    limits: CardDavLimits = carddav.DEFAULT_LIMITS

    @property
    def time_limit(self) -> float:
        """How long one sync may run: well inside its lease, so a lease never lapses under a sync."""
        return self.lease.total_seconds() * 0.8


@dataclass(frozen=True)
class Book:
    """A leased book: what harvest may read of it (never its label) and its sync state."""

    id: int
    user_id: int
    kind: str  # "carddav" or "google"
    url: str
    username: str
    account_id: int | None
    state: SyncState
    failures: int

    def __repr__(self) -> str:
        return f"Book(id={self.id}, kind={self.kind!r})"


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:books"


async def claim_due(pool: asyncpg.Pool, owner: str, lease: timedelta, limit: int) -> list[Book]:
    """Lease up to ``limit`` due CardDAV and Google books no one else holds."""
    found = await pool.fetch(
        """
        UPDATE address_book_sync s SET lease_owner = $1, lease_expires_at = now() + $2
        FROM address_books b
        WHERE s.book_id = b.id AND s.book_id IN (
            SELECT q.book_id FROM address_book_sync q JOIN address_books c ON c.id = q.book_id
            WHERE c.kind IN ('carddav', 'google') AND q.next_run_at <= now()
              AND (q.lease_expires_at IS NULL OR q.lease_expires_at < now())
            ORDER BY q.next_run_at LIMIT $3 FOR UPDATE OF q SKIP LOCKED)
        RETURNING b.id, b.user_id, b.kind, b.url, b.username, b.account_id, s.sync_token, s.etags, s.failures
        """, owner, lease, limit)
    return [Book(r["id"], r["user_id"], r["kind"], r["url"] or "", r["username"] or "", r["account_id"],
                 SyncState(r["sync_token"] or "", _etags(r["etags"])), r["failures"]) for r in found]


def _etags(stored: Any) -> dict[str, str]:
    value = json.loads(stored) if isinstance(stored, str) else stored
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


async def apply(pool: asyncpg.Pool, book: Book, owner: str, result: SyncResult, changed: Mapping[str, Profile],
                interval: timedelta) -> int:
    """The sync's result in one transaction, under the lease (``LeaseLost``: nothing applied).
    Returns the book's card count."""
    async with pool.acquire() as conn, conn.transaction():
        held = await conn.fetchval("SELECT 1 FROM address_book_sync WHERE book_id = $1 AND lease_owner = $2 "
                                   "AND lease_expires_at > now() FOR UPDATE", book.id, owner)
        if held is None:
            raise LeaseLost(f"lost the lease on address book {book.id}")
        gone = set(result.deleted)
        if result.full:  # a whole listing: a stored card it no longer lists is gone, whatever the old state said
            stored = await conn.fetch("SELECT href FROM profile_cards WHERE book_id = $1", book.id)
            gone |= {r["href"] for r in stored} - set(result.state.etags)
        await rows.delete_cards(conn, book.id, gone - set(changed))
        await rows.put_cards(conn, book.id, book.user_id, changed)
        if changed or gone:
            await rows.bump_version(conn, book.user_id)
        cards = int(await conn.fetchval("SELECT count(*) FROM profile_cards WHERE book_id = $1", book.id))
        await conn.execute(
            """UPDATE address_book_sync SET sync_token = $3, etags = $4::jsonb, cards = $5, last_sync_at = now(),
                   last_error = NULL, failures = 0, next_run_at = now() + $6, lease_owner = NULL,
                   lease_expires_at = NULL
               WHERE book_id = $1 AND lease_owner = $2""",
            book.id, owner, result.state.token or None, json.dumps(dict(result.state.etags)), cards, interval)
    return cards


async def fail(pool: asyncpg.Pool, book: Book, owner: str, message: str, settings: BookSettings) -> timedelta:
    """Record a failed sync for the owner to see, and when to try again; the cards stay as they were."""
    ceiling = settings.interval * 4
    backoff: timedelta = min(BACKOFF_FIRST * 2 ** min(book.failures, 16), ceiling)
    await pool.execute("""UPDATE address_book_sync SET last_error = $3, failures = failures + 1,
                              next_run_at = now() + $4, lease_owner = NULL, lease_expires_at = NULL
                          WHERE book_id = $1 AND lease_owner = $2""", book.id, owner, message[:500], backoff)
    return backoff


async def release(pool: asyncpg.Pool, book: Book, owner: str) -> None:
    """Give the lease back untouched (an interrupted sync): the book stays due."""
    await pool.execute("UPDATE address_book_sync SET lease_owner = NULL, lease_expires_at = NULL "
                       "WHERE book_id = $1 AND lease_owner = $2", book.id, owner)


class BookSyncer:
    """Runs the due books' syncs, ``settings.at_once`` at a time, until stopped."""

    def __init__(self, pool: asyncpg.Pool, vault: VaultClient, settings: BookSettings, *,
                 owner: str | None = None) -> None:
        self.pool, self.vault, self.settings = pool, vault, settings
        self.owner = owner or owner_name()
        self._running: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()

    async def round(self) -> int:
        """Lease what is due, up to the free slots, and start syncing it; how many started."""
        free = self.settings.at_once - len(self._running)
        if free <= 0:
            return 0
        books = await claim_due(self.pool, self.owner, self.settings.lease, free)
        for book in books:
            task = asyncio.create_task(self.sync(book))
            self._running.add(task)
            task.add_done_callback(self._ended)
        return len(books)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._freed.set()

    async def once(self) -> int:
        """Sync what is due now, in the foreground (tests, and a node's first look); how many ran."""
        books = await claim_due(self.pool, self.owner, self.settings.lease, self.settings.at_once)
        await asyncio.gather(*(self.sync(book) for book in books))
        return len(books)

    async def run(self, stopping: asyncio.Event, tick: float, drain: float) -> bool:
        """A round every ``tick`` (and when a sync ends) until ``stopping``; then drain. Returns
        whether every running sync finished on its own."""
        while not stopping.is_set():
            self._freed.clear()
            try:
                await self.round()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.error("address books: scheduling failed (%s); trying again", type(e).__name__)
            waits = [asyncio.create_task(stopping.wait()), asyncio.create_task(self._freed.wait())]
            await asyncio.wait(waits, timeout=tick, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
        return await self.drain(drain)

    async def drain(self, deadline: float) -> bool:
        running = set(self._running)
        if not running:
            return True
        _, pending = await asyncio.wait(running, timeout=deadline)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_GRACE)
            log.warning("stopping: %d address book sync(s) interrupted; they run at the next start", len(pending))
        return not pending

    async def sync(self, book: Book) -> None:
        """One book's sync; never raises but CancelledError (then the lease is given back)."""
        try:
            await self._sync(book)
        except asyncio.CancelledError:
            await asyncio.shield(self._quietly(release(self.pool, book, self.owner)))
            raise
        except LeaseLost:
            log.warning("address book %d: the lease ran out; another sync may take it, nothing applied", book.id)
        except Exception as e:  # noqa: BLE001 - one book must not end the loop; its lease lapses
            log.error("address book %d: the sync failed and could not be recorded (%s)", book.id, type(e).__name__)

    async def _sync(self, book: Book) -> None:
        try:
            async with asyncio.timeout(self.settings.time_limit):
                result, changed = await self._fetch(book)
        except ContactsError as e:
            await self._failed(book, str(e), type(e).__name__)
            return
        except TimeoutError:
            await self._failed(book, f"the sync took longer than {self.settings.time_limit:g} s; "
                                     "it is tried again later", "TimeoutError")
            return
        except VaultError as e:
            await self._failed(book, _vault_message(book, e), type(e).__name__)
            return
        cards = await apply(self.pool, book, self.owner, result, changed, self.settings.interval)
        log.info("address book %d: %d changed, %d deleted, %d skipped, %d cards (%s)", book.id, len(changed),
                 len(result.deleted), len(result.skipped), cards, "full listing" if result.full else "incremental")

    async def _failed(self, book: Book, message: str, kind: str) -> None:
        backoff = await fail(self.pool, book, self.owner, message, self.settings)
        log.warning("address book %d: sync failed (%s), failure %d; next try in %d s", book.id, kind,
                    book.failures + 1, backoff.total_seconds())

    async def _fetch(self, book: Book) -> tuple[SyncResult, dict[str, Profile]]:
        """The changes and their profiles (photos by URL fetched), or a ContactsError / VaultError."""
        s = self.settings
        async with egress.session(allow_private=s.allow_private_addresses, limit=2,
                                  timeout=s.limits.timeout) as http:
            address_book = await self._address_book(book)
            try:
                result = await carddav.sync(address_book, book.state, limits=s.limits, session=http)
            except AddressBookRefused:
                if book.kind != "google":
                    raise
                # An access token the server refused: the vault refreshes it (once) and we try again.
                address_book = await self._address_book(book, rejected=address_book.bearer)
                result = await carddav.sync(address_book, book.state, limits=s.limits, session=http)
            return result, await self._with_photos(http, result.changed)

    async def _address_book(self, book: Book, rejected: str = "") -> AddressBook:
        if book.kind == "google":
            token = await self.vault.get(str(book.account_id), rejected=rejected)
            return AddressBook.with_bearer(book.url, token.token)
        return AddressBook(book.url, book.username, await self.vault.secret(f"book:{book.id}"))

    async def _with_photos(self, http: Any, changed: Mapping[str, Profile]) -> dict[str, Profile]:
        """Each changed card whose photo is a URL, with the photo's bytes when they could be fetched."""
        wanted = [href for href, p in changed.items() if p.photo is not None and p.photo.url and not p.photo.data]
        slots = asyncio.Semaphore(PHOTOS_AT_ONCE)

        async def fetch(href: str) -> tuple[str, tuple[bytes, str] | None]:
            photo = changed[href].photo
            assert photo is not None
            async with slots:
                return href, await egress.fetch_image(http, photo.url)
        fetched = dict(await asyncio.gather(*(fetch(href) for href in wanted[:PHOTOS_PER_SYNC])))
        out = dict(changed)
        for href, image in fetched.items():
            photo = out[href].photo
            if image is not None and photo is not None:
                out[href] = dataclasses.replace(out[href], photo=Photo(image[1], image[0], photo.url))
        return out

    @staticmethod
    async def _quietly(step: Any) -> None:
        try:
            await step
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass  # the lease lapses on its own


def _vault_message(book: Book, error: VaultError) -> str:
    """What the owner reads when the credential could not be had (never the vault's own text)."""
    if isinstance(error, ReauthRequired):
        return "Google no longer accepts InboxLens's access to this mailbox: reconnect it"
    if isinstance(error, UnknownAccount):
        return ("the mailbox's access is missing: reconnect it" if book.kind == "google"
                else "the app password is missing: remove the address book and add it again")
    if isinstance(error, VaultUnavailable):
        return VAULT_DOWN
    return "InboxLens could not get the address book's credential; it tries again later"


def settings_from(config: Any) -> BookSettings:
    """``[profiles]`` as the syncer's settings (``config`` is the process's Config)."""
    p = config.profiles
    return BookSettings(interval=timedelta(seconds=p.sync_interval_seconds),
                        allow_private_addresses=p.allow_private_addresses)
