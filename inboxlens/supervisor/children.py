"""The children: spawn each under its identity, wait for ready, restart with backoff, stop in order."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any


from inboxlens.config.schema import Config
from inboxlens.errors import InboxLensError, StartFailed
from inboxlens.supervisor.database import dsn_for, open_database, process_exit
from inboxlens import confine
from inboxlens.supervisor.notify import sd_notify
from inboxlens.supervisor.plan import Identity, Plan, check_vault_socket, child_environment, slice_for

log = logging.getLogger("inboxlens.supervisor")


@dataclass
class Child:
    name: str
    identity: Identity | None
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    delay: float = 0.0
    restarts: int = 0


class Supervisor:
    def __init__(self, config: Config, plan: Plan) -> None:
        self.config = config
        self.plan = plan
        self.children = {name: Child(name, plan.of(name)) for name in ("vault", "web", "harvest")}
        self.stopping = asyncio.Event()
        self.database_dsn = config.database.dsn
        self._pg: Any = None
        self._pg_restart: asyncio.Future[None] | None = None

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
        if self._pg is not None:
            watchers.append(asyncio.create_task(self._watch_database()))
        await self.stopping.wait()
        sd_notify("STOPPING=1")
        log.info("stopping")
        for task in watchers:
            task.cancel()
        await self._stop_all()
        return 0

    async def _start_database(self) -> None:
        self.database_dsn, self._pg = await open_database(self.config, self.plan)
        # Known now, so a postmaster that dies before the watcher first looks is still seen to die.
        self._pg_pid: int | None = self._pg.pid if self._pg is not None else None

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
            check_vault_socket(self.config, self.plan)
        await self._registered(child)

    async def _spawn(self, child: Child) -> asyncio.subprocess.Process:
        identity = child.identity
        # confine drops the bounding set and sets no_new_privs while still root, then becomes the child's user.
        argv = confine.command(f"inboxlens.{child.name}", identity.uid if identity else -1,
                               identity.gid if identity else -1, identity.groups if identity else ())
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
            env=child_environment(), cwd="/", close_fds=True, start_new_session=True)
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

    def _backoff(self, delay: float, ran: float) -> float:
        """The next restart delay: the initial one after a stable run, else twice the last (capped)."""
        cfg = self.config.supervisor
        if ran >= cfg.stable_after_seconds or not delay:
            return cfg.restart_backoff_initial_seconds
        return min(delay * 2, cfg.restart_backoff_max_seconds)

    async def _watch_database(self) -> None:
        """The embedded PostgreSQL is a child too: restarted with backoff when it dies."""
        delay, started, pid = 0.0, time.monotonic(), self._pg_pid
        while not self.stopping.is_set():
            if pid is not None:
                await process_exit(pid)
                if self.stopping.is_set():
                    return
                log.error("PostgreSQL (pid %d) exited after %.1f s; restarting it", pid, time.monotonic() - started)
            delay = self._backoff(delay, time.monotonic() - started)
            if await self._stopping_within(delay):
                return
            started = time.monotonic()
            # Shielded: a stop that comes meanwhile waits for it (_stop_all), so it knows to stop
            # the server this start launches instead of leaving it behind.
            self._pg_restart = asyncio.ensure_future(asyncio.to_thread(self._restart_database))
            await asyncio.shield(self._pg_restart)
            pid = self._pg.pid

    def _restart_database(self) -> None:
        try:
            self._pg.start()
            log.info("PostgreSQL started again (pid %s)", self._pg.pid)
        except InboxLensError as e:
            log.error("PostgreSQL did not start again: %s", e)

    async def _stopping_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return True
        except TimeoutError:
            return False

    async def _watch(self, child: Child) -> None:
        while not self.stopping.is_set():
            assert child.process is not None
            code = await child.process.wait()
            ran = time.monotonic() - child.started
            child.delay = self._backoff(child.delay, ran)
            log.error("%s (pid %d) exited with status %s after %.1f s; restarting in %.1f s",
                      child.name, child.process.pid, code, ran, child.delay)
            self._unregister(child)
            if await self._stopping_within(child.delay):
                return
            child.restarts += 1
            await self._start(child, first=False)

    def _unregister(self, child: Child) -> None:
        vault = self.children["vault"].process
        if self.plan.dev and child.name != "vault" and child.process and vault and vault.stdin:
            vault.stdin.write(json.dumps({"unregister": child.process.pid}).encode() + b"\n")

    async def _stop_all(self) -> None:
        for names in (("web", "harvest"), ("vault",)):
            await asyncio.gather(*(self._stop(self.children[n]) for n in names))
        if self._pg_restart is not None:
            await asyncio.gather(self._pg_restart, return_exceptions=True)
        if self._pg is not None:  # only if we started it: never one another command runs
            await asyncio.to_thread(self._pg.release)

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


