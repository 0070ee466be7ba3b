"""inboxlens serve: the supervisor. Tiny, and root only to spawn.

Privilege: started as root (the systemd unit), it finds or creates the system
users, prepares directories with least-privilege owners and modes (or, under the
unit, whose bounding set lacks CAP_CHOWN, checks that ``inboxlens.supervisor.prepare``
did so in ExecStartPre=+), joins the shared and database groups, starts the
embedded PostgreSQL (when no DSN is configured) and applies migrations, then
fork+execs each child under its own uid/gid with only the groups it needs.
Started as an ordinary user (development), all children share that uid: it says
so loudly, and registers the web and harvest PIDs with the vault so the vault can
still tell them apart.
Untrusted input: none; it reads the config file and its children's exit codes.
Writes: directories under ``state_dir`` and ``runtime_dir``; log lines on stderr;
``READY=1``/``STOPPING=1`` to ``$NOTIFY_SOCKET``.
Children: vault first (nothing else starts if it cannot), then web and harvest;
a child that dies is restarted with exponential backoff; SIGTERM/SIGINT stop web
and harvest, then the vault, then PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import os

from inboxlens import confine
from inboxlens.config.schema import Config
from inboxlens.supervisor.children import Supervisor
from inboxlens.supervisor.plan import (check_directories, check_reachable, join_groups, make_plan,
                                       prepare_directories)

log = logging.getLogger("inboxlens.supervisor")


def serve(config: Config) -> int:
    plan = make_plan()
    if plan.dev:
        log.warning("*** DEVELOPMENT MODE: not started as root, so vault, web and harvest all run as uid %d. "
                    "The vault tells them apart by the PIDs this supervisor registers, but they are not "
                    "isolated from each other. Run as root (the systemd unit) in production. ***", os.getuid())
    check_reachable(plan)
    if plan.dev or confine.in_bounding_set(confine.CAP_CHOWN):
        prepare_directories(config, plan)
    else:
        check_directories(config, plan)
    join_groups(plan)
    return asyncio.run(Supervisor(config, plan).run())


__all__ = ["serve", "Supervisor", "make_plan", "prepare_directories", "slice_for"]
