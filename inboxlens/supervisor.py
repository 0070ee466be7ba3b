"""inboxlens serve: the supervisor. Tiny, and root only to spawn.

Privilege: started as root (the systemd unit), it finds or creates the system
users, prepares directories with least-privilege owners and modes, starts the
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
import grp
import json
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from . import config as config_mod
from .config import Config
from .errors import InboxLensError
from .vault.keyset import read_credentials

log = logging.getLogger("inboxlens.supervisor")

USERS = {"vault": "inboxlens-vault", "web": "inboxlens-web", "harvest": "inboxlens-harvest", "db": "inboxlens-db"}
SHARED_GROUP = "inboxlens"
CHILD_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ")


class StartFailed(InboxLensError):
    """The service cannot start; the message says why."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass
class Child:
    name: str
    identity: Identity | None
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    delay: float = 0.0
    restarts: int = 0


@dataclass
class Plan:
    """Who runs as whom, decided once at start."""

    dev: bool
    identities: dict[str, Identity] = field(default_factory=dict)
    shared_gid: int | None = None

    def of(self, name: str) -> Identity | None:
        return self.identities.get(name)


def make_plan() -> Plan:
    if os.geteuid() != 0:
        return Plan(dev=True)
    shared_gid = _ensure_group(SHARED_GROUP)
    identities = {}
    for role, user in USERS.items():
        entry = _ensure_user(user)
        groups = (shared_gid,) if role in ("web", "harvest") else ()
        identities[role] = Identity(entry.pw_uid, entry.pw_gid, groups)
    return Plan(dev=False, identities=identities, shared_gid=shared_gid)


def _ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        _run_admin(["groupadd", "--system", name], name)
        return grp.getgrnam(name).gr_gid


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        _run_admin(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], name)
        return pwd.getpwnam(name)


