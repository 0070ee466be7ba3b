"""``inboxlens restore DIR``: a backup made by ``inboxlens backup`` back into place.

Privilege: root or ``vault.admin_uid`` (development mode: the state's owner). Reads the
backup directory (trusted as far as its checksums go: the manifest names what it holds and
the SHA-256 of each file) and, for the private keys, the backup's ``private/``, ``--keys DIR``
or the key files already in the vault's directory. Writes the database (one transaction),
the vault's directory (prepared beside it, owned by the vault's uid, then renamed into place)
and web's cookie-signing key when the backup has it. Nothing is touched before every check
has passed; the service must be stopped. See ``inboxlens.backup`` for the layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey

from inboxlens import paths
from inboxlens.backup import (DB_DUMP, FORMAT, MANIFEST, PG_TOKENS, PRIVATE, SESSION_KEY, SQLITE_TOKENS,
                              Database, fetch, keyset_ids,
                              open_database, permitted, refuse, run_tool, service_running, sha256, split_password,
                              tool, write_file)
from inboxlens.config.schema import Config
from inboxlens.db.migrate import MIGRATIONS_DIR
from inboxlens.service_errors import BackupError
from inboxlens.vault.keyset import KEYSET_FILE, fsync_dir
from inboxlens.vault.store.postgres import SCHEMA as VAULT_SCHEMA


def restore(config: Config, source: Path, force: bool, keys_dir: Path | None) -> int:
    if not permitted(config):
        return refuse("restore")
    source = source.absolute()
    manifest = verify(config, source)
    private = private_keys(config, source, keys_dir)
    for dump in (DB_DUMP, PG_TOKENS):
        if dump in manifest["files"]:
            run_tool([tool("pg_restore"), "--list", str(source / dump)], {"PATH": "/usr/bin:/bin"},
                     f"{source / dump} cannot be read")
    if service_running(config):
        raise BackupError("the service is running (its vault answers or holds the keyset): stop it first")
    database = open_database(config, create=True)
    try:
        asyncio.run(put_back(config, database, source, manifest, private, force))
    finally:
        database.release()
    report_restore(config, manifest)
    return 0


# -- checks, before anything is touched ---------------------------------------------------------

def verify(config: Config, source: Path) -> dict[str, Any]:
    manifest = load_manifest(source)
    try:
        files: dict[str, Any] = manifest["files"]
        migrations: list[str] = manifest["schema"]["migrations"]
        kind, in_use = manifest["token_store"], manifest["keys"]
        shaped = all(isinstance(f, dict) and {"bytes", "sha256"} <= set(f) for f in files.values()) and \
            all(isinstance(m, str) for m in migrations) and all(isinstance(k, int) for k in in_use) and \
            all(isinstance(p, str) for p in manifest["private"])
    except (KeyError, TypeError, AttributeError):
        shaped = False
    if not shaped:
        raise BackupError(f"{source / MANIFEST} is damaged (a field is missing or of the wrong kind)")
    for name in (DB_DUMP, KEYSET_FILE):
        if name not in files:
            raise BackupError(f"{source} is a partial backup: it has no {name}")
    for name, facts in sorted(files.items()):
        check_file(source, name, facts)
    known = known_migrations()
    if migrations != known[:len(migrations)]:
        newest = migrations[-1] if migrations else "?"
        raise BackupError(f"the backup's database schema ({newest}) is newer than this InboxLens knows "
                          f"({known[-1]}): restore it with InboxLens {manifest.get('inboxlens', '?')} or later")
    if kind != config.vault.token_store:
        raise BackupError(f"the backup holds a {kind} token store but vault.token_store is "
                          f"{config.vault.token_store!r}; set it to {kind!r} to restore this backup")
    usable = keyset_ids((source / KEYSET_FILE).read_bytes())
    if not set(in_use) <= set(usable):
        raise BackupError(f"{source / KEYSET_FILE} lacks key(s) the backup's tokens need")
    if SQLITE_TOKENS in files:
        check_sqlite(source / SQLITE_TOKENS)
    return manifest


def check_file(source: Path, name: str, facts: dict[str, Any]) -> None:
    path = source / name
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise BackupError(f"{source / MANIFEST} names {name!r}, outside the backup")
    try:
        if path.stat().st_size != facts["bytes"] or sha256(path) != facts["sha256"]:
            raise BackupError(f"{path} is damaged: its size or SHA-256 differs from the manifest's")
    except FileNotFoundError:
        raise BackupError(f"{source} is a partial backup: {name} is missing") from None


def check_sqlite(path: Path) -> None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            if db.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                raise BackupError(f"{path} fails SQLite's integrity check")
            db.execute("SELECT count(*) FROM tokens").fetchone()
    except sqlite3.Error as e:
        raise BackupError(f"{path} is not a usable token store ({e})") from None


def private_keys(config: Config, source: Path, keys_dir: Path | None) -> dict[int, bytes]:
    """A verified private key for every key not revoked: from the backup, --keys DIR, or the vault's directory."""
    usable = keyset_ids((source / KEYSET_FILE).read_bytes())
    places = [source / PRIVATE, *([keys_dir] if keys_dir else []), config.vault_dir]
    found: dict[int, bytes] = {}
    for key_id, public in sorted(usable.items()):
        for place in places:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                raw = (place / f"key-{key_id}.secret").read_bytes()
                if len(raw) != 32 or PrivateKey(raw).public_key.encode().hex() != public:
                    raise BackupError(f"{place / f'key-{key_id}.secret'} is not the private key of key {key_id}")
                found[key_id] = raw
                break
        else:
            raise BackupError(f"the private key of key {key_id} is in neither the backup nor {config.vault_dir}: "
                              f"pass --keys DIR, the directory holding the key-{key_id}.secret you kept apart")
    return found


