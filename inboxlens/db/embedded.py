"""Our own small interface to an embedded PostgreSQL.

We run the PostgreSQL 16 binaries that the ``pgserver`` wheel ships and nothing else of
that package: importing it takes locks, registers atexit hooks and chmods every parent
directory, and its server trusts whoever reaches a world-writable socket directory.

An embedded server here:
- listens on no TCP port (``listen_addresses = ''``), only on ``<socket_dir>/.s.PGSQL.5432``
  (mode 0777). ``socket_dir`` belongs to the server's OS user; who else may reach the socket
  is the caller's decision, made with the directory's group and mode (0750 with the server
  user's group when we create it);
- authenticates by ``peer`` through the ident map ``inboxlens``: an OS user may log in as
  the role of the same name, and the OS users in ``superuser_map`` also as the superuser
  role, which is named after the server's OS user. TCP connections are rejected;
- runs as ``run_as`` when we are root (postgres refuses to run as root); that user owns the
  data directory and the socket directory. The data directory is then 0750 (``initdb
  --allow-group-access``, files 0640): a root supervisor without CAP_DAC_READ_SEARCH (the
  systemd unit) reads ``postmaster.pid`` as a member of the server user's group.

Linux only: liveness is read from ``/proc`` and processes are pinned with pidfds.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.util
import math
import os
import pwd
import re
import select
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote


from inboxlens.service_errors import PgError

__all__ = ["POSTGRES_BIN", "EmbeddedPostgres", "PgError", "PostgresBinariesMissing",
           "postgres_bin", "stop_stale"]


POSTGRES_BIN: Path  # resolved on first use by the module __getattr__ below

PORT = 5432  # only names the socket file: there is no TCP listener
IDENT_MAP = "inboxlens"
_OS_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")
_UNSAFE_IN_CONF = re.compile(r"[\s,'\"\\]")
_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1
_LOG_TAIL_LINES = 20
_KILL_GRACE = 5.0
_OUR_FILE_HEADER = "# Written by inboxlens on every start; edits here are overwritten.\n"


class PostgresBinariesMissing(PgError):
    """The pgserver wheel, and with it the PostgreSQL binaries, is not installed here."""


@functools.cache
def postgres_bin() -> Path:
    """The wheel's ``pginstall/bin``, found without importing pgserver."""
    spec = importlib.util.find_spec("pgserver")
    locations = spec.submodule_search_locations if spec else None
    if not locations:
        raise PostgresBinariesMissing("no PostgreSQL binaries: install the pgserver wheel "
                                      "(pip install 'pgserver>=0.1.4,<0.2') or configure a DSN")
    bin_dir = Path(locations[0]) / "pginstall" / "bin"
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (bin_dir / name).is_file()]
    if missing:
        raise PostgresBinariesMissing(f"{bin_dir} lacks {', '.join(missing)}: this pgserver wheel has no "
                                      "PostgreSQL binaries for this platform; configure a DSN instead")
    return bin_dir


