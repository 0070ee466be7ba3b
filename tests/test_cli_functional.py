"""`inboxlens migrate` and `inboxlens doctor` as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg


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