async def empty_or_forced(config: Config, dsn: str, force: bool) -> bool:
    """Whether the target's database has tables; refuses any non-empty target without --force."""
    found = []
    tables = await fetch(dsn, "SELECT 1 FROM pg_tables WHERE schemaname = 'public' LIMIT 1")
    if tables:
        found.append("the database has tables")
    if any((config.vault_dir / name).exists() for name in (KEYSET_FILE, paths.TOKEN_DB)):
        found.append(f"{config.vault_dir} holds a keyset or tokens")
    if config.vault.token_store == "postgres" and await fetch(
            config.vault.token_store_dsn, f"SELECT 1 FROM pg_tables WHERE schemaname = '{VAULT_SCHEMA}' LIMIT 1"):
        found.append("the token store's schema exists")
    if found and not force:
        raise BackupError(f"the target is not empty ({'; '.join(found)}): restore replaces all of it; "
                          "pass --force to do so")
    return bool(tables)


def load_manifest(source: Path) -> dict[str, Any]:
    path = source / MANIFEST
    if not source.is_dir():
        raise BackupError(f"{source} is not a directory")
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BackupError(f"{source} is not a complete InboxLens backup: it has no {MANIFEST} (a backup "
                          "that did not finish has none)") from None
    except ValueError:
        raise BackupError(f"{path} is damaged (not JSON)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not a backup this InboxLens reads (format {FORMAT})")
    return manifest


def known_migrations() -> list[str]:
    return sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql"))


# -- putting back -----------------------------------------------------------------------------

async def put_back(config: Config, database: Database, source: Path, manifest: dict[str, Any],
                   private: dict[int, bytes], force: bool) -> None:
    clear = await empty_or_forced(config, database.dsn, force)
    owner = None if database.plan.dev else database.plan.identities["vault"]
    vault_owner = (owner.uid, owner.gid) if owner else None
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=config.state_dir) as work:
        staged = stage_vault(config, source, Path(work), private, vault_owner)
        await asyncio.to_thread(load_database, config, database.dsn, source, Path(work), manifest, clear)
        swap_in(staged, config.vault_dir)
    if SESSION_KEY in manifest["private"]:
        web = None if database.plan.dev else database.plan.identities["web"]
        replace_file(paths.web_dir(config.state_dir) / SESSION_KEY, (source / PRIVATE / SESSION_KEY).read_bytes(),
                     (web.uid, web.gid) if web else None)


