"""Start a real vault process for tests, as the supervisor would, and talk to it.

``VaultProcess`` writes the configuration slice to the vault's stdin, waits for
``ready`` on its stdout, keeps its stderr in a file (tests grep it for secrets),
and registers PIDs as the supervisor does in development mode.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inboxlens.vault.admin import create_keyset, prepare_directory

# The child imports the code of the tree these tests belong to (a git worktree, not the venv's install).
REPO = str(Path(__file__).resolve().parents[2])

READY_TIMEOUT = 20.0


@dataclass
class VaultProcess:
    state_dir: Path
    runtime_dir: Path
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    slice: dict[str, Any] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.runtime_dir / "vault" / "vault.sock"

    @property
    def vault_dir(self) -> Path:
        return self.state_dir / "vault"

    async def start(self, user: int | None = None, group: int | None = None, extra_env: dict[str, str] | None = None) -> None:
        log = open(self.log_path, "ab")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": REPO, **(extra_env or {})}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inboxlens.vault", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=log, env=env, cwd="/", user=user, group=group,
            extra_groups=[] if user is not None else None)
        log.close()
        await self.send(self.slice)
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), READY_TIMEOUT)
        if line != b"ready\n":
            await self.process.wait()
            raise RuntimeError(f"vault did not start (exit {self.process.returncode}):\n{self.log()}")

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def register(self, pid: int, role: str) -> None:
        """Register ``pid`` as ``role`` (as the supervisor does) and wait until the vault applied it.

        The control pipe has no acknowledgement; the vault logs each registration, so wait for
        one more such line than there was (a PID may be registered again, as another role).
        """
        line = f"registered pid {pid} as {role}"
        seen = self.log().count(line)
        await self.send({"register": pid, "role": role})
        deadline = time.monotonic() + READY_TIMEOUT
        while self.log().count(line) <= seen:
            assert time.monotonic() < deadline, f"the vault never applied: {line}"
            await asyncio.sleep(0.005)

    async def stop(self) -> int:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else 0
        assert self.process.stdin is not None
        self.process.stdin.close()
        return await asyncio.wait_for(self.process.wait(), 15)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def make_vault(tmp: Path, providers: dict[str, Any] | None = None, callers: dict[str, Any] | None = None,
               vault: dict[str, Any] | None = None, owner: tuple[int, int] | None = None,
               create_keys: bool = True) -> VaultProcess:
    state, runtime = tmp / "state", tmp / "run"
    proc = VaultProcess(state, runtime, tmp / "vault.log")
    prepare_directory(proc.vault_dir, owner)
    if create_keys:
        create_keyset(proc.vault_dir, owner)
    proc.slice = {
        "config": {"state_dir": str(state), "runtime_dir": str(runtime), "log_level": "DEBUG",
                   "providers": providers or {}, "vault": {"refresh_backoff_seconds": 0.01, **(vault or {})}},
        "callers": callers if callers is not None else {"shared_uid": os.getuid(), "admin_uids": [os.getuid()]},
    }
    return proc
