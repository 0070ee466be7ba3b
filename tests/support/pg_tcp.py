"""A PostgreSQL server on a loopback TCP port, for tests of several InboxLens nodes.

The embedded server listens on a Unix socket only; nodes on other hosts reach a shared
PostgreSQL over TCP with a password, as production does. This starts one from the same
binaries (the pgserver wheel), as an unprivileged OS user, on 127.0.0.1 and a free port,
with scram-sha-256 for every TCP connection and no Unix socket. The superuser's password
is random per server and only ever passed in a file (0600) and the DSN.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from inboxlens.db.embedded import postgres_bin


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class TcpPostgres:
    """``start()`` → a superuser DSN on 127.0.0.1; ``stop()`` removes everything."""

    run_as: str | None = None  # the OS user the server runs as (required when we are root)
    host: str = "127.0.0.1"
    port: int = 0
    directory: Path | None = None
    password: str = ""

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:{self.password}@{self.host}:{self.port}/postgres"

    def start(self, timeout: float = 60.0) -> str:
        self.port = self.port or free_port(self.host)
        self.password = secrets.token_hex(16)
        self.directory = Path(tempfile.mkdtemp(prefix="inboxlens-pgtcp-"))
        os.chmod(self.directory, 0o700)
        data, pwfile = self.directory / "data", self.directory / "pw"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        self._own(self.directory)
        self._own(pwfile)
        self._run(["initdb", "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                   "--auth-local=reject", "--encoding=UTF8", "--no-locale", "--no-instructions"], timeout)
        pwfile.unlink()
        options = (f"-c listen_addresses={self.host} -c port={self.port} -c unix_socket_directories='' "
                   "-c max_connections=200 -c fsync=off -c synchronous_commit=off")
        self._run(["pg_ctl", "start", "-D", str(data), "-l", str(self.directory / "log"), "-w",
                   "-t", str(int(timeout)), "-s", "-o", options], timeout + 10)
        return self.dsn

    def stop(self, timeout: float = 30.0) -> None:
        if self.directory is None:
            return
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            self._run(["pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w", "-t", str(int(timeout)), "-s"],
                      timeout + 10, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def _own(self, path: Path) -> None:
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, command: list[str], timeout: float, check: bool = True) -> None:
        entry = pwd.getpwnam(self.run_as) if self.run_as else None
        result = subprocess.run([str(postgres_bin() / command[0]), *command[1:]], capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.directory, start_new_session=True,
                                user=entry.pw_uid if entry else None, group=entry.pw_gid if entry else None)
        if check and result.returncode != 0:
            raise RuntimeError(f"{command[0]} exited {result.returncode}: {(result.stderr + result.stdout)[-1500:]}")
