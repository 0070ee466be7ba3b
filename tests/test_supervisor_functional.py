"""``inboxlens serve`` as systemd runs it: root, separate uids, notify socket, restarts, clean stop."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import json
import urllib.error
import urllib.request
import pytest

from inboxlens.supervisor import plan as supervisor
from tests.support.osusers import ensure_user

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the supervisor's root mode needs root")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children_of(pid: int) -> dict[int, dict[str, str]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = dict(line.split(":\t", 1) for line in (entry / "status").read_text().splitlines() if ":\t" in line)
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if fields.get("PPid") == str(pid):
                found[int(entry.name)] = {**fields, "cmdline": cmdline}
    return found


def role_of(child: dict[str, str]) -> str | None:
    for role in ("vault", "web", "harvest"):
        if f"inboxlens.{role}" in child["cmdline"]:
            return role
    return None


class Service:
    def __init__(self, base: Path, dsn: str | None) -> None:
        self.base = base
        self.port = free_port()
        self.notify_path = base / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(60)
        self.env = {"PATH": os.environ["PATH"], "HOME": str(base), "INBOXLENS_STATE_DIR": str(base / "state"),
                    "INBOXLENS_RUNTIME_DIR": str(base / "run"), "INBOXLENS_WEB__PORT": str(self.port),
                    "INBOXLENS_SUPERVISOR__RESTART_BACKOFF_INITIAL_SECONDS": "0.1",
                    "NOTIFY_SOCKET": str(self.notify_path)}
        if dsn:
            self.env["INBOXLENS_DATABASE__DSN"] = dsn
        self.process: subprocess.Popen[str] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "inboxlens", *args], env=self.env, capture_output=True,
                              text=True, timeout=120)

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "inboxlens", "serve"], env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def notification(self) -> str:
        return self.notify.recv(4096).decode()

    def health(self) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def exited(self) -> tuple[int, str]:
        """Wait for serve to end by itself (it must, when it cannot start)."""
        assert self.process is not None
        _, err = self.process.communicate(timeout=60)
        return self.process.returncode, err

    def stop(self) -> tuple[int, str]:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=60)
        return self.process.returncode, err


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="inboxlens-serve-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def service(base: Path) -> Iterator[Service]:
    svc = Service(base, None)  # the embedded PostgreSQL, as `make run` uses
    yield svc
    if svc.process is not None and svc.process.poll() is None:
        svc.stop()
    svc.notify.close()


def test_serve_runs_each_child_under_its_own_uid_and_stops_cleanly(service: Service):
    assert service.cli("keys", "init").returncode == 0
    service.start()
    assert "READY=1" in service.notification()
    status, body = service.health()
    assert status == 200 and body["vault"] == "ok"  # web reached the vault as web

    children = {role_of(c): (pid, c) for pid, c in children_of(service.process.pid).items()}
    assert set(children) >= {"vault", "web", "harvest"}
    shared_gid = __import__("grp").getgrnam(supervisor.SHARED_GROUP).gr_gid
    for role in ("vault", "web", "harvest"):
        uid = pwd.getpwnam(supervisor.USERS[role]).pw_uid
        status = children[role][1]
        assert status["Uid"].split() == [str(uid)] * 4, role
        groups = {int(g) for g in status["Groups"].split()}
        assert (shared_gid in groups) == (role != "vault"), role
        assert "CapEff:\t0000000000000000" in "\n".join(f"{k}:\t{v}" for k, v in status.items()), role

    socket_path = service.base / "run" / "vault" / "vault.sock"
    assert oct(socket_path.stat().st_mode & 0o777) == "0o660" and socket_path.stat().st_gid == shared_gid
    assert oct((service.base / "state" / "vault").stat().st_mode & 0o777) == "0o700"

    code, err = service.stop()
    assert code == 0, err
    assert "STOPPING=1" in service.notification()
    assert not children_of(service.process.pid)
    assert not socket_path.exists()
    assert "DEVELOPMENT MODE" not in err


def test_a_dead_child_is_restarted(service: Service):
    assert service.cli("keys", "init").returncode == 0
    service.start()
    assert "READY=1" in service.notification()
    web = next(pid for pid, c in children_of(service.process.pid).items() if role_of(c) == "web")
    os.kill(web, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        replacement = [pid for pid, c in children_of(service.process.pid).items() if role_of(c) == "web" and pid != web]
        if replacement:
            try:
                if service.health()[0] == 200:
                    break
            except OSError:
                pass
        assert time.monotonic() < deadline, "web was not restarted"
        time.sleep(0.05)
    code, err = service.stop()
    assert code == 0
    assert "web (pid %d) exited" % web in err


def test_serve_refuses_to_start_without_keys(service: Service):
    service.start()
    code, err = service.exited()
    assert code == 1
    assert "vault failed to start" in err and "inboxlens keys init" in err
    assert not children_of(service.process.pid)


def test_serve_refuses_a_private_key_others_can_read(service: Service):
    assert service.cli("keys", "init").returncode == 0
    key = service.base / "state" / "vault" / "key-1.secret"
    key.chmod(0o444)
    service.start()
    code, err = service.exited()
    assert code == 1
    assert "vault failed to start" in err and "readable by others" in err


DEV_USER = "inboxlens-t-dev"


@pytest.fixture
def dev_user(base: Path) -> pwd.struct_passwd:
    entry = ensure_user(DEV_USER)
    home = base / "home"
    home.mkdir()
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return entry


def test_development_mode_runs_everything_as_the_caller_and_says_so(base: Path, dev_user: pwd.struct_passwd):
    home = base / "home"
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "INBOXLENS_WEB__PORT": str(port)}
    as_user = {"user": dev_user.pw_uid, "group": dev_user.pw_gid, "extra_groups": [], "env": env, "cwd": str(home)}
    init = subprocess.run([sys.executable, "-m", "inboxlens", "keys", "init"], capture_output=True, text=True,
                          timeout=60, **as_user)
    assert init.returncode == 0, init.stderr
    assert (home / ".local" / "state" / "inboxlens" / "vault" / "key-1.secret").exists()  # defaults under $HOME
    serve = subprocess.Popen([sys.executable, "-m", "inboxlens", "serve"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, **as_user)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                    assert json.loads(answer.read())["vault"] == "ok"
                    break
            except OSError:
                assert serve.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        children = children_of(serve.pid)
        assert {role_of(c) for c in children.values()} >= {"vault", "web", "harvest"}
        assert {c["Uid"].split()[0] for c in children.values()} == {str(dev_user.pw_uid)}
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
    assert serve.returncode == 0, err
    assert "DEVELOPMENT MODE" in err and f"all run as uid {dev_user.pw_uid}" in err
    assert not children_of(serve.pid)


# -- the embedded PostgreSQL: a child of the supervisor like the others (issue 12.9) --------------

def postmaster(service: Service) -> int | None:
    """The live postmaster of the service's embedded PostgreSQL, if any."""
    try:
        pid = int((service.base / "state" / "pg" / "postmaster.pid").read_text().split()[0])
        return pid if (Path(f"/proc/{pid}/comm").read_text().strip() == "postgres") else None
    except (OSError, ValueError, IndexError):
        return None