def __getattr__(name: str) -> Path:
    if name == "POSTGRES_BIN":
        return postgres_bin()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class _Account:
    """The OS user that owns and runs the server."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def named(cls, name: str) -> _Account:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise PgError(f"no OS user {name!r} to run PostgreSQL as; create it first") from None
        return cls(name, entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(name, entry.pw_gid)))

    def may_search(self, path: Path) -> bool:
        st = path.stat()
        if self.uid == 0:
            return True
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid in self.groups:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)


def _server_account(run_as: str | None) -> tuple[_Account, bool]:
    """The account postgres runs as, and whether we must switch to it (we are root)."""
    if os.geteuid() == 0:
        if run_as is None or run_as == "root":
            raise PgError("postgres refuses to run as root: pass run_as=<an unprivileged OS user>")
        return _Account.named(run_as), True
    current = pwd.getpwuid(os.geteuid()).pw_name
    if run_as not in (None, current):
        raise PgError(f"only root can run PostgreSQL as {run_as!r}; this process runs as {current!r}")
    return _Account.named(current), False


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir``, reachable only through ``socket_dir``.

    ``start`` and ``stop`` block (about a second); call them from a thread in async code.
    """

    def __init__(self, data_dir: Path, socket_dir: Path, *, run_as: str | None = None,
                 superuser_map: tuple[str, ...] = ()) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.socket_dir = Path(socket_dir).resolve()
        self._account, self._switch_user = _server_account(run_as)
        for name in (self._account.name, *superuser_map):
            if not _OS_USER.fullmatch(name):
                raise PgError(f"{name!r} is not a usable OS user name")
        self.superuser_map = superuser_map
        _check_socket_dir_usable(self.socket_dir)
        self.log_file = self.data_dir / "postgresql.log"
        self.conf_dir = self.data_dir.with_name(self.data_dir.name + "-conf")
        self._launched: int | None = None  # the postmaster pid our start() launched, if any

    @property
    def dsn(self) -> str:
        role = quote(self._account.name, safe="")
        return f"postgresql://{role}@/postgres?host={quote(str(self.socket_dir), safe='/')}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while our server runs, else None."""
        return _live_postmaster(self.data_dir)

    def is_running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float = 30.0) -> str:
        """Start the server (initialising the cluster first if needed), or reuse ours if it runs."""
        self._prepare_directories()
        with _exclusive(self.data_dir):
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(timeout)
            self._check_cluster_owner()
            reload = self._write_config()
            pid = self.pid
            if pid is None:
                _clear_stale(self.data_dir, self.socket_dir)
                self._pg_ctl_start(timeout)
                self._launched = self.pid
            else:
                self._check_reusable(pid, reload)
        return self.dsn

    @property
    def started_here(self) -> bool:
        """Whether the running postmaster is one our start() launched, not one we attached to.

        A command stops only a server it started, never one a running service uses.
        """
        return self._launched is not None and self._launched == self.pid

    def release(self, timeout: float = 30.0) -> None:
        """Stop the server if our start() launched it; leave one we attached to running."""
        if self.started_here:
            self.stop(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (pg_ctl stop -m fast), checked by watching the postmaster exit; idempotent."""
        with _exclusive(self.data_dir) as present:
            pid = self.pid if present else None
            if pid is not None:
                seconds = str(math.ceil(timeout))
                _stop_postmaster(pid, self.data_dir, timeout, lambda _pidfd: self._run_quietly(
                    ["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", seconds, "-s"], timeout))

    # -- start, step by step ------------------------------------------------------------

    def _prepare_directories(self) -> None:
        owner = self._account if self._switch_user else None
        try:
            if owner is not None:  # refuse before creating anything
                _ensure_wheel_usable(owner)
                _require_searchable(self.data_dir, owner)
                _require_searchable(self.socket_dir, owner)
            _own_directory(self.data_dir, 0o750 if owner else 0o700, owner, group=owner.gid if owner else -1)
            fresh_socket_dir = not self.socket_dir.exists()
            _own_directory(self.socket_dir, 0o750 if fresh_socket_dir else None, owner,
                           group=owner.gid if owner and fresh_socket_dir else -1)
            if owner is not None:  # and the directories mkdir created on the way
                _require_searchable(self.data_dir, owner)
                _require_searchable(self.socket_dir, owner)
        except OSError as e:
            raise PgError(f"cannot prepare {e.filename or 'the PostgreSQL directories'}: {e.strerror}") from None

    def _initdb(self, timeout: float) -> None:
        group_access = ["--allow-group-access"] if self._switch_user else []
        self._run(["initdb", "-D", str(self.data_dir), "-U", self._account.name, "--auth-local=peer",
                   "--auth-host=reject", "--encoding=UTF8", "--no-locale", "--no-instructions", *group_access],
                  timeout, "initdb failed")

    def _check_cluster_owner(self) -> None:
        owner = (self.data_dir / "PG_VERSION").stat().st_uid
        if owner != self._account.uid:
            raise PgError(f"{self.data_dir} was initialised by uid {owner}, not by {self._account.name!r} "
                          f"(uid {self._account.uid}) which must run it")

    def _write_config(self) -> bool:
        """Write pg_hba.conf and pg_ident.conf beside the data directory; True if either changed.

        They live in ``<data_dir>-conf``, owned by us, not in the data directory: as root under
        the systemd unit we have no CAP_DAC_OVERRIDE, so we cannot write into a directory the
        server's user owns. The server only reads them (they hold no secret: mode 0644).
        """
        role = self._account.name
        mapped = "".join(f"{IDENT_MAP}  {user}  {role}\n" for user in self.superuser_map)
        files = {
            "pg_hba.conf": f"# Unix socket only; who may be which role is in pg_ident.conf\n"
                           f"local  all  all  peer  map={IDENT_MAP}\n",
            "pg_ident.conf": f"# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n{mapped}{IDENT_MAP}  /^(.*)$  \\1\n",
        }
        self.conf_dir.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.conf_dir, 0o755)
        changed = [_install(self.conf_dir / name, _OUR_FILE_HEADER + text) for name, text in files.items()]
        return any(changed)

    def _server_options(self) -> str:
        """Settings on the command line: they win over postgresql.conf and ALTER SYSTEM."""
        # The socket itself is open to all (0777): the socket directory's owner, group and mode
        # decide who reaches it, and root (without CAP_DAC_OVERRIDE) must still connect to migrate.
        settings = {"listen_addresses": "''", "port": str(PORT), "unix_socket_directories": f"'{self.socket_dir}'",
                    "unix_socket_permissions": "0777", "hba_file": f"'{self.conf_dir / 'pg_hba.conf'}'",
                    "ident_file": f"'{self.conf_dir / 'pg_ident.conf'}'"}
        return " ".join(f"-c {name}={value}" for name, value in settings.items())

    def _pg_ctl_start(self, timeout: float) -> None:
        command = ["pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                   "-t", str(math.ceil(timeout)), "-s", "-o", self._server_options()]
        self._run(command, timeout + 10, f"PostgreSQL did not start within {timeout:g} s")
        if not self.is_running():
            raise PgError(f"PostgreSQL exited right after starting{_log_tail(self.log_file)}")

    def _check_reusable(self, pid: int, reload: bool) -> None:
        lines = _pidfile_lines(self.data_dir)
        socket_dir, listen = (lines + ["", "", "", "", "", ""])[4:6]
        if socket_dir != str(self.socket_dir) or listen.strip():
            raise PgError(f"a PostgreSQL (pid {pid}) already runs on {self.data_dir} with other settings "
                          f"(socket dir {socket_dir!r}, TCP {listen!r}); stop it first")
        if reload:  # pg_hba.conf / pg_ident.conf changed, e.g. a new superuser_map
            os.kill(pid, signal.SIGHUP)

    # -- running the binaries -----------------------------------------------------------

    def _run(self, command: list[str], timeout: float, failure: str) -> None:
        try:
            result = self._spawn(command, timeout)
        except subprocess.TimeoutExpired:
            raise PgError(f"{failure}: {command[0]} timed out{_log_tail(self.log_file)}") from None
        except OSError as e:
            raise PgError(f"{failure}: cannot run {command[0]}: {e.strerror}") from None
        if result.returncode != 0:
            output = (result.stderr + result.stdout).strip()[-2000:]
            raise PgError(f"{failure}: {command[0]} exited {result.returncode}: {output}{_log_tail(self.log_file)}")

    def _run_quietly(self, command: list[str], timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._spawn(command, timeout)  # its outcome is judged by watching the postmaster

    def _spawn(self, command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        bin_dir = postgres_bin()
        switch = self._account if self._switch_user else None
        return subprocess.run(
            [str(bin_dir / command[0]), *command[1:]], stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=timeout, cwd=self.data_dir, env=_server_environment(bin_dir),
            user=switch.uid if switch else None, group=switch.gid if switch else None,
            extra_groups=list(switch.groups) if switch else None, umask=0o077,
            # Out of our process group: a Ctrl-C meant for us must not shut the server down behind our back.
            start_new_session=True,
        )


def stop_stale(data_dir: Path, timeout: float = 30.0) -> bool:
    """Stop a server left running on ``data_dir`` (e.g. its owner was killed); True if one was."""
    data_dir = Path(data_dir).resolve()
    with _exclusive(data_dir) as present:
        pid = _live_postmaster(data_dir) if present else None
        if pid is None:
            return False
        return _stop_postmaster(pid, data_dir, timeout, lambda fd: signal.pidfd_send_signal(fd, signal.SIGINT))


# -- processes ----------------------------------------------------------------------------

def _pidfile_lines(data_dir: Path) -> list[str]:
    try:
        return (data_dir / "postmaster.pid").read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []


def _first_pid(lines: list[str]) -> int | None:
    try:
        return int(lines[0]) if lines and int(lines[0]) > 0 else None
    except ValueError:
        return None


def _live_postmaster(data_dir: Path) -> int | None:
    pid = _first_pid(_pidfile_lines(data_dir))
    return pid if pid is not None and _is_postgres(pid, data_dir) else None


def _is_postgres(pid: int, data_dir: Path | None) -> bool:
    """Whether pid is a live (not zombie) postgres process, working in data_dir if given: then it
    must also run as the data directory's owner, so no other local user's process named postgres
    passes for the cluster's postmaster."""
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X") or (proc / "comm").read_text().strip() != "postgres":
            return False
        if data_dir is None:
            return True
        return proc.stat().st_uid == data_dir.stat().st_uid and _works_in(proc, data_dir)
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):  # gone, or cannot be vouched for
        return False


