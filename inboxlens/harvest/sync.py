"""One account's sync: vault token → IMAP (XOAUTH2) → mailboxes → batches of headers → PostgreSQL.

Per mailbox: check UIDVALIDITY against the checkpoint (a change starts the mailbox
over; stored messages stay single by their msg_key), find the UIDs to fetch (the
first sync goes back ``first_sync_days`` with UID SEARCH SINCE, later ones take
UIDs above the checkpoint), fetch them in batches, and store each batch with its
checkpoint under the account's lease. The next batch is fetched while one is parsed and
stored (``_Pipeline``: a bounded number of batches in flight, so memory stays flat).

``sync_account`` raises nothing but CancelledError: whatever fails (the vault, the IMAP
server, PostgreSQL, the metrics store, a bug) is recorded on the account in words
(``failures``, ``last_error``), the lease is given back and the account backs off.
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable, Protocol, Sequence

import asyncpg

from inboxlens.config.vault import ProviderConfig
from inboxlens.errors import ReauthRequired, VaultError
from inboxlens.metrics.model import AccountRef
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.metrics.store import MetricsStore
from inboxlens.service_errors import (AuthenticationRefused, LeaseLost, MailError, MailServerError, MetricsUnavailable,
                                      traceback_without_message)
from inboxlens.vault.client import VaultClient
from inboxlens.harvest import store
from inboxlens.harvest.headers.parse import FIELDS, HeaderRecord, parse_header_block, parse_internaldate

log = logging.getLogger("inboxlens.harvest")

HEADER_FIELDS = FIELDS  # fetch exactly what the parser reads (headers.parse says why X-Received is not)
STORE_WAITING = 3  # parsed batches that may wait for a store under way; the next store takes them all
GIVE_BACK_SECONDS = 2.0  # how long an interrupted sync may take to give its lease back
MAX_ERROR = 500  # characters of last_error


@dataclass(frozen=True)
class Fetched:
    uid: int
    internal_date: str
    flags: frozenset[str]
    header: bytes
    gm_msgid: int | None = None
    gm_thrid: int | None = None
    gm_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mailbox:
    name: str
    flags: frozenset[str]


class MailSession(Protocol):
    capabilities: frozenset[str]

    async def authenticate(self, user: str, access_token: str) -> None: ...
    async def identify(self) -> None: ...
    async def mailboxes(self) -> list[Mailbox]: ...
    async def examine(self, mailbox: str) -> int: ...  # returns UIDVALIDITY
    async def search_since(self, since: datetime) -> Sequence[int]: ...
    async def search_above(self, uid: int) -> Sequence[int]: ...
    async def fetch_headers(self, uids: Sequence[int], fields: Sequence[str], gmail: bool) -> list[Fetched]: ...
    async def logout(self) -> None: ...


Connect = Callable[[ProviderConfig], Awaitable[MailSession]]


@dataclass(frozen=True)
class SyncSettings:
    batch_size: int = 250
    first_sync_days: int = 90
    lease: timedelta = timedelta(minutes=5)
    trusted_authserv_ids: frozenset[str] = frozenset()
    # Fold the new raw rows into the message index and daily rollups after each sync (and
    # delete them). Tests that look at raw rows turn it off.
    aggregate: bool = True


MAX_AUTHSERV_IDS = 16  # distinct authserv-ids one sync tallies (received mail is nearly always topped by one)


@dataclass
class AuthservTally:
    """Which authserv-id tops the received mail of one sync (offered as the one to trust).

    Misra-Gries: at most MAX_AUTHSERV_IDS counters, so forged ids cost nothing however many
    there are, and any id on more than 1/(MAX_AUTHSERV_IDS + 1) of the mail keeps its counter.
    """

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, records: Sequence[HeaderRecord], own: frozenset[str]) -> None:
        for r in records:
            found = r.authserv_id
            if found is None or (r.sender is not None and r.sender.key in own):
                continue  # sent mail carries no header of your server's
            if found in self.counts or len(self.counts) < MAX_AUTHSERV_IDS:
                self.counts[found] = self.counts.get(found, 0) + 1
            else:  # one each off every counter, the newcomer's included
                self.counts = {a: n - 1 for a, n in self.counts.items() if n > 1}

    def most_frequent(self) -> str | None:
        return min(self.counts, key=lambda a: (-self.counts[a], a), default=None)


@dataclass
class Progress:
    mailbox: str = ""
    done: int = 0
    total: int = 0
    stored: int = 0


def choose_mailboxes(boxes: list[Mailbox], gmail: bool) -> list[str]:
    """Gmail: its \\All mailbox holds sent and received mail. Others: INBOX and \\Sent."""
    if gmail:
        every = [b.name for b in boxes if "\\All" in b.flags]
        if every:
            return every[:1]
    sent = [b.name for b in boxes if "\\Sent" in b.flags]
    inbox = [b.name for b in boxes if b.name.upper() == "INBOX"]
    return inbox + sent[:1]


def ascending(uids: Sequence[int], above: int) -> array[int]:
    """UIDs above ``above``, ascending, as a compact array (servers mostly answer sorted already)."""
    kept = array("I", (u for u in uids if u > above))
    if any(kept[i] >= kept[i + 1] for i in range(len(kept) - 1)):
        kept = array("I", sorted(set(kept)))
    return kept


class AccountSync:
    def __init__(self, pool: asyncpg.Pool, vault: VaultClient, connect: Connect, provider: ProviderConfig,
                 account: store.Account, owner: str, settings: SyncSettings,
                 report: Callable[[Progress], None] = lambda p: None, metrics: MetricsStore | None = None) -> None:
        self.pool = pool
        self.metrics: MetricsStore = metrics or PgMetricsStore(pool)
        self.vault = vault
        self.connect = connect
        self.provider = provider
        self.account = account
        self.owner = owner
        self.settings = settings
        self.report = report
        self.progress = Progress()
        self.authserv = AuthservTally()
        self.where = f"{provider.imap_host}:{provider.imap_port}"

    async def run(self) -> int:
        """Sync every chosen mailbox; returns how many new messages were stored."""
        session = await self._login()
        try:
            await session.identify()
            gmail = "X-GM-EXT-1" in session.capabilities
            for mailbox in choose_mailboxes(await session.mailboxes(), gmail):
                await self._sync_mailbox(session, mailbox, gmail)
        finally:
            await session.logout()
        return self.progress.stored

    async def _login(self) -> MailSession:
        """XOAUTH2 with the vault's token; if refused, once more with a fresh one."""
        token = await self.vault.get(str(self.account.id))
        for attempt in (1, 2):
            session = await self.connect(self.provider)
            try:
                await session.authenticate(self.account.address, token.token)
                return session
            except AuthenticationRefused:
                await session.logout()
                if attempt == 2:
                    raise
                log.info("account %d: XOAUTH2 refused; asking the vault for a fresh token", self.account.id)
                token = await self.vault.get(str(self.account.id), rejected=token.token)
        raise AssertionError("unreachable")

    async def _sync_mailbox(self, session: MailSession, mailbox: str, gmail: bool) -> None:
        uidvalidity = await session.examine(mailbox)
        saved = await store.checkpoint(self.pool, self.account.id, mailbox)
        if saved is None or saved[0] != uidvalidity:
            if saved is not None:
                log.warning("account %d: %s UIDVALIDITY changed %d -> %d; syncing it again",
                            self.account.id, mailbox, saved[0], uidvalidity)
            await store.reset_checkpoint(self.pool, self.account.id, mailbox, uidvalidity)
            saved = (uidvalidity, 0)
        last_uid = saved[1]
        if last_uid == 0:
            since = datetime.now(timezone.utc) - timedelta(days=self.settings.first_sync_days)
            uids = ascending(await session.search_since(since), 0)
        else:
            uids = ascending(await session.search_above(last_uid), last_uid)
        self.progress = Progress(mailbox, 0, len(uids), self.progress.stored)
        self.report(self.progress)
        await _Pipeline(self, session, mailbox, uidvalidity, gmail).run(uids, self.settings.batch_size)

    def parse(self, fetched: Fetched, mailbox: str) -> HeaderRecord:
        try:
            internal_date = parse_internaldate(fetched.internal_date)
        except ValueError:  # the server, not a sender, wrote it: the server is broken
            raise MailServerError(f"{self.where} sent an unreadable INTERNALDATE for UID {fetched.uid} "
                                  f"in {mailbox!r}") from None
        return parse_header_block(
            fetched.uid, internal_date, fetched.header,
            trusted_authserv_ids=self.settings.trusted_authserv_ids, flags=fetched.flags,
            gm_msgid=fetched.gm_msgid, gm_thrid=fetched.gm_thrid, gm_labels=fetched.gm_labels)


