"""The capacity benchmark's harvest (``bench/capacity.py``): a child process, commands on stdin.

``python -m bench.capacity_child``, started by the benchmark and registered with the vault as
harvest. It builds the harvest as ``inboxlens.harvest`` does (the product's ``Scheduler``,
``HarvestConfig``'s defaults, logging at INFO into a file) and imports no test helper. The
first stdin line is JSON (dsn, vault socket, provider, log file); then one JSON command a line,
each answered with one JSON line on stdout:

- ``sync``: every due account once (``Scheduler.once`` until none is left), optionally with the
  phase clock on, or with one SSL context for all IMAP sessions;
- ``ticks``: the product's ``Scheduler.run`` for a while, to count the syncs its ticks start;
- ``baseline``: a bare ``imaplib`` session for each of the given accounts, in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

import asyncpg

from inboxlens.config.schema import HarvestConfig
from inboxlens.config.vault import ProviderConfig
from inboxlens.harvest import store as harvest_store
from inboxlens.harvest.imap import ImapLimits, ImapSession
from inboxlens.harvest.scheduler import Limits, Scheduler
from inboxlens.harvest.sync import AccountSync, SyncSettings
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.vault.client import VaultClient

from .harvest import ITEMS
from .phases import PhaseClock

HARVEST = HarvestConfig()
INTERVAL = HARVEST.interval_seconds
LIMITS = Limits(HARVEST.max_connections, HARVEST.max_connections_per_host)
FIRST_SYNC_DAYS = 3650  # the generated mail is from 2022-2024
TICK = 1.0  # the scheduler's tick in the ticks command (the product's is 15 s)


def _tags(clock: PhaseClock) -> list[tuple[object, Sequence[str], str]]:
    return [(ImapSession, ("authenticate", "identify", "logout"), "login"),
            (ImapSession, ("mailboxes", "examine", "search_since", "search_above", "fetch_headers"), "fetch"),
            (VaultClient, ("get",), "token"), (AccountSync, ("parse",), "parse"),
            (harvest_store, ("checkpoint", "reset_checkpoint", "store_batch"), "store"),
            (harvest_store, ("schedule_new_accounts", "claim_due", "release", "failures", "set_account_status"),
             "lease"),
            (PgMetricsStore, ("aggregate",), "fold"), (ssl, ("create_default_context",), "tls context")]


def _syncs(scheduler: Scheduler) -> dict[str, int]:
    return {labels["outcome"]: int(value) for name, labels, value in scheduler.telemetry.samples()
            if name == "inboxlens_harvest_syncs_total"}


async def sync_all(scheduler: Scheduler) -> int:
    """Every due account once, LIMITS.total at a time; returns messages stored."""
    stored, before = 0, -1
    while sum(_syncs(scheduler).values()) != before:
        before = sum(_syncs(scheduler).values())
        stored += await scheduler.once()
    return stored


def scheduler_for(pool: asyncpg.Pool, vault: VaultClient, provider: ProviderConfig,
                  connect: Callable[[ProviderConfig], Awaitable[ImapSession]]) -> Scheduler:
    """The harvest's scheduler as ``inboxlens.harvest`` builds it from HarvestConfig's defaults."""
    settings = SyncSettings(batch_size=HARVEST.batch_size, first_sync_days=FIRST_SYNC_DAYS,
                            lease=timedelta(seconds=HARVEST.lease_seconds),
                            trusted_authserv_ids=frozenset(provider.trusted_authserv_ids))
    return Scheduler(pool, vault, connect, {"test": provider}, settings, interval=timedelta(seconds=INTERVAL),
                     limits=LIMITS, owner="bench-capacity")


async def child_sync(pool: asyncpg.Pool, vault: VaultClient, provider: ProviderConfig,
                     instrumented: bool) -> dict[str, Any]:
    """Every due account once, the sessions' TLS context the product's (one a process)."""
    clock = PhaseClock()
    connect = partial(ImapSession.open, limits=ImapLimits.of(HARVEST))
    scheduler = scheduler_for(pool, vault, provider, clock.tagged("login", connect) if instrumented else connect)
    began = time.thread_time()
    if instrumented:
        with clock.installed(), clock.patched(_tags(clock)):
            stored = await sync_all(scheduler)
    else:
        stored = await sync_all(scheduler)
    outcomes = _syncs(scheduler)
    return {"syncs": sum(outcomes.values()), "outcomes": {k: v for k, v in outcomes.items() if v},
            "stored": stored, "thread_cpu": time.thread_time() - began, "phases": dict(clock.cpu)}


async def child_ticks(pool: asyncpg.Pool, vault: VaultClient, provider: ProviderConfig, tick: float,
                      seconds: float) -> dict[str, Any]:
    """The product's own loop, ``Scheduler.run``, for ``seconds`` with every account due: how many
    syncs it starts (a tick's round, then a round each time a slot frees)."""
    scheduler = scheduler_for(pool, vault, provider, partial(ImapSession.open, limits=ImapLimits.of(HARVEST)))
    stopping = asyncio.Event()
    running = asyncio.create_task(scheduler.run(stopping, tick, drain=30.0))
    await asyncio.sleep(seconds)  # the length of the observation, not a wait for an event
    stopping.set()
    await running
    outcomes = _syncs(scheduler)
    return {"syncs": sum(outcomes.values()), "outcomes": {k: v for k, v in outcomes.items() if v}}


def bare_session(provider: ProviderConfig, context: ssl.SSLContext, address: str, token: str,
                 new: dict[str, int]) -> int:
    """The baseline: login, EXAMINE and FETCH of the new messages, logout, with imaplib (blocking)."""
    import imaplib

    conn = imaplib.IMAP4_SSL(provider.imap_host, provider.imap_port, ssl_context=context)
    fetched = 0
    try:
        conn.authenticate("XOAUTH2", lambda _: f"user={address}\1auth=Bearer {token}\1\1".encode())
        for mailbox, count in new.items():
            typ, data = conn.select(mailbox, readonly=True)
            exists = int(data[0] or 0)
            if typ == "OK" and count:
                typ, answer = conn.fetch(f"{exists - count + 1}:*", ITEMS)
                fetched += sum(isinstance(item, tuple) for item in answer)
    finally:
        conn.logout()
    return fetched


async def child_baseline(vault: VaultClient, provider: ProviderConfig, sessions: list[list[Any]]) -> dict[str, Any]:
    tokens = [(address, (await vault.get(str(account))).token, {"INBOX": inbox, "Sent": sent})
              for address, inbox, sent, account in sessions]
    context = ssl.create_default_context()  # one for all sessions: what imaplib users do

    def run_all() -> tuple[int, float]:
        began, fetched = time.thread_time(), 0
        for address, token, new in tokens:
            fetched += bare_session(provider, context, address, token, new)
        return fetched, time.thread_time() - began

    fetched, cpu = await asyncio.to_thread(run_all)
    return {"sessions": len(tokens), "fetched": fetched, "client_cpu": cpu}


async def _child() -> None:
    args = json.loads(sys.stdin.readline())
    logging.basicConfig(filename=args["log"], level=logging.INFO,  # the product's level, into a file
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    provider = ProviderConfig(**cast(dict[str, Any], {k: tuple(v) if isinstance(v, list) else v
                                                      for k, v in args["provider"].items()}))
    pool = await asyncpg.create_pool(args["dsn"], min_size=1, max_size=HARVEST.max_connections + 2, command_timeout=60)
    vault = VaultClient(Path(args["socket"]))
    commands: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
        "ready": lambda c: _ready(),
        "sync": lambda c: child_sync(pool, vault, provider, bool(c["instrumented"])),
        "ticks": lambda c: child_ticks(pool, vault, provider, float(c["tick"]), float(c["seconds"])),
        "baseline": lambda c: child_baseline(vault, provider, c["sessions"]),
    }
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            command = json.loads(line)
            print(json.dumps(await commands[command["do"]](command)), flush=True)
    finally:
        await vault.close()
        await pool.close()


async def _ready() -> dict[str, Any]:
    return {"ready": True}


if __name__ == "__main__":
    asyncio.run(_child())
