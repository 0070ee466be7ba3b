"""The children: spawn each under its identity, wait for ready, restart with backoff, stop in order."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any


from inboxlens.config.schema import Config
from inboxlens.errors import StartFailed
from inboxlens.supervisor.database import dsn_for, open_database
from inboxlens.supervisor.notify import sd_notify
from inboxlens.supervisor.plan import Identity, Plan, child_environment, share_vault_socket, slice_for

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


