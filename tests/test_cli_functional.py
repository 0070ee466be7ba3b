"""`inboxlens migrate` and `inboxlens doctor` as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.osusers import ensure_user


def inboxlens(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "INBOXLENS_STATE_DIR": str(tmp_path / "state"),
               "INBOXLENS_RUNTIME_DIR": str(tmp_path / "run"), **env}
    return subprocess.run([sys.executable, "-m", "inboxlens", *args], capture_output=True, text=True,
                          env=environ, timeout=120)


def test_migrate_against_a_configured_database(tmp_path: Path, pg_db: str):
    first = inboxlens(tmp_path, "migrate", INBOXLENS_DATABASE__DSN=pg_db)
    assert first.returncode == 0 and "up to date" in first.stdout, first.stderr
    again = inboxlens(tmp_path, "migrate", INBOXLENS_DATABASE__DSN=pg_db)
    assert again.returncode == 0

    async def applied() -> list[str]:
        db = await asyncpg.connect(pg_db)
        try:
            return [r["name"] for r in await db.fetch("SELECT name FROM schema_migrations ORDER BY version")]
        finally:
            await db.close()
    assert asyncio.run(applied())[0] == "001_foundation"


def test_migrate_reports_an_unreachable_database_clearly(tmp_path: Path):
    result = inboxlens(tmp_path, "migrate", INBOXLENS_DATABASE__DSN=f"postgresql://nobody@/x?host={tmp_path}/nope")
    assert result.returncode == 1 and "PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_names_what_is_missing_then_is_content(tmp_path: Path):
    missing = inboxlens(tmp_path, "doctor")
    assert missing.returncode == 1 and "inboxlens keys init" in missing.stdout
    assert inboxlens(tmp_path, "keys", "init").returncode == 0
    fine = inboxlens(tmp_path, "doctor")
    assert fine.returncode == 0 and "problem" not in fine.stdout
    (tmp_path / "state" / "vault" / "key-1.secret").chmod(0o440)
    loose = inboxlens(tmp_path, "doctor")
    assert loose.returncode == 1 and "must be 0400" in loose.stdout


def test_migrate_reports_an_unreachable_cassandra_clearly(tmp_path: Path, pg_db: str):
    result = inboxlens(tmp_path, "migrate", INBOXLENS_DATABASE__DSN=pg_db, INBOXLENS_METRICS__BACKEND="cassandra",
                       INBOXLENS_METRICS__CASSANDRA_HOSTS="127.0.0.1:1",
                       INBOXLENS_METRICS__CASSANDRA_PASSWORD="cass-secret-61f0",
                       INBOXLENS_METRICS__CASSANDRA_USERNAME="inboxlens",
                       INBOXLENS_METRICS__CASSANDRA_TIMEOUT_SECONDS="2")
    assert result.returncode == 1 and "cannot connect to Cassandra at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr and "cass-secret-61f0" not in result.stderr + result.stdout


# -- as someone who may not touch the state: one line, no traceback (issue 12.10) ---------------

COMMANDS = [("serve",), ("migrate",), ("doctor",), ("harvest", "--once"), ("keys", "init"), ("keys", "list"),
            ("keys", "status"), ("keys", "rotate"), ("keys", "rewrap"), ("keys", "revoke", "1")]


@pytest.fixture(scope="module")
def roots_state() -> Iterator[Path]:
    """A state as the root service leaves it: the vault's directory its user's, 0700."""
    base = Path(tempfile.mkdtemp(prefix="inboxlens-cli-"))
    base.chmod(0o711)
    assert inboxlens(base, "keys", "init").returncode == 0
    vault = ensure_user("inboxlens-vault")
    for path in [base / "state" / "vault", *(base / "state" / "vault").iterdir()]:
        os.chown(path, vault.pw_uid, vault.pw_gid)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def as_outsider(base: Path, args: tuple[str, ...], how: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "INBOXLENS_STATE_DIR": str(base / "state"),
           "INBOXLENS_RUNTIME_DIR": str(base / "run"), "INBOXLENS_WEB__PORT": "1"}
    if how == "unprivileged user":
        user = ensure_user("inboxlens-t-cli")
        return subprocess.run([sys.executable, "-m", "inboxlens", *args], user=user.pw_uid, group=user.pw_gid,
                              extra_groups=[], cwd="/", env=env, capture_output=True, text=True, timeout=60)
    # root as systemd's sandbox makes it: no capability, so no override of the children's modes
    return subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m", "inboxlens",
                           *args], cwd="/", env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="runs commands as others (setpriv)")
@pytest.mark.parametrize("how", ["unprivileged user", "root without capabilities"])
@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_no_traceback_where_the_state_is_out_of_reach(roots_state: Path, args: tuple[str, ...], how: str):
    result = as_outsider(roots_state, args, how)
    assert result.returncode not in (0, None), result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("inboxlens")]
    assert lines and "root" in lines[-1], result.stderr
    if args[0] == "keys":
        assert "vault.admin_uid" in lines[-1], result.stderr


# Commands that do not go through the vault: each fails in one line, for its own reason (who may;
# as root without capabilities, what it cannot read or what is missing; demo: where its state cannot go).
OTHER_COMMANDS = [("backup", "{base}/new-backup"), ("restore", "{base}"), ("demo",),
                  ("keys", "export", "{base}/new-backup"), ("keys", "import", "{base}")]


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="runs commands as others (setpriv)")
@pytest.mark.parametrize("how", ["unprivileged user", "root without capabilities"])
@pytest.mark.parametrize("args", OTHER_COMMANDS, ids=lambda a: " ".join(a[:2]).replace("{base}", "DIR"))
def test_no_traceback_from_the_other_commands_either(roots_state: Path, args: tuple[str, ...], how: str):
    result = as_outsider(roots_state, tuple(a.format(base=roots_state) for a in args), how)
    assert result.returncode not in (0, None), result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("inboxlens"), result.stderr
    if how == "unprivileged user":
        assert "root" in lines[-1], result.stderr
    assert not (roots_state / "new-backup").exists()


def test_version(tmp_path: Path):
    result = inboxlens(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout.startswith("inboxlens ") and result.stdout.split()[1][0].isdigit()