def stage_vault(config: Config, source: Path, work: Path, private: dict[int, bytes],
                owner: tuple[int, int] | None) -> Path:
    """The whole vault directory, ready to be renamed into place: 0700, files 0600/0400, the vault's uid."""
    staged = work / "vault"
    staged.mkdir(mode=0o700)
    write_file(staged / KEYSET_FILE, (source / KEYSET_FILE).read_bytes(), 0o600, owner)
    for key_id, raw in private.items():
        write_file(staged / f"key-{key_id}.secret", raw, 0o400, owner)
    if (source / SQLITE_TOKENS).exists():
        write_file(staged / paths.TOKEN_DB, (source / SQLITE_TOKENS).read_bytes(), 0o600, owner)
    if owner is not None:
        os.chown(staged, *owner)
    os.chmod(staged, 0o700)
    fsync_dir(staged)
    return staged


RESET = ["DROP SCHEMA public CASCADE", "CREATE SCHEMA public", "GRANT USAGE ON SCHEMA public TO PUBLIC"]
DROP_VAULT = [f"DROP SCHEMA IF EXISTS {VAULT_SCHEMA} CASCADE"]


def load_database(config: Config, dsn: str, source: Path, work: Path, manifest: dict[str, Any],
                  clear: bool) -> None:
    """The accounts' database (and a PostgreSQL token store on the same DSN) in one transaction."""
    parts = [(RESET if clear else [], sql_script(source / DB_DUMP, work / "database.sql"))]
    if PG_TOKENS in manifest["files"]:
        tokens = (DROP_VAULT, sql_script(source / PG_TOKENS, work / "tokens.sql"))
        if config.vault.token_store_dsn == dsn:
            parts.append(tokens)
        else:  # two servers cannot share a transaction: the token store first, the larger part second
            run_psql(config.vault.token_store_dsn, [tokens], "restoring the token store")
    run_psql(dsn, parts, "restoring the database")


def sql_script(dump: Path, out: Path) -> Path:
    """The dump as SQL, owned by whoever restores it (``serve`` grants the children's roles at start)."""
    run_tool([tool("pg_restore"), "--no-owner", "--no-acl", "--no-comments", f"--file={out}", str(dump)],
             {"PATH": "/usr/bin:/bin"}, f"{dump} cannot be read")
    return out


def run_psql(dsn: str, parts: list[tuple[list[str], Path]], what: str) -> None:
    """Every statement and file in one transaction: all of it is restored, or none."""
    conninfo, env = split_password(dsn)
    command = [tool("psql"), "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1",
               "--no-password", f"--dbname={conninfo}"]
    for statements, path in parts:
        command += [f"--command={s}" for s in statements] + [f"--file={path}"]
    run_tool(command, env, what)


def swap_in(staged: Path, vault_dir: Path) -> None:
    """The prepared vault directory replaces the old one with one rename; the old one is removed after."""
    old = None
    if vault_dir.exists():
        old = vault_dir.with_name(f".vault.replaced-{os.getpid()}")
        os.rename(vault_dir, old)
    os.rename(staged, vault_dir)
    fsync_dir(vault_dir.parent)
    if old is not None:
        shutil.rmtree(old)


def replace_file(path: Path, data: bytes, owner: tuple[int, int] | None) -> None:
    temporary = path.with_name(f".{path.name}.restore")
    temporary.unlink(missing_ok=True)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file(temporary, data, 0o600, owner)
    os.replace(temporary, path)


def report_restore(config: Config, manifest: dict[str, Any]) -> None:
    migrations = manifest["schema"]["migrations"]
    print(f"restored the backup of {manifest.get('created', '?')} (InboxLens {manifest.get('inboxlens', '?')}, "
          f"schema at {migrations[-1] if migrations else 'no migration'}) into {config.state_dir}")
    if SESSION_KEY not in manifest["private"]:
        print("web's cookie-signing key was not in the backup: users sign in again", file=sys.stderr)
    if config.database.dsn:
        print("a configured database: grant the children's roles their rights again "
              "(docs/operations.md, 'Restore')", file=sys.stderr)
    print("start the service with 'inboxlens serve': it applies any newer migrations first")
