"""Backup and restore with a configured database and the PostgreSQL token store: both dumps, the vault's
schema kept apart from the accounts' dump, restored into another, empty database where the tokens still open."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import asyncpg
import pytest

from inboxlens.backup import tool
from inboxlens.vault import sealed
from inboxlens.vault.keyset import Keyset
from inboxlens.vault.store.postgres import PgTokenStore
from tests.conftest import _admin, _run_coroutine, dsn_with_database

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="restore hands the vault's files to its system user")]
TOKEN = "pg-store-refresh-token-0b"


@pytest.fixture
def other_db(pg_dsn: str) -> Iterator[str]:
    name = f"t_{secrets.token_hex(8)}"
    _run_coroutine(_admin(pg_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield dsn_with_database(pg_dsn, name)
    finally:
        _run_coroutine(_admin(pg_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def inboxlens(base: Path, state: str, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(base), "INBOXLENS_STATE_DIR": str(base / state),
           "INBOXLENS_RUNTIME_DIR": str(base / f"{state}-run"), "INBOXLENS_DATABASE__DSN": dsn,
           "INBOXLENS_VAULT__TOKEN_STORE": "postgres", "INBOXLENS_VAULT__TOKEN_STORE_DSN": dsn}
    return subprocess.run([sys.executable, "-m", "inboxlens", *args], env=env, capture_output=True, text=True,
                          timeout=120)


async def fill(dsn: str, vault_dir: Path) -> int:
    db = await asyncpg.connect(dsn)
    try:
        user = await db.fetchval("INSERT INTO users (email) VALUES ('fay@example.test') RETURNING id")
        account = int(await db.fetchval("INSERT INTO mail_accounts (user_id, address, provider) "
                                        "VALUES ($1, 'fay@example.test', 'test') RETURNING id", user))
    finally:
        await db.close()
    primary = Keyset.load(vault_dir).primary
    store = await PgTokenStore.open(dsn)
    try:
        await store.put(str(account), "test", primary.id,
                        sealed.seal(primary.public_key, primary.id, str(account), "test", TOKEN))
    finally:
        await store.close()
    return account


async def read_back(dsn: str, vault_dir: Path, account: int) -> tuple[Any, str]:
    db = await asyncpg.connect(dsn)
    try:
        users = await db.fetch("SELECT email FROM users")
    finally:
        await db.close()
    store = await PgTokenStore.open(dsn)
    try:
        record = await store.get(str(account))
    finally:
        await store.close()
    assert record is not None
    key = Keyset.load(vault_dir).private_key(record.key_id)
    assert key is not None
    return [u["email"] for u in users], sealed.open_sealed(key, record.sealed, str(account), "test")


def test_configured_database_and_postgres_token_store_round_trip(tmp_path: Path, pg_db: str, other_db: str):
    assert inboxlens(tmp_path, "a", pg_db, "keys", "init").returncode == 0
    assert inboxlens(tmp_path, "a", pg_db, "migrate").returncode == 0
    account = asyncio.run(fill(pg_db, tmp_path / "a" / "vault"))

    made = inboxlens(tmp_path, "a", pg_db, "backup", "--include-private-keys", str(tmp_path / "b"))
    assert made.returncode == 0, made.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["database"] == "configured" and manifest["token_store"] == "postgres"
    assert {"database.pgdump", "tokens.pgdump", "keyset.json", "private/key-1.secret"} <= set(manifest["files"])
    for dump, vault_schema in (("database.pgdump", False), ("tokens.pgdump", True)):
        listing = subprocess.run([tool("pg_restore"), "--list", str(tmp_path / "b" / dump)], capture_output=True,
                                 text=True, check=True)
        assert ("inboxlens_vault" in listing.stdout) == vault_schema, dump  # the vault's schema: its own dump

    restored = inboxlens(tmp_path, "c", other_db, "restore", str(tmp_path / "b"))
    assert restored.returncode == 0, restored.stderr
    assert "grant the children's roles their rights again" in restored.stderr
    emails, token = asyncio.run(read_back(other_db, tmp_path / "c" / "vault", account))
    assert emails == ["fay@example.test"] and token == TOKEN

    refused = inboxlens(tmp_path, "c", other_db, "restore", str(tmp_path / "b"))
    assert refused.returncode == 1 and "the database has tables" in refused.stderr
    assert "the token store's schema exists" in refused.stderr
    forced = inboxlens(tmp_path, "c", other_db, "restore", "--force", str(tmp_path / "b"))
    assert forced.returncode == 0, forced.stderr
    emails, token = asyncio.run(read_back(other_db, tmp_path / "c" / "vault", account))
    assert emails == ["fay@example.test"] and token == TOKEN  # replaced, not added to
    for done in (made, restored, refused, forced):
        assert TOKEN not in done.stdout + done.stderr
