"""The harvest scheduler: lease due accounts, sync them with bounded concurrency, sweep old raw rows.

Concurrency is bounded overall and per IMAP host (Gmail allows about 15 connections
per account; one sync uses one connection, and we stay far below per host).

Nothing that fails ends the scheduler: a sync records its own failure on its account
(``sync_account``), a failed round or sweep (PostgreSQL or the metrics store away) is
logged and tried again at the next tick. Stopping takes no new sync, lets the running
ones finish within a deadline, then interrupts the rest (they give their leases back).

It counts syncs, their duration and messages, and times each fold (``Telemetry``); with a
``snapshot`` directory, ``run`` writes the counts there every few seconds for web's
metrics listener (``inboxlens/observability.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, cast

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Histogram

from inboxlens.config.vault import ProviderConfig
from inboxlens.errors import InboxLensError
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.metrics.model import AccountRef, FoldResult
from inboxlens.metrics.store import DEFAULT_BATCH, MetricsStore
from inboxlens.observability import (DURATION_BUCKETS, FAMILIES, SNAPSHOT_SECONDS, Sample, remove_leftovers,
                                     vault_samples, write_snapshot)
from inboxlens.service_errors import traceback_without_message
from inboxlens.vault.client import VaultClient
from inboxlens.harvest import store
from inboxlens.harvest.sync import Connect, Progress, SyncSettings, sync_account, words

log = logging.getLogger("inboxlens.harvest")
SWEEP_EVERY = 3600.0
CANCEL_GRACE = 5.0  # seconds an interrupted sync has to log out and give its lease back


@dataclass(frozen=True)
class Limits:
    total: int = 8
    per_host: int = 4


class Telemetry:
    """What harvest counts, in the families web exports (``observability.FAMILIES``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.syncs = self._counter("inboxlens_harvest_syncs")
        self.sync_seconds = self._histogram("inboxlens_harvest_sync_duration_seconds")
        self.messages = self._counter("inboxlens_harvest_messages")
        self.folds = self._counter("inboxlens_harvest_folds")
        self.fold_seconds = self._histogram("inboxlens_harvest_fold_duration_seconds")

    def _counter(self, name: str) -> Counter:
        family = FAMILIES[name]
        return Counter(name, family.help, family.labels, registry=self.registry)

    def _histogram(self, name: str) -> Histogram:
        family = FAMILIES[name]
        return Histogram(name, family.help, family.labels, registry=self.registry, buckets=DURATION_BUCKETS)

    def samples(self) -> list[Sample]:
        return [(s.name, s.labels, s.value) for family in self.registry.collect() for s in family.samples
                if not s.name.endswith("_created")]


class _TimedFold:
    """The metrics store as one sync sees it: its fold is timed, and whether it ran and worked kept."""

    def __init__(self, store: MetricsStore, telemetry: Telemetry) -> None:
        self._store = store
        self._telemetry = telemetry
        self.outcome = "failed"  # no fold: the sync failed before it

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def aggregate(self, account: AccountRef, *, batch_size: int = DEFAULT_BATCH) -> FoldResult:
        started = time.monotonic()
        try:
            result = await self._store.aggregate(account, batch_size=batch_size)
        except Exception:
            self._folded("failed", started)
            self.outcome = "fold_failed"
            raise
        self._folded("ok", started)
        self.outcome = "ok"
        return result

    def _folded(self, outcome: str, started: float) -> None:
        self._telemetry.folds.labels(outcome).inc()
        self._telemetry.fold_seconds.observe(time.monotonic() - started)


async def _first(stopping: asyncio.Event, freed: asyncio.Event, seconds: float) -> None:
    """Until either event is set, or ``seconds`` passed."""
    waits = [asyncio.create_task(stopping.wait()), asyncio.create_task(freed.wait())]
    try:
        await asyncio.wait(waits, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def owner_name() -> str:
    """Who holds a lease: unique per process on any node."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Scheduler:
    def __init__(self, pool: asyncpg.Pool, vault: VaultClient, connect: Connect,
                 providers: Mapping[str, ProviderConfig], settings: SyncSettings, *, interval: timedelta,
                 limits: Limits = Limits(), owner: str | None = None, metrics: MetricsStore | None = None,
                 snapshot: Path | None = None) -> None:
        self.pool = pool
        self.metrics: MetricsStore = metrics or PgMetricsStore(pool)
        self.vault = vault
        self.connect = connect
        self.providers = providers
        self.settings = settings
        self.interval = interval
        self.limits = limits
        self.owner = owner or owner_name()
        self._total = asyncio.Semaphore(limits.total)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._running: set[asyncio.Task[int]] = set()
        self._freed = asyncio.Event()  # a sync ended: its slot may take the next due account
        self.report: Callable[[Progress], None] = lambda progress: None
        self.telemetry = Telemetry()
        self.snapshot = snapshot  # where run() writes telemetry for web; None: nowhere
        self._snapshot_failing = False

    async def round(self, *, new_accounts: bool = True) -> int:
        """Lease what is due (up to the free slots) and start syncing it; returns how many started.
        ``new_accounts``: first give accounts connected since a harvest_state row (one scan of
        mail_accounts: each tick, not each time a slot frees)."""
        if new_accounts:
            await store.schedule_new_accounts(self.pool)
        free = self.limits.total - len(self._running)
        if free <= 0:
            return 0
        accounts = await store.claim_due(self.pool, self.owner, self.settings.lease, free)
        for account in accounts:
            task = asyncio.create_task(self._sync(account))
            self._running.add(task)
            task.add_done_callback(self._ended)
        return len(accounts)

    def _ended(self, task: asyncio.Task[int]) -> None:
        self._running.discard(task)
        self._freed.set()

    async def _sync(self, account: store.Account) -> int:
        """One account's sync; never raises but CancelledError, so no task's exception goes unseen."""
        try:
            return await self._sync_leased(account)
        except Exception as e:  # sync_account records every failure; here recording it failed too
            log.error("account %d: the sync failed and could not be recorded (%s); its lease lapses in %s",
                      account.id, words(e), self.settings.lease)
            return 0

    async def _sync_leased(self, account: store.Account) -> int:
        provider = self.providers.get(account.provider)
        if provider is None or not provider.imap_host:
            log.error("account %d: provider %r has no IMAP host configured", account.id, account.provider)
            await store.release(self.pool, account.id, self.owner, self.interval, error="no_imap_host")
            return 0
        host = self._hosts.setdefault(provider.imap_host, asyncio.Semaphore(self.limits.per_host))
        async with self._total, host:
            return await self._timed_sync(provider, account)

    async def _timed_sync(self, provider: ProviderConfig, account: store.Account) -> int:
        fold = _TimedFold(self.metrics, self.telemetry)
        started, outcome = time.monotonic(), "failed"
        try:
            # sync_account uses only MetricsStore's methods: those it does not time pass through.
            stored = await sync_account(self.pool, self.vault, self.connect, provider, account, self.owner,
                                        self.settings, interval=self.interval, report=self.report,
                                        metrics=cast(MetricsStore, fold))
            outcome = fold.outcome
            self.telemetry.messages.inc(stored)
            return stored
        except asyncio.CancelledError:
            outcome = "interrupted"
            raise
        finally:
            self.telemetry.syncs.labels(outcome).inc()
            self.telemetry.sync_seconds.observe(time.monotonic() - started)

    async def run(self, stopping: asyncio.Event, tick: float, drain: float = 5.0) -> bool:
        """Rounds every ``tick`` seconds until ``stopping``; then ``drain``. Returns whether every
        running sync finished on its own."""
        if self.snapshot is not None and self.snapshot.is_dir():
            remove_leftovers(self.snapshot)
        writer = asyncio.create_task(self._keep_snapshot())
        try:
            await self._rounds(stopping, tick)
            return await self.drain(drain)
        finally:
            writer.cancel()
            self.write_snapshot()  # the last counts, interrupted syncs included

    async def _rounds(self, stopping: asyncio.Event, tick: float) -> None:
        """A round every ``tick``, and one each time a sync ends in between: a slot that frees
        takes the next due account at once, so a node's rate is bound by its slots (``Limits``),
        not by ``tick`` (8 per tick was 160 accounts per 5 minutes at the default 15 s)."""
        next_tick, swept = time.monotonic(), -SWEEP_EVERY
        while not stopping.is_set():
            self._freed.clear()  # before the round: a sync that ends during it is seen below
            if (now := time.monotonic()) >= next_tick:
                next_tick = now + tick
                await self._attempt("scheduling", self.round)
                if now - swept >= SWEEP_EVERY:
                    swept = now  # a failed sweep waits for the next hour, not the next tick
                    await self._attempt("the retention sweep", self._sweep)
            else:
                await self._attempt("scheduling", lambda: self.round(new_accounts=False))
            await _first(stopping, self._freed, next_tick - time.monotonic())

    async def _keep_snapshot(self) -> None:
        while self.snapshot is not None:
            self.write_snapshot()
            await asyncio.sleep(SNAPSHOT_SECONDS)  # a period, not a wait for an event

    def write_snapshot(self) -> None:
        """Telemetry and the vault client's counts to ``snapshot``; a failure is logged once, not fatal."""
        if self.snapshot is None:
            return
        try:
            self.snapshot.mkdir(mode=0o700, exist_ok=True)  # development mode; the supervisor makes it as root
            write_snapshot(self.snapshot, self.telemetry.samples() + vault_samples(self.vault, "harvest"),
                           time.time())
        except (OSError, ValueError) as e:
            if not self._snapshot_failing:
                log.warning("cannot write the metrics snapshot to %s (%s); web reports harvest's metrics "
                            "missing until it can", self.snapshot, getattr(e, "strerror", None) or e)
            self._snapshot_failing = True
            return
        if self._snapshot_failing:
            log.info("metrics snapshot written to %s again", self.snapshot)
        self._snapshot_failing = False

    async def _attempt(self, what: str, step: Callable[[], Awaitable[object]]) -> None:
        try:
            await step()
        except Exception as e:  # PostgreSQL or the metrics store away, or a bug: harvest goes on
            log.error("%s failed (%s); trying again%s", what, words(e),
                      f": {traceback_without_message(e)}" if _unexpected(e) else "")

    async def _sweep(self) -> None:
        deleted = await self.metrics.sweep()
        if deleted:
            log.info("retention: deleted %d raw row(s) older than 7 days", deleted)

    async def drain(self, deadline: float) -> bool:
        """Wait up to ``deadline`` seconds for the running syncs, then interrupt the rest."""
        running = set(self._running)
        if not running:
            return True
        log.info("stopping: waiting up to %g s for %d running sync(s)", deadline, len(running))
        _, pending = await asyncio.wait(running, timeout=deadline)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_GRACE)
            log.warning("stopping: %d sync(s) interrupted; they resume at the next start", len(pending))
        return not pending

    async def once(self, account_id: int | None = None) -> int:
        """Sync due accounts (or one named account) now, in the foreground; returns messages stored."""
        await store.schedule_new_accounts(self.pool)
        accounts = await store.claim_due(self.pool, self.owner, self.settings.lease, self.limits.total, account_id)
        results = await asyncio.gather(*(self._sync(a) for a in accounts))
        return sum(results)


def _unexpected(error: Exception) -> bool:
    """Whether a traceback helps: not for the world's usual failures."""
    return not isinstance(error, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, InboxLensError))