def database_answers(service: Service) -> bool:
    import asyncio

    import asyncpg

    async def ask() -> bool:
        db = await asyncpg.connect(f"postgresql://inboxlens-db@/postgres?host={service.base / 'run' / 'pg'}",
                                   timeout=5)
        try:
            return bool(await db.fetchval("SELECT 1") == 1)
        finally:
            await db.close()
    try:
        return asyncio.run(ask())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False


def test_migrate_while_serving_leaves_the_database_running(service: Service):
    assert service.cli("keys", "init").returncode == 0
    service.start()
    assert "READY=1" in service.notification()
    before = postmaster(service)
    assert before is not None

    migrated = service.cli("migrate")
    assert migrated.returncode == 0 and "up to date" in migrated.stdout, migrated.stderr
    assert postmaster(service) == before, "migrate stopped the server the service uses"
    assert database_answers(service) and service.health()[0] == 200

    code, err = service.stop()
    assert code == 0, err
    assert postmaster(service) is None  # serve started it, so serve stops it


def test_a_dead_postgres_is_restarted(service: Service):
    assert service.cli("keys", "init").returncode == 0
    service.start()
    assert "READY=1" in service.notification()
    killed = postmaster(service)
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (postmaster(service) not in (None, killed) and database_answers(service)):
        assert service.process.poll() is None and time.monotonic() < deadline, "PostgreSQL was not restarted"
        time.sleep(0.05)
    code, err = service.stop()
    assert code == 0, err
    assert f"PostgreSQL (pid {killed}) exited" in err and "PostgreSQL started again" in err, [l for l in err.splitlines() if "supervisor" in l or "PostgreSQL" in l]
    assert postmaster(service) is None


# -- each child confined however serve was started (issue 12.8) ----------------------------------

PEEK = """
import ctypes, sys
pid = int(sys.argv[1])
try:
    open(f"/proc/{pid}/mem", "rb").close()
    mem = "read"
except PermissionError:
    mem = "refused"
libc = ctypes.CDLL(None, use_errno=True)
attached = libc.ptrace(16, pid, None, None) == 0  # PTRACE_ATTACH
if attached:
    libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
print(mem, "attached" if attached else "refused")
"""


def test_children_are_confined_and_not_dumpable(service: Service):
    assert service.cli("keys", "init").returncode == 0
    service.start()
    assert "READY=1" in service.notification()
    children = {role_of(c): (pid, c) for pid, c in children_of(service.process.pid).items()}
    for role in ("vault", "web", "harvest"):
        pid, status = children[role]
        assert status["NoNewPrivs"] == "1", role
        assert int(status["CapBnd"], 16) == 0 and int(status["CapEff"], 16) == 0, role
        assert int(status["CapPrm"], 16) == 0, role
        assert os.stat(f"/proc/{pid}/mem").st_uid == 0, f"{role} is dumpable: /proc/{pid} belongs to its uid"
        uid, gid = int(status["Uid"].split()[0]), int(status["Gid"].split()[0])
        peek = subprocess.run([sys.executable, "-c", PEEK, str(pid)], user=uid, group=gid, extra_groups=[],
                              cwd="/", env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)
        assert peek.stdout.split() == ["refused", "refused"], (role, peek.stdout, peek.stderr)
    code, err = service.stop()
    assert code == 0, err