class _Pipeline:
    """One mailbox's batches, overlapped: the next batch is fetched while one is parsed and stored.

    One fetch runs ahead, never more. Parsed batches wait while a store is under way, and the
    next store takes all that waited in one transaction (a slow database gets fewer, larger
    commits); at most STORE_WAITING batches wait, so memory holds a few batches whatever the
    mailbox's size. Stores run in order, each once the one before has committed, so a
    checkpoint covers only stored rows. After a failure a store under way still commits (its
    rows are whole) and the fetch ahead is dropped; when harvest stops, both are cancelled.
    """

    def __init__(self, sync: AccountSync, session: MailSession, mailbox: str, uidvalidity: int, gmail: bool) -> None:
        self.sync = sync
        self.session = session
        self.mailbox = mailbox
        self.uidvalidity = uidvalidity
        self.gmail = gmail
        self.own = frozenset({sync.account.address.lower()})
        self.fetching: asyncio.Task[list[Fetched]] | None = None
        self.storing: asyncio.Task[None] | None = None
        self.waiting: list[tuple[array[int], list[HeaderRecord]]] = []

    async def run(self, uids: array[int], size: int) -> None:
        try:
            await self._run([uids[start:start + size] for start in range(0, len(uids), size)])
        except BaseException as e:  # any failure, cancellation included: no task left behind
            await self._wind_down(cancel_store=isinstance(e, asyncio.CancelledError))
            raise

    async def _run(self, batches: list[array[int]]) -> None:
        self.fetching = self._fetch(batches[0]) if batches else None
        for n, batch in enumerate(batches):
            assert self.fetching is not None
            fetched = await self.fetching
            self.fetching = self._fetch(batches[n + 1]) if n + 1 < len(batches) else None
            records = [self.sync.parse(f, self.mailbox) for f in fetched]
            del fetched
            self.sync.authserv.add(records, self.own)
            self.waiting.append((batch, records))
            if self.storing is None or self.storing.done() or len(self.waiting) >= STORE_WAITING:
                await self._store_waiting()
        await self._store_waiting()
        await self._stored()

    def _fetch(self, batch: array[int]) -> asyncio.Task[list[Fetched]]:
        return asyncio.create_task(self.session.fetch_headers(batch, HEADER_FIELDS, self.gmail))

    async def _store_waiting(self) -> None:
        """Once the store under way has committed, store every waiting batch in one transaction."""
        await self._stored()
        if self.waiting:
            waiting, self.waiting = self.waiting, []
            self.storing = asyncio.create_task(self._store(waiting))

    async def _store(self, batches: list[tuple[array[int], list[HeaderRecord]]]) -> None:
        sync = self.sync
        records = [record for _, parsed in batches for record in parsed]
        sync.progress.stored += await store.store_batch(
            sync.pool, sync.metrics, sync.account, sync.owner, sync.settings.lease, self.mailbox, self.uidvalidity,
            batches[-1][0][-1], records, self.own)
        sync.progress.done += sum(len(uids) for uids, _ in batches)
        sync.report(sync.progress)

    async def _stored(self) -> None:
        """Wait for the store under way (if any) to commit; its failure is raised here."""
        if self.storing is not None:
            await self.storing
            self.storing = None

    async def _wind_down(self, cancel_store: bool) -> None:
        tasks = [task for task in (self.fetching, self.storing) if task is not None]
        if self.fetching is not None:
            self.fetching.cancel()
        if self.storing is not None and cancel_store:
            self.storing.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: the failure that counts is the one being raised