def _works_in(proc: Path, data_dir: Path) -> bool:
    try:
        return os.readlink(proc / "cwd") == str(data_dir)
    except PermissionError:
        # Another user's process and no CAP_SYS_PTRACE (the systemd unit): the postmaster's argv
        # still names its data directory (pg_ctl runs "postgres -D DIR"); its backends' argv does not,
        # so they are never taken for this cluster's (they exit by themselves when the postmaster dies).
        argv = (proc / "cmdline").read_bytes().split(b"\0")
        return b"-D" in argv[:-1] and argv[argv.index(b"-D") + 1] == os.fsencode(data_dir)


@contextlib.contextmanager
def _pidfd(pid: int) -> Iterator[int | None]:
    """A pidfd pins the process: signals sent through it cannot reach a recycled pid."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _exited(pidfd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)  # readable once the process has exited
    return bool(poller.poll(max(0, math.ceil(timeout * 1000))))


def _stop_postmaster(pid: int, data_dir: Path, timeout: float, request: Callable[[int], None]) -> bool:
    """Ask the postmaster to stop (fast shutdown), wait for it to exit, SIGKILL it as a last resort."""
    deadline = time.monotonic() + timeout
    with _pidfd(pid) as fd:
        if fd is None or not _is_postgres(pid, data_dir):
            return False
        request(fd)
        if _exited(fd, deadline - time.monotonic()):
            return True
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        if not _exited(fd, _KILL_GRACE):
            raise PgError(f"PostgreSQL (pid {pid}) survived SIGKILL")
    _kill_orphans(data_dir)
    return True


def _kill_orphans(data_dir: Path) -> None:
    """Kill the children a dead postmaster left behind: they hold its shared memory."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _is_postgres(int(entry.name), data_dir):
            _kill(int(entry.name), data_dir)


