"""The database the service uses: the configured one, or an embedded PostgreSQL the supervisor starts.

Either way it is migrated before any child starts; in root mode with the embedded
server each child logs in as its own role (peer authentication), with the rights
``db.roles`` declares for it, table by table, and no more.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from typing import Any

import asyncpg

from inboxlens import paths
from inboxlens.config.schema import Config
from inboxlens.db.roles import apply_grants
from inboxlens.errors import InboxLensError, StartFailed
from inboxlens.supervisor.plan import USERS, Plan


async def open_database(config: Config, plan: Plan) -> tuple[str, Any]:
    """The configured DSN, or an embedded PostgreSQL we start (and must stop); migrated either way."""
    from inboxlens.db.embedded import EmbeddedPostgres
    from inboxlens.db.migrate import migrate
    server = None
    dsn = config.database.dsn
    try:
        if not dsn:
            run_as = None if plan.dev else USERS["db"]
            server = EmbeddedPostgres(paths.pg_data_dir(config.state_dir), paths.pg_socket_dir(config.runtime_dir), run_as=run_as,
                                      superuser_map=() if plan.dev else ("root",))
            dsn = await asyncio.to_thread(server.start)
        await migrate(dsn)
        if server is not None and not plan.dev:
            await apply_grants(dsn, {"web": USERS["web"], "harvest": USERS["harvest"]})
    except (InboxLensError, OSError, asyncpg.PostgresError) as e:
        if server is not None:
            await asyncio.to_thread(server.release)
        raise StartFailed(f"PostgreSQL: {e}") from None
    return dsn, server


def dsn_for(name: str, dsn: str, plan: Plan, embedded: bool) -> str:
    """The DSN a child uses: with the embedded server as root, logged in as its own role."""
    if not embedded or plan.dev:
        return dsn
    parts = urllib.parse.urlsplit(dsn)
    netloc = urllib.parse.quote(USERS[name], safe="") + "@" + parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


async def process_exit(pid: int) -> None:
    """Return once process ``pid`` has exited: its pidfd turns readable then (any parent, any uid)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _settle, exited)
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
