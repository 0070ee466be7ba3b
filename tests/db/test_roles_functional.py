"""Database roles: each child's real role, logged in by peer authentication, may do exactly
what ``inboxlens.db.roles`` declares, on every table, column and sequence (issue 12.1)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from inboxlens.db import roles
from inboxlens.db.embedded import EmbeddedPostgres, PgError
from inboxlens.db.migrate import migrate
from inboxlens.supervisor.plan import SHARED_GROUP, USERS
from tests.support.osusers import ensure_group, ensure_user

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="logs in as other OS users")]

REPO = Path(__file__).resolve().parent.parent.parent
LOGINS: dict[roles.Role, str] = {"web": USERS["web"], "harvest": USERS["harvest"]}


@pytest.fixture(scope="module")
def server(pg_base_dir: Path, pg_run_as: str, pg_superuser_map: tuple[str, ...]) -> Iterator[EmbeddedPostgres]:
    """A server whose socket directory web and harvest reach through the shared group, as in serve."""
    root = Path(tempfile.mkdtemp(dir=pg_base_dir))
    os.chmod(root, 0o711)
    shared, owner = ensure_group(SHARED_GROUP), ensure_user(pg_run_as)
    for name in LOGINS.values():
        ensure_user(name)
    (root / "sock").mkdir(mode=0o750)
    os.chown(root / "sock", owner.pw_uid, shared)
    pg = EmbeddedPostgres(root / "data", root / "sock", run_as=pg_run_as, superuser_map=pg_superuser_map)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def database(server: EmbeddedPostgres) -> str:
    """The migrated schema with the declared grants: the superuser's DSN."""
    dsn = server.dsn
    asyncio.run(migrate(dsn))
    asyncio.run(roles.apply_grants(dsn, LOGINS))
    return dsn


def probe_as(server: EmbeddedPostgres, login: str) -> dict[str, Any]:
    """Run tests/db/probe.py as the OS user ``login``: peer authentication makes it that role."""
    entry = ensure_user(login)
    dsn = f"postgresql://{login}@/postgres?host={server.socket_dir}"
    result = subprocess.run([sys.executable, "-m", "tests.db.probe", dsn], user=entry.pw_uid, group=entry.pw_gid,
                            extra_groups=[ensure_group(SHARED_GROUP)], cwd=REPO, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    assert found["whoami"] == login
    assert found["create"] is False  # migration 010: only the owner creates in schema public
    return found


def expected(role: roles.Role, columns: dict[str, list[str]]) -> dict[str, Any]:
    """What the declared table says the probe must find, column by column."""
    tables = {}
    for table, access in roles.TABLES.items():
        granted = roles.privileges(access.of(role))
        tables[table] = {op: sorted(columns[table] if granted.get(op) == roles.ALL_COLUMNS else granted.get(op, ()))
                         for op in ("SELECT", "INSERT", "UPDATE")} | {"DELETE": "DELETE" in granted}
    return tables


async def relation_columns(dsn: str) -> dict[str, list[str]]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT c.relname, array_agg(a.attname::text) AS columns FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v') AND a.attnum > 0 AND NOT a.attisdropped "
            "GROUP BY 1")
        return {r["relname"]: list(r["columns"]) for r in rows}
    finally:
        await connection.close()


@pytest.mark.parametrize("role", roles.ROLES)
def test_each_role_may_do_exactly_what_is_declared(server: EmbeddedPostgres, database: str, role: roles.Role):
    found = probe_as(server, LOGINS[role])
    tables = {t: {op: sorted(v) if isinstance(v, list) else v for op, v in ops.items()}
              for t, ops in found["tables"].items()}
    want = expected(role, asyncio.run(relation_columns(database)))
    assert set(tables) == set(want)
    for table in sorted(want):
        assert tables[table] == want[table], f"{role} on {table}"
    for sequence, ops in found["sequences"].items():
        declared = roles.privileges(roles.SEQUENCES[sequence].of(role)) if sequence in roles.SEQUENCES else {}
        assert ops == {"USAGE": "USAGE" in declared, "SELECT": "SELECT" in declared}, f"{role} on {sequence}"


def test_harvest_cannot_touch_identities_sessions_tokens_or_ownership(server: EmbeddedPostgres, database: str):
    """The observed attack: harvest inserting an API token of its choosing (issue 12.1)."""
    tables = probe_as(server, LOGINS["harvest"])["tables"]
    for table in ("users", "web_sessions", "api_tokens", "audit_events", "schema_migrations"):
        assert tables[table] == {"SELECT": [], "INSERT": [], "UPDATE": [], "DELETE": False}, table
    accounts = tables["mail_accounts"]
    assert "user_id" not in accounts["SELECT"] and not accounts["INSERT"] and not accounts["DELETE"]
    assert sorted(accounts["UPDATE"]) == ["last_sync_at", "status"]


async def test_every_relation_of_the_shipped_migrations_is_declared(pg_db: str):
    """Fails when a migration adds a table, view or sequence without an entry in db/roles.py."""
    await migrate(pg_db)
    connection = await asyncpg.connect(pg_db)
    try:
        assert await roles.undeclared(connection) == []
        names = {r["relname"] for r in await connection.fetch(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND relkind IN ('r', 'v', 'S')")}
    finally:
        await connection.close()
    stale = (set(roles.TABLES) | set(roles.SEQUENCES)) - names
    assert not stale, f"db/roles.py declares relations no migration creates: {sorted(stale)}"


async def test_an_undeclared_table_stops_the_grants(pg_db: str):
    await migrate(pg_db)
    connection = await asyncpg.connect(pg_db)
    try:
        await connection.execute("CREATE TABLE brand_new (x int); CREATE SEQUENCE brand_new_seq")
    finally:
        await connection.close()
    with pytest.raises(PgError, match="no rights declared for brand_new, brand_new_seq: .*inboxlens/db/roles.py"):
        await roles.apply_grants(pg_db, {"web": "t-web-role", "harvest": "t-harvest-role"})


def test_the_declared_lists_are_grant_syntax():
    for access in [*roles.TABLES.values(), *roles.SEQUENCES.values()]:
        for role in roles.ROLES:
            roles.privileges(access.of(role))
    assert roles.privileges("SELECT, UPDATE (a, b)") == {"SELECT": ("*",), "UPDATE": ("a", "b")}
    for bad in ("SELECT; DROP TABLE users", "ALL", "SELECT, SELECT", "UPDATE (a b)"):
        with pytest.raises(PgError):
            roles.privileges(bad)