def _kill(pid: int, data_dir: Path) -> None:
    with _pidfd(pid) as fd:
        if fd is not None and _is_postgres(pid, data_dir):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            if not _exited(fd, _KILL_GRACE):
                raise PgError(f"PostgreSQL process {pid} survived SIGKILL")


def _clear_stale(data_dir: Path, socket_dir: Path) -> None:
    """Remove what a dead server left: its orphans, its pid file, a dead socket lock file."""
    _kill_orphans(data_dir)
    # Without CAP_DAC_OVERRIDE (the systemd unit) root may not unlink in the server's directories:
    # postgres then replaces a stale pid or lock file itself.
    with contextlib.suppress(FileNotFoundError, PermissionError):
        (data_dir / "postmaster.pid").unlink()
    lock = socket_dir / f".s.PGSQL.{PORT}.lock"
    with contextlib.suppress(FileNotFoundError, PermissionError):
        pid = _first_pid(lock.read_text(encoding="utf-8", errors="replace").splitlines())
        if pid is None or not _is_postgres(pid, None):  # a live one is another server's: let postgres refuse
            lock.unlink()


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[bool]:
    """Concurrent start/stop calls on one data directory take turns (flock); False if it is absent."""
    try:
        fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


# -- files and permissions ------------------------------------------------------------------