def _run_admin(command: list[str], name: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise StartFailed(f"cannot create system user/group {name!r} ({type(e).__name__}); create it with "
                          "'systemd-sysusers config/inboxlens.sysusers' and start again") from None


def prepare_directories(config: Config, plan: Plan) -> None:
    """Every directory the children use, with the owner and mode each needs and no more."""
    if plan.dev:
        for path in (config.state_dir, config.vault_dir, web_dir(config), config.runtime_dir,
                     config.vault_socket.parent):
            _directory(path, 0o700, None)
        return
    vault, db, web = plan.identities["vault"], plan.identities["db"], plan.identities["web"]
    shared = plan.shared_gid if plan.shared_gid is not None else -1
    _directory(config.state_dir, 0o755, (0, 0))
    _directory(config.runtime_dir, 0o755, (0, 0))
    _directory(config.vault_dir, 0o700, (vault.uid, vault.gid))
    _directory(web_dir(config), 0o700, (web.uid, web.gid))  # its cookie-signing key
    # Keys made by 'inboxlens keys init' before the vault's user existed belong to root: hand them over.
    for path in config.vault_dir.iterdir():
        os.chown(path, vault.uid, vault.gid, follow_symlinks=False)
    # No setgid bits (the unit's RestrictSUIDSGID forbids them): the supervisor gives the
    # vault's socket its group once it exists (share_vault_socket).
    _directory(config.vault_socket.parent, 0o750, (vault.uid, shared))
    _directory(pg_data_dir(config), 0o700, (db.uid, db.gid))
    _directory(pg_socket_dir(config), 0o750, (db.uid, shared))


def share_vault_socket(config: Config, plan: Plan) -> None:
    """Give the vault's socket the group web and harvest are in (root mode)."""
    if plan.dev or plan.shared_gid is None:
        return
    path, vault = config.vault_socket, plan.identities["vault"]
    st = path.lstat()
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != vault.uid:
        raise StartFailed(f"{path} is not the vault's socket; refusing to share it")
    os.chown(path, -1, plan.shared_gid, follow_symlinks=False)


def _directory(path: Path, mode: int, owner: tuple[int, int] | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        raise StartFailed(f"{path} is a symbolic link; refusing to use it")
    if owner is not None:
        os.chown(path, *owner)
    os.chmod(path, mode)


def web_dir(config: Config) -> Path:
    return config.state_dir / "web"


def pg_data_dir(config: Config) -> Path:
    return config.state_dir / "pg"


def pg_socket_dir(config: Config) -> Path:
    return config.runtime_dir / "pg"


def slice_for(name: str, config: Config, plan: Plan, database_dsn: str) -> dict[str, Any]:
    """Only the configuration a child needs (OpenSSH passes its children only their options)."""
    common = {"state_dir": str(config.state_dir), "runtime_dir": str(config.runtime_dir), "log_level": config.log_level}
    if name == "vault":
        credentials = read_credentials(Path(os.environ["CREDENTIALS_DIRECTORY"])
                                       if os.environ.get("CREDENTIALS_DIRECTORY") else None)
        return {"config": {**common, "vault": config_mod.to_dict(config.vault),
                           "providers": config_mod.to_dict(config.providers)},
                "callers": _callers(config, plan),
                "credentials": {str(k): v.hex() for k, v in credentials.items()}}
    metrics = {"metrics": config_mod.to_dict(config.metrics), "insights": config_mod.to_dict(config.insights)}
    section = {"web": {"web": config_mod.to_dict(config.web), **metrics,
                       # the code exchange needs the client secret; web never sees a private key
                       "providers": config_mod.to_dict(config.providers)},
               # harvest needs IMAP hosts and trusted authserv-ids, never a client secret
               "harvest": {"harvest": config_mod.to_dict(config.harvest), **metrics,
                           "providers": {n: {**config_mod.to_dict(p), "client_secrets": []}
                                         for n, p in config.providers.items()}}}[name]
    return {"config": {**common, **section, "database": {"dsn": database_dsn}}}


def _callers(config: Config, plan: Plan) -> dict[str, Any]:
    admins = [config.vault.admin_uid] if config.vault.admin_uid >= 0 else []
    if plan.dev:
        return {"shared_uid": os.getuid(), "admin_uids": admins + [os.getuid()]}
    return {"web_uids": [plan.identities["web"].uid], "harvest_uids": [plan.identities["harvest"].uid],
            "admin_uids": admins}


async def open_database(config: Config, plan: Plan) -> tuple[str, Any]:
    """The configured DSN, or an embedded PostgreSQL we start (and must stop); migrated either way."""
    from .pg import EmbeddedPostgres, migrate
    server = None
    dsn = config.database.dsn
    try:
        if not dsn:
            run_as = None if plan.dev else USERS["db"]
            server = EmbeddedPostgres(pg_data_dir(config), pg_socket_dir(config), run_as=run_as,
                                      superuser_map=() if plan.dev else ("root",))
            dsn = await asyncio.to_thread(server.start)
        await migrate(dsn)
        if server is not None and not plan.dev:
            await grant_child_roles(dsn)
    except (InboxLensError, OSError, asyncpg.PostgresError) as e:
        if server is not None:
            await asyncio.to_thread(server.stop)
        raise StartFailed(f"PostgreSQL: {e}") from None
    return dsn, server


CHILD_ROLES = ("web", "harvest")


async def grant_child_roles(dsn: str) -> None:
    """Embedded, root mode: peer authentication lets each child log in only as its own OS user's role.

    They get data rights on the application's tables, never ownership or DDL.
    """
    connection = await asyncpg.connect(dsn)
    try:
        for role in (USERS[name] for name in CHILD_ROLES):
            quoted = '"' + role + '"'
            if not await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await connection.execute(f"CREATE ROLE {quoted} LOGIN")
            await connection.execute(f"GRANT USAGE ON SCHEMA public TO {quoted}")
            await connection.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}")
            await connection.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}")
    finally:
        await connection.close()


def dsn_for(name: str, dsn: str, plan: Plan, embedded: bool) -> str:
    """The DSN a child uses: with the embedded server as root, logged in as its own role."""
    if not embedded or plan.dev:
        return dsn
    parts = urllib.parse.urlsplit(dsn)
    netloc = urllib.parse.quote(USERS[name], safe="") + "@" + parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_reachable(plan: Plan) -> None:
    """Children run as other users: they must be able to reach the interpreter and our code."""
    if plan.dev:
        return
    for target in (Path(sys.executable).resolve(), Path(__file__).resolve().parent):
        for path in [*reversed(target.parents), target]:
            if path.is_dir() and not path.stat().st_mode & 0o001:
                raise StartFailed(f"{path} is not searchable by other users, so the children cannot run "
                                  f"{target}; install InboxLens where system users can read it (e.g. /opt/inboxlens, "
                                  "with Debian's /usr/bin/python3.11)")


