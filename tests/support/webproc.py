"""Start a real web process for tests, as the supervisor would, next to a real vault."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The child imports the code of the tree these tests belong to (a git worktree, not the venv's install).
REPO = str(Path(__file__).resolve().parents[2])

READY_TIMEOUT = 30.0


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before in this process: two asked one after the
    other (web's and its metrics listener's, both bound later) can come back the same."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class WebProcess:
    slice: dict[str, Any]
    log_path: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.slice['config']['web']['port']}"

    async def start(self, extra_env: dict[str, str] | None = None) -> None:
        with open(self.log_path, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "inboxlens.web", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=log, cwd="/",
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": REPO, **(extra_env or {})})
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(self.slice).encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), READY_TIMEOUT)
        if line != b"ready\n":
            await self.process.wait()
            raise RuntimeError(f"web did not start (exit {self.process.returncode}):\n{self.log()}")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            await asyncio.wait_for(self.process.wait(), 15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_for_log(self, text: str, timeout: float = 15.0) -> None:
        """Until the log has this text (the process writes it when the event happened), or fail."""
        deadline = asyncio.get_running_loop().time() + timeout
        while text not in self.log():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"web never logged {text!r}:\n{self.log()[-2000:]}")
            await asyncio.sleep(0.05)


def make_web(tmp: Path, state_dir: Path, runtime_dir: Path, dsn: str, providers: dict[str, Any],
             web: dict[str, Any] | None = None) -> WebProcess:
    """web: more ``[web]`` keys (cors_origins, api_requests_per_minute, api_burst, ...)."""
    return WebProcess({"config": {
        "state_dir": str(state_dir), "runtime_dir": str(runtime_dir), "log_level": "DEBUG",
        "web": {"host": "127.0.0.1", "port": free_port(), **(web or {})}, "providers": providers,
        "database": {"dsn": dsn},
    }}, tmp / "web.log")