async def sync_account(pool: asyncpg.Pool, vault: VaultClient, connect: Connect, provider: ProviderConfig,
                       account: store.Account, owner: str, settings: SyncSettings, *,
                       interval: timedelta, report: Callable[[Progress], None] = lambda p: None,
                       metrics: MetricsStore | None = None) -> int:
    """Run one account's sync and give its lease back with what happened; returns messages stored.

    Raises only CancelledError (after giving the lease back), and an error of the database
    while recording a failure (the lease then lapses by itself).
    """
    sync = AccountSync(pool, vault, connect, provider, account, owner, settings, report, metrics)
    try:
        stored = await sync.run()
        error = await _fold(sync) if settings.aggregate else None
    except asyncio.CancelledError:
        await _give_back(sync)
        raise
    except Exception as e:  # anything at all: recorded on the account, never lost in a task
        await _failed(sync, interval, e)
        return sync.progress.stored
    if error is None:
        await store.release(pool, account.id, owner, interval, first_sync_done=True,
                            authserv_id=sync.authserv.most_frequent())
        log.info("account %d: %d new message(s)", account.id, stored)
    else:  # the rows are kept and stored; the next sync folds them, and soon
        await _back_off(sync, interval, error, first_sync_done=True)
    return stored


async def _fold(sync: AccountSync) -> str | None:
    """Fold the new rows into rollups and insights; None, or why it failed."""
    account = sync.account
    try:
        folded = await sync.metrics.aggregate(AccountRef(account.id, account.address.lower(), account.time_zone))
    except Exception as e:  # the sync's rows are stored and stay; only the insights wait
        return f"aggregation: {cause(sync, e)}"
    log.info("account %d: %d message(s) folded into %d day(s)", account.id, folded.folded, len(folded.days))
    return None