def child_environment() -> dict[str, str]:
    env = {k: os.environ[k] for k in CHILD_ENV_KEEP if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    return env


def sd_notify(state: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as e:
            log.warning("cannot notify systemd (%s)", e.strerror)


class Supervisor:
    def __init__(self, config: Config, plan: Plan) -> None:
        self.config = config
        self.plan = plan
        self.children = {name: Child(name, plan.of(name)) for name in ("vault", "web", "harvest")}
        self.stopping = asyncio.Event()
        self.database_dsn = config.database.dsn
        self._pg: Any = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            await self._start_database()
            for name in ("vault", "web", "harvest"):
                await self._start(self.children[name], first=True)
        except StartFailed:
            await self._stop_all()
            raise
        sd_notify("READY=1\nSTATUS=serving")
        log.info("InboxLens is running: web on http://%s:%d", self.config.web.host, self.config.web.port)
        watchers = [asyncio.create_task(self._watch(child)) for child in self.children.values()]
        await self.stopping.wait()
        sd_notify("STOPPING=1")
        log.info("stopping")
        for task in watchers:
            task.cancel()
        await self._stop_all()
        return 0

    async def _start_database(self) -> None:
        self.database_dsn, self._pg = await open_database(self.config, self.plan)

    async def _start(self, child: Child, first: bool) -> None:
        child.process = await self._spawn(child)
        child.started = time.monotonic()
        try:
            ready = await asyncio.wait_for(child.process.stdout.readline(),  # type: ignore[union-attr]
                                           self.config.supervisor.vault_start_timeout_seconds)
        except TimeoutError:
            ready = b""
        if ready != b"ready\n":
            code = await _reap(child.process)
            if first:
                raise StartFailed(f"{child.name} failed to start (exit status {code}); its log above says why")
            log.error("%s failed to start again (exit status %s)", child.name, code)
            return
        log.info("%s started (pid %d)", child.name, child.process.pid)
        if child.name == "vault":
            share_vault_socket(self.config, self.plan)
        await self._registered(child)

    async def _spawn(self, child: Child) -> asyncio.subprocess.Process:
        identity = child.identity
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"inboxlens.{child.name}",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
            env=child_environment(), cwd="/", close_fds=True, start_new_session=True,
            user=identity.uid if identity else None, group=identity.gid if identity else None,
            extra_groups=list(identity.groups) if identity else None)
        dsn = dsn_for(child.name, self.database_dsn, self.plan, self._pg is not None) if child.name != "vault" else ""
        line = json.dumps(slice_for(child.name, self.config, self.plan, dsn)) + "\n"
        assert process.stdin is not None
        process.stdin.write(line.encode())
        await process.stdin.drain()
        return process

    async def _registered(self, child: Child) -> None:
        """In development mode, tell the vault which PIDs are web and harvest."""
        if not self.plan.dev:
            return
        if child.name == "vault":
            for other in ("web", "harvest"):
                await self._register(self.children[other])
        else:
            await self._register(child)

    async def _register(self, child: Child) -> None:
        vault = self.children["vault"].process
        if child.process is None or child.process.returncode is not None or vault is None or vault.stdin is None:
            return
        vault.stdin.write(json.dumps({"register": child.process.pid, "role": child.name}).encode() + b"\n")
        await vault.stdin.drain()

    async def _watch(self, child: Child) -> None:
        cfg = self.config.supervisor
        while not self.stopping.is_set():
            assert child.process is not None
            code = await child.process.wait()
            ran = time.monotonic() - child.started
            child.delay = cfg.restart_backoff_initial_seconds if ran >= cfg.stable_after_seconds or not child.delay \
                else min(child.delay * 2, cfg.restart_backoff_max_seconds)
            log.error("%s (pid %d) exited with status %s after %.1f s; restarting in %.1f s",
                      child.name, child.process.pid, code, ran, child.delay)
            self._unregister(child)
            try:
                await asyncio.wait_for(self.stopping.wait(), child.delay)
                return
            except TimeoutError:
                pass
            child.restarts += 1
            await self._start(child, first=False)

    def _unregister(self, child: Child) -> None:
        vault = self.children["vault"].process
        if self.plan.dev and child.name != "vault" and child.process and vault and vault.stdin:
            vault.stdin.write(json.dumps({"unregister": child.process.pid}).encode() + b"\n")

    async def _stop_all(self) -> None:
        for names in (("web", "harvest"), ("vault",)):
            await asyncio.gather(*(self._stop(self.children[n]) for n in names))
        if self._pg is not None:
            await asyncio.to_thread(self._pg.stop)

    async def _stop(self, child: Child) -> None:
        process = child.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), self.config.supervisor.stop_timeout_seconds)
        except TimeoutError:
            log.error("%s did not stop in time; killing it", child.name)
            process.kill()
            await process.wait()


async def _reap(process: asyncio.subprocess.Process) -> int | None:
    try:
        return await asyncio.wait_for(process.wait(), 5)
    except TimeoutError:
        process.kill()
        return await process.wait()


def serve(config: Config) -> int:
    plan = make_plan()
    if plan.dev:
        log.warning("*** DEVELOPMENT MODE: not started as root, so vault, web and harvest all run as uid %d. "
                    "The vault tells them apart by the PIDs this supervisor registers, but they are not "
                    "isolated from each other. Run as root (the systemd unit) in production. ***", os.getuid())
    check_reachable(plan)
    prepare_directories(config, plan)
    return asyncio.run(Supervisor(config, plan).run())


__all__ = ["serve", "Supervisor", "make_plan", "prepare_directories", "slice_for"]
