"""inboxlens-harvest: fetches header metadata over IMAP and keeps it until aggregated.

Privilege: its own uid (``inboxlens-harvest``) with the shared ``inboxlens`` group
(the vault's socket). It holds no key and no client secret: it asks the vault for
short-lived access tokens (``get``), which only it may do.
Untrusted input: IMAP responses (bounded by ``harvest.max_literal_bytes``,
``max_line_bytes`` and ``max_response_bytes``, batch size and timeouts; parsed
defensively), token answers from the vault.
Writes: PostgreSQL (leases, checkpoints, account status) as its own role; raw header
rows, rollups and insights to the metrics store (PostgreSQL, or Cassandra); log lines on stderr (account ids and counts, never a token or a header value).
Its counts, every few seconds, to ``<runtime_dir>/harvest-metrics/harvest.json`` for web's metrics listener.
Public profiles (``profiles/public.py``): for opted-in mailboxes, GETs to Gravatar and
Libravatar carrying only the SHA-256 of a person's address; answers bounded, kept in PostgreSQL.
Address books (``inboxlens/profiles/sync.py``): CardDAV books synced beside the Scheduler, with
a password from the vault (``secret``) or a Google mailbox's access token (``get``); untrusted
input: the CardDAV servers' answers and photos by URL (bounded, through the egress guard).
Config keys: ``harvest.*``, ``providers.*`` (IMAP host, port, TLS, trusted authserv-ids),
``metrics.*``, ``insights.*``, ``profiles.*``, ``database.dsn``, ``runtime_dir``,
``supervisor.stop_timeout_seconds`` (how long stopping may take; the supervisor passes it
in harvest's slice).
Stopping (SIGTERM, or the supervisor's pipe closing): no new sync starts; running ones
get until ``stop_timeout_seconds`` - 5 to finish, then are interrupted and give their
leases back. Exit status 0, or 75 (EX_TEMPFAIL) if a sync had to be interrupted.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial

import asyncpg

from inboxlens import child
from inboxlens.config.schema import Config
from inboxlens.config.loader import from_dict
from inboxlens.errors import DrainExpired, StartError
from inboxlens.metrics.factory import open_metrics
from inboxlens.metrics.store import MetricsStore
from inboxlens.observability import snapshot_dir
from inboxlens.profiles import public as public_profiles
from inboxlens.service_errors import MetricsUnavailable
from inboxlens.vault.client import VaultClient
from inboxlens.harvest.imap import ImapLimits, ImapSession
from inboxlens.harvest.scheduler import Limits, Scheduler
from inboxlens.harvest.sync import SyncSettings
from inboxlens.profiles.sync import BookSyncer, settings_from

log = logging.getLogger("inboxlens.harvest")
STOP_MARGIN = 5.0  # seconds of the supervisor's stop timeout kept for interrupting syncs and closing


def settings(config: Config) -> SyncSettings:
    trusted = frozenset(a for p in config.providers.values() for a in p.trusted_authserv_ids)
    h = config.harvest
    return SyncSettings(batch_size=h.batch_size, first_sync_days=h.first_sync_days,
                        lease=timedelta(seconds=h.lease_seconds), trusted_authserv_ids=trusted)


def scheduler(config: Config, pool: asyncpg.Pool, vault: VaultClient, metrics: MetricsStore) -> Scheduler:
    h = config.harvest
    connect = partial(ImapSession.open, limits=ImapLimits.of(h))
    return Scheduler(pool, vault, connect, config.providers, settings(config),
                     interval=timedelta(seconds=h.interval_seconds),
                     limits=Limits(h.max_connections, h.max_connections_per_host), metrics=metrics,
                     snapshot=snapshot_dir(config.runtime_dir))


async def main(channel: child.Channel) -> None:
    config = from_dict(channel.config["config"])
    try:
        pool = await asyncpg.create_pool(config.database.dsn, min_size=1, max_size=config.harvest.max_connections + 4,
                                         command_timeout=60)
    except (OSError, asyncpg.PostgresError) as e:
        raise StartError(f"cannot reach PostgreSQL ({type(e).__name__})") from None
    try:
        metrics = await open_metrics(config, pool)
    except MetricsUnavailable as e:
        raise StartError(f"cannot reach the metrics store ({e})") from None
    vault = VaultClient(config.vault_socket)
    channel.ready()
    control = asyncio.create_task(_drain(channel))
    drain = max(1.0, config.supervisor.stop_timeout_seconds - STOP_MARGIN)
    public = public_profiles.start(config.profiles, pool, metrics, channel.stopping)
    books = asyncio.create_task(BookSyncer(pool, vault, settings_from(config)).run(
        channel.stopping, config.harvest.tick_seconds, drain))
    finished = await scheduler(config, pool, vault, metrics).run(channel.stopping, config.harvest.tick_seconds,
                                                                 drain)
    finished = await books and finished
    await public_profiles.stop(public)
    control.cancel()
    await _close(metrics, vault, pool)
    if not finished:  # child.run exits 75 (EX_TEMPFAIL) on it, after our cleanup above
        raise DrainExpired("syncs were interrupted at the drain deadline; they resume at the next start")
    log.info("stopped")


async def _close(metrics: MetricsStore, vault: VaultClient, pool: asyncpg.Pool) -> None:
    await metrics.close()
    await vault.close()
    try:
        await asyncio.wait_for(pool.close(), STOP_MARGIN / 2)
    except TimeoutError:  # a connection still busy: do not wait on it
        pool.terminate()


async def _drain(channel: child.Channel) -> None:
    async for _ in channel.messages():
        pass


if __name__ == "__main__":
    child.run("inboxlens-harvest", main)