def _server_environment(bin_dir: Path) -> dict[str, str]:
    """A clean environment: no PGHOST/PGPORT/PGDATA of ours leaks into the server."""
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C"}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    return env


def _check_socket_dir_usable(socket_dir: Path) -> None:
    if _UNSAFE_IN_CONF.search(str(socket_dir)):
        raise PgError(f"socket directory {socket_dir} must not contain whitespace, quotes, commas or backslashes")
    if len(f"{socket_dir}/.s.PGSQL.{PORT}".encode()) > _SOCKET_PATH_MAX:
        raise PgError(f"socket directory {socket_dir} is too long for a Unix socket path; choose a shorter one")


def _own_directory(path: Path, mode: int | None, owner: _Account | None, group: int) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=mode or 0o700)
    if path.is_symlink() or not path.is_dir():
        raise PgError(f"{path} must be a directory, not a symbolic link")
    st = path.lstat()  # unchanged: no chown/chmod, which root may not do without CAP_CHOWN/CAP_FOWNER
    if owner is not None and (st.st_uid != owner.uid or group not in (-1, st.st_gid)):
        os.chown(path, owner.uid, group, follow_symlinks=False)
    if mode is not None and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def _require_searchable(path: Path, account: _Account) -> None:
    """Raise if account cannot traverse path or an ancestor of it (those that exist yet)."""
    for directory in [*reversed(path.parents), path]:
        if not directory.exists():
            return
        if not account.may_search(directory):
            raise PgError(f"OS user {account.name!r} cannot traverse {directory} (mode "
                          f"{stat.S_IMODE(directory.stat().st_mode):o}), so PostgreSQL cannot reach {path}: "
                          f"grant it search permission (e.g. chmod o+x {directory}) or choose another location")


def _ensure_wheel_usable(account: _Account) -> None:
    """Let the server account into the wheel's own directories; report what lies above them."""
    package = postgres_bin().parent.parent
    _require_searchable(package.parent, account)
    install = package / "pginstall"
    for directory in (package, install, install / "bin", install / "lib", install / "lib" / "postgresql",
                      install / "share", install / "share" / "postgresql", package.parent / "pgserver.libs"):
        if directory.is_dir() and not account.may_search(directory):
            os.chmod(directory, stat.S_IMODE(directory.stat().st_mode) | 0o005)


def _install(path: Path, text: str) -> bool:
    """Atomically replace path with text (mode 0644); False if it already held it."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text(encoding="utf-8") == text:
            return False
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return True


def _log_tail(log_file: Path) -> str:
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    except (FileNotFoundError, PermissionError):
        return f"\n(see {log_file})"
    return f"\n--- last lines of {log_file} ---\n" + "\n".join(lines)