async def _failed(sync: AccountSync, interval: timedelta, error: Exception) -> None:
    pool, account, owner = sync.pool, sync.account, sync.owner
    if isinstance(error, ReauthRequired):
        log.warning("account %d needs reconnecting; not retrying until it is", account.id)
        await store.set_account_status(pool, account.id, "reauth_required")
        await store.release(pool, account.id, owner, interval, error="reauth_required")
    elif isinstance(error, AuthenticationRefused):
        log.warning("account %d: %s, with a fresh token too; marking it", account.id, error)
        await store.set_account_status(pool, account.id, "error")
        await store.release(pool, account.id, owner, interval, error="imap_auth_refused")
    elif isinstance(error, LeaseLost):
        log.warning("account %d: lease lost to another harvester; stopping", account.id)
    else:
        await _back_off(sync, interval, cause(sync, error))


async def _back_off(sync: AccountSync, interval: timedelta, error: str, first_sync_done: bool = False) -> None:
    """Record ``error`` and make the account due again after a backoff that doubles with each failure."""
    failures = await store.failures(sync.pool, sync.account.id) + 1
    backoff = min(interval, timedelta(seconds=30 * 2 ** min(failures, 10)))
    log.warning("account %d: %s; retrying in %s", sync.account.id, error, backoff)
    await store.release(sync.pool, sync.account.id, sync.owner, backoff, error=error[:MAX_ERROR],
                        first_sync_done=first_sync_done)


async def _give_back(sync: AccountSync) -> None:
    """Harvest is stopping mid-sync: give the lease back (due at once, for whoever runs next), bounded."""
    log.warning("account %d: interrupted by shutdown; giving its lease back", sync.account.id)
    try:
        await asyncio.wait_for(store.release(sync.pool, sync.account.id, sync.owner, timedelta(0),
                                             error="interrupted: harvest stopped during the sync"),
                               GIVE_BACK_SECONDS)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
        log.warning("account %d: lease not given back (%s); it lapses by itself", sync.account.id, type(e).__name__)


def cause(sync: AccountSync, error: Exception) -> str:
    """What went wrong, in words, for ``last_error`` and the log: who failed and how, no secret, no header."""
    if isinstance(error, MailError):
        return str(error)  # ours, naming host:port
    if isinstance(error, VaultError):
        return f"access token for {sync.where}: the vault said {error}"
    if isinstance(error, (MetricsUnavailable, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        return words(error)
    log.error("account %d: unexpected error %s", sync.account.id, traceback_without_message(error))
    return f"internal error ({type(error).__name__}) while syncing {sync.where}; see the harvest log"


def words(error: BaseException) -> str:
    """A failure of a store or a connection in words; the type alone for anything else."""
    if isinstance(error, MetricsUnavailable):
        return f"metrics store unavailable ({error})"
    if isinstance(error, asyncpg.PostgresError):
        return f"database error {error.sqlstate} ({type(error).__name__})"  # its text may quote data
    if isinstance(error, asyncpg.InterfaceError):
        return f"database client error ({type(error).__name__})"
    if isinstance(error, OSError):
        return f"connection failed ({error.strerror or type(error).__name__})"
    return f"internal error ({type(error).__name__})"
