"""``inboxlens serve`` under config/inboxlens.service's privileges, as far as they can be had without systemd.

PID 1 here is not systemd, so the unit itself cannot start. What it grants and takes away
that the code depends on is reproduced from the unit file, never restated: its
``ExecStartPre=`` prepare step runs as full root (the ``+`` prefix), then ``serve`` runs under
``setpriv`` with exactly the unit's ``CapabilityBoundingSet=``, no inheritable or ambient
capabilities, ``NoNewPrivileges=`` and ``UMask=``. The supervisor then has no CAP_CHOWN,
CAP_FOWNER or CAP_DAC_READ_SEARCH: it must still start the embedded PostgreSQL, migrate,
start every child, restart one killed with SIGKILL, and stop cleanly.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.osusers import ensure_user
from tests.test_supervisor_functional import DEV_USER, Service, base, children_of, postmaster, role_of  # noqa: F401
from tests.test_systemd_unit import UNIT, parse_unit, single, values

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the supervisor's root mode needs root"),
              pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux setpriv is not installed")]

SERVICE = parse_unit(UNIT)["Service"]
PREPARE_MODULE = "inboxlens.supervisor.prepare"
REPO = Path(__file__).resolve().parent.parent
# linux/capability.h; a capability the unit grants that is missing here fails the test by name.
CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_KILL": 5,
               "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_SYS_PTRACE": 19}


def unit_capabilities() -> list[str]:
    return " ".join(values(SERVICE, "CapabilityBoundingSet")).split()


def our_argv(line: str, config: Path) -> list[str]:
    """An Exec*= command line with our interpreter for the unit's venv and our config file for /etc's."""
    argv = shlex.split(line.lstrip("@-:+!"))
    argv[argv.index("--config") + 1] = str(config)
    if Path(argv[0]).name == "inboxlens":
        return [sys.executable, "-m", "inboxlens", *argv[1:]]
    assert Path(argv[0]).name.startswith("python"), argv
    return [sys.executable, *argv[1:]]


def unit_sandbox() -> list[str]:
    """setpriv options for what the unit grants: the bounding set, nothing inheritable, no new privileges."""
    assert not " ".join(values(SERVICE, "AmbientCapabilities")).split()
    bounding = ",".join(["-all"] + [f"+{cap.lower().removeprefix('cap_')}" for cap in unit_capabilities()])
    options = [f"--bounding-set={bounding}", "--inh-caps=-all"]
    return options + (["--no-new-privs"] if single(SERVICE, "NoNewPrivileges") == "yes" else [])


class SandboxedService(Service):
    def __init__(self, base: Path) -> None:
        super().__init__(base, None)
        self.config = base / "inboxlens.toml"
        self.config.write_text("# everything else comes from INBOXLENS_* in the environment\n")

    def prepare(self) -> None:
        """The unit's ExecStartPre= lines that prepare directories, with full root as '+' runs them."""
        lines = [line for line in values(SERVICE, "ExecStartPre") if PREPARE_MODULE in line]
        assert lines and all(line.startswith("+") for line in lines), lines
        for line in lines:
            done = subprocess.run(our_argv(line, self.config), env=self.env, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, done.stderr

    def start(self) -> None:
        serve = our_argv(single(SERVICE, "ExecStart"), self.config)
        self.process = subprocess.Popen(["setpriv", *unit_sandbox(), "--", *serve], env=self.env,
                                        umask=int(single(SERVICE, "UMask"), 8), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)

    def ready(self) -> None:
        """Wait for READY=1; if serve ends first, fail with what it said instead of waiting out a timeout."""
        assert self.process is not None
        self.notify.settimeout(0.2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if "READY=1" in self.notification():
                    return
            except TimeoutError:
                if self.process.poll() is not None:
                    pytest.fail(f"serve exited {self.process.returncode} before READY=1:\n{self.exited()[1][-3000:]}")
        pytest.fail("no READY=1 within 60 s")


@pytest.fixture
def sandboxed(base: Path) -> Iterator[SandboxedService]:
    svc = SandboxedService(base)
    yield svc
    if svc.process is not None and svc.process.poll() is None:
        svc.stop()
    svc.notify.close()


def capability_set(pid: int, field: str) -> int:
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":\t" in line)
    return int(status[field], 16)


def test_serve_runs_with_exactly_the_units_capabilities(sandboxed: SandboxedService) -> None:
    assert sandboxed.cli("keys", "init").returncode == 0
    sandboxed.prepare()
    sandboxed.start()
    sandboxed.ready()
    assert sandboxed.process is not None
    supervisor = sandboxed.process.pid
    granted = sum(1 << CAP_NUMBERS[cap] for cap in unit_capabilities())
    assert capability_set(supervisor, "CapBnd") == granted == capability_set(supervisor, "CapEff")
    for missing in ("CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_READ_SEARCH", "CAP_DAC_OVERRIDE", "CAP_SYS_PTRACE"):
        assert not granted & (1 << CAP_NUMBERS[missing]), f"the unit grants {missing} again"
    status, body = sandboxed.health()
    assert status == 200 and body["vault"] == "ok"  # web reached the vault's socket through its group
    assert postmaster(sandboxed) is not None  # the embedded PostgreSQL runs, migrated

    web = next(pid for pid, c in children_of(supervisor).items() if role_of(c) == "web")
    os.kill(web, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not [pid for pid, c in children_of(supervisor).items() if role_of(c) == "web" and pid != web] \
            or not _healthy(sandboxed):
        assert sandboxed.process.poll() is None and time.monotonic() < deadline, "web was not restarted"
        time.sleep(0.05)

    code, err = sandboxed.stop()
    assert code == 0, err[-3000:]
    assert f"web (pid {web}) exited" in err
    assert "Traceback" not in err and "Operation not permitted" not in err, err[-3000:]
    assert not children_of(supervisor)
    assert postmaster(sandboxed) is None  # stopped with no CAP_DAC_READ_SEARCH into its directory


def _healthy(service: Service) -> bool:
    try:
        return service.health()[0] == 200
    except OSError:
        return False


def test_serve_without_the_prepare_step_says_what_to_run(sandboxed: SandboxedService) -> None:
    """Without CAP_CHOWN the supervisor cannot hand directories over; it names the step that does."""
    assert sandboxed.cli("keys", "init").returncode == 0
    sandboxed.start()
    code, err = sandboxed.exited()
    assert code != 0
    assert f"python -m {PREPARE_MODULE}" in err and "Traceback" not in err, err[-3000:]


def test_prepare_refuses_without_root_in_one_line(base: Path) -> None:
    user = ensure_user(DEV_USER)
    done = subprocess.run([sys.executable, "-m", PREPARE_MODULE], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                          cwd=REPO, env={"PATH": os.environ["PATH"], "INBOXLENS_STATE_DIR": str(base / "state")},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "inboxlens: prepare is for root (serve prepares its own directories in development mode)"], done.stderr
    assert not (base / "state").exists()
