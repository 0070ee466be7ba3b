"""Run one harvest sync in a separate process (tests kill it mid-batch).

    python -m tests.support.harvest_once   < one JSON line, then "go"

The JSON names the database, the vault socket, the provider (IMAP on loopback) and the
sync settings. The process waits for "go" so the test can register its PID with the vault
first (development-mode vault: a registered PID is harvest).
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta

import asyncpg

from inboxlens.config.vault import ProviderConfig
from inboxlens.harvest.imap import ImapSession
from inboxlens.harvest.scheduler import Limits, Scheduler
from inboxlens.harvest.sync import SyncSettings
from inboxlens.vault.client import VaultClient


async def main() -> None:
    args = json.loads(sys.stdin.readline())
    assert sys.stdin.readline().strip() == "go"
    pool = await asyncpg.create_pool(args["dsn"], min_size=1, max_size=4)
    vault = VaultClient(args["socket"])
    provider = ProviderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args["provider"].items()})
    settings = SyncSettings(batch_size=args["batch_size"], first_sync_days=3650, lease=timedelta(seconds=60),
                            trusted_authserv_ids=frozenset(provider.trusted_authserv_ids), aggregate=False)
    scheduler = Scheduler(pool, vault, ImapSession.open, {"test": provider}, settings,
                          interval=timedelta(minutes=5), limits=Limits(2, 2), owner=args["owner"])
    print(await scheduler.once(args["account"]), flush=True)
    await vault.close()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
