"""``inboxlens harvest --once [ACCOUNT]``: one sync in the foreground, with a progress bar.

Only harvest may ask the vault for access tokens. Run as root, this command becomes
the harvest user (uid, gid and the shared group) before it does anything else, so the
vault sees a harvest caller; the service must be running (the vault answers) and the
database is the service's. In development mode (not root) the vault tells harvest
apart by the PIDs the supervisor registered, which this process is not: use the
running service's harvest process there, or run this as root.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
from typing import Callable

import asyncpg

from inboxlens.config.schema import Config
from inboxlens.errors import InboxLensError
from inboxlens.harvest.__main__ import scheduler
from inboxlens.harvest.sync import Progress
from inboxlens.paths import pg_socket_dir
from inboxlens.progress import ProgressBar
from inboxlens.service_errors import MetricsUnavailable
from inboxlens.supervisor.plan import SHARED_GROUP, USERS
from inboxlens.vault.client import VaultClient
from inboxlens.metrics.factory import open_metrics


class HarvestCliError(InboxLensError):
    pass


def become_harvest() -> None:
    if os.geteuid() != 0:
        raise HarvestCliError("harvest --once must run as root (it becomes the harvest user, whom alone the "
                              "vault gives access tokens); in development mode the service's own harvest "
                              "process syncs every harvest.interval_seconds")
    try:
        user = pwd.getpwnam(USERS["harvest"])
        shared = grp.getgrnam(SHARED_GROUP).gr_gid
    except KeyError:
        raise HarvestCliError("the harvest user does not exist yet: start the service once ('inboxlens serve')") from None
    os.setgroups([shared])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)


def database_dsn(config: Config) -> str:
    if config.database.dsn:
        return config.database.dsn
    return f"postgresql://{USERS['harvest']}@/postgres?host={pg_socket_dir(config.runtime_dir)}"


def progress_bar(bar: ProgressBar) -> Callable[[Progress], None]:
    return lambda p: bar.show(p.mailbox, p.done, p.total, f"fetched, {p.stored} new")


def harvest_once(config: Config, account: int | None) -> int:
    become_harvest()

    async def run() -> int:
        try:
            pool = await asyncpg.create_pool(database_dsn(config), min_size=1, max_size=4)
        except (OSError, asyncpg.PostgresError) as e:
            raise HarvestCliError(f"cannot reach the database ({type(e).__name__}); is the service running?") from None
        try:
            metrics = await open_metrics(config, pool)
        except MetricsUnavailable as e:
            await pool.close()
            raise HarvestCliError(f"cannot reach the metrics store ({e})") from None
        vault = VaultClient(config.vault_socket)
        try:
            sched = scheduler(config, pool, vault, metrics)
            sched.report = progress_bar(bar)
            return await sched.once(account)
        finally:
            await vault.close()
            await metrics.close()
            await pool.close()

    bar = ProgressBar()
    stored = asyncio.run(run())
    bar.finish()
    print(f"harvest: {stored} new message(s) stored")
    return 0
