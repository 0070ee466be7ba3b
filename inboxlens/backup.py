"""``inboxlens backup DIR`` and ``inboxlens restore DIR``: the service's state, consistently.

Privilege: root or ``vault.admin_uid`` (or, in development mode, the user whose state it is).
A backup directory (0700) holds::

    manifest.json      format, InboxLens version, schema level, time, contents, SHA-256 of each file
    database.pgdump    pg_dump -Fc of the accounts' database (embedded or configured), without the
                       vault's schema: users, accounts, sessions and API tokens (hashed), rollups, insights
    tokens.sqlite3     the vault's SQLite token store (sealed refresh tokens), copied with SQLite's online
      or tokens.pgdump backup API; or the ``inboxlens_vault`` schema of ``vault.token_store_dsn``
    keyset.json        the keyset's ids, states and public keys (no secret)
    private/           only with --include-private-keys (0700, files 0400): the vault's private keys and
                       web's cookie-signing key. Without it the keys stay where they are, to be copied
                       apart from the backup: a backup with them opens every stored refresh token.

A backup is written beside DIR and renamed into place once complete, the manifest last; one
taken while the service runs is consistent: pg_dump reads one snapshot, the token store is
copied in one read transaction, and the keyset is read before and after it until both agree.

A restore checks everything first (manifest, checksums, dumps readable, the schema no newer
than this code's migrations, a private key for every key the tokens need, the service
stopped, the target empty unless --force), then loads the database in one transaction and
moves a fully prepared vault directory into place with one rename. ``serve`` applies newer
migrations at its next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from inboxlens import paths
from inboxlens.config.schema import Config
from inboxlens.db.embedded import EmbeddedPostgres, PostgresBinariesMissing, postgres_bin
from inboxlens.service_errors import BackupError
from inboxlens.supervisor.plan import USERS, Plan, make_plan, prepare_directories
from inboxlens.vault.keyset import KEYSET_FILE, LOCK_FILE, REVOKED, KeysetLock, fsync_dir
from inboxlens.vault.store.postgres import SCHEMA as VAULT_SCHEMA

FORMAT = 1
MANIFEST = "manifest.json"
DB_DUMP = "database.pgdump"
SQLITE_TOKENS = "tokens.sqlite3"
PG_TOKENS = "tokens.pgdump"
PRIVATE = "private"
SESSION_KEY = "session.key"
EX_NOPERM = 77
TOOL_TIMEOUT = 3600.0  # seconds for one pg_dump/pg_restore/psql run: large databases take a while


# -- who may ----------------------------------------------------------------------------------

def permitted(config: Config) -> bool:
    """Root, ``vault.admin_uid``, or in development mode the owner of the state directory."""
    uid = os.geteuid()
    if uid == 0 or uid == config.vault.admin_uid:
        return True
    existing = next(p for p in (config.state_dir, *config.state_dir.parents) if p.exists())
    return existing.stat().st_uid == uid and existing != Path("/")


def refuse(verb: str) -> int:
    print(f"inboxlens {verb}: not permitted for uid {os.geteuid()}: run it as root, or as vault.admin_uid",
          file=sys.stderr)
    return EX_NOPERM


# -- the database and the PostgreSQL tools ----------------------------------------------------

@dataclass
class Database:
    dsn: str
    server: EmbeddedPostgres | None
    plan: Plan

    def release(self) -> None:
        if self.server is not None:
            self.server.release()  # stops it only if we started it: a running service's stays up


def open_database(config: Config, *, create: bool) -> Database:
    """The configured database, or the embedded server (started here unless it runs already)."""
    plan = make_plan()
    data = paths.pg_data_dir(config.state_dir)
    if not config.database.dsn and not create and not (data / "PG_VERSION").exists():
        raise BackupError(f"no database in {data}: nothing to back up (is the state directory right?)")
    if create or not config.database.dsn:
        prepare_directories(config, plan)  # as serve would: the restore writes into them
    if config.database.dsn:
        return Database(config.database.dsn, None, plan)
    server = EmbeddedPostgres(data, paths.pg_socket_dir(config.runtime_dir), run_as=None if plan.dev else USERS["db"],
                              superuser_map=() if plan.dev else ("root",))
    return Database(server.start(), server, plan)


@functools.cache
def tool(name: str) -> str:
    """pg_dump, pg_restore or psql: the newest of the embedded server's and the system's (a newer
    pg_dump reads older servers, a newer pg_restore older dumps; never the other way round)."""
    found = [shutil.which(name)]
    with contextlib.suppress(PostgresBinariesMissing):
        found.append(str(postgres_bin() / name))
    versions = {path: _major(path) for path in found if path and os.access(path, os.X_OK)}
    if not versions:
        raise BackupError(f"no {name}: install the pgserver wheel or PostgreSQL's client tools")
    return max(versions, key=lambda path: versions[path])


def _major(path: str) -> int:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return -1
    match = re.search(r"\) (\d+)", out)  # "pg_dump (PostgreSQL) 16.2"
    return int(match[1]) if match else -1


def split_password(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN without its password, and an environment carrying it: argv is readable by anyone."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query)
    password = parts.password or next((v for k, v in query if k == "password"), None)
    netloc = parts.netloc.rpartition("@")
    userinfo = netloc[0].split(":", 1)[0]
    clean = urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[2]}" if netloc[1] else netloc[2],
                                      query=urlencode([(k, v) for k, v in query if k != "password"])))
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "PGCONNECT_TIMEOUT": "15"}
    if password:
        env["PGPASSWORD"] = unquote(password) if parts.password else password
    return clean, env


def run_tool(command: list[str], env: dict[str, str], what: str) -> None:
    try:
        result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=TOOL_TIMEOUT, umask=0o077)  # dumps and scripts hold users' data: 0600
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BackupError(f"{what}: cannot run {Path(command[0]).name} ({type(e).__name__})") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        detail = "; ".join(lines[-3:]).replace(env.get("PGPASSWORD") or "\0", "<hidden>")
        raise BackupError(f"{what}: {Path(command[0]).name} exited {result.returncode}: {detail[-600:]}")


def pg_dump(dsn: str, out: Path, schema_option: str, what: str) -> None:
    conninfo, env = split_password(dsn)
    run_tool([tool("pg_dump"), "--format=custom", "--no-password", schema_option, f"--file={out}",
              f"--dbname={conninfo}"], env, what)


async def fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn, timeout=15)
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()


async def migrations_applied(dsn: str) -> list[str]:
    try:
        return [r["name"] for r in await fetch(dsn, "SELECT name FROM schema_migrations ORDER BY version")]
    except asyncpg.UndefinedTableError:
        return []


# -- files ------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_file(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    """A new file with mode (and owner), synced; refuses to follow or replace anything."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_sqlite(source: Path, destination: Path) -> None:
    """A consistent copy while the vault writes (SQLite's online backup), 0600."""
    write_file(destination, b"", 0o600)
    before = source.stat()
    sidecars = [source.with_name(source.name + s) for s in ("-wal", "-shm")]
    present = {p for p in sidecars if p.exists()}
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(destination)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    except sqlite3.Error as e:
        raise BackupError(f"cannot copy the token store {source}: {e}") from None
    finally:
        dst.close()
        src.close()
    for sidecar in sidecars:  # what we made appear beside the vault's file is the vault's, or gone
        if sidecar not in present and sidecar.exists():
            os.chown(sidecar, before.st_uid, before.st_gid)


@contextlib.contextmanager
def staging_dir(beside: Path, prefix: str) -> Iterator[Path]:
    """A 0700 directory next to ``beside`` (same file system, so it can be renamed in), removed on failure."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=beside.parent))
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def version() -> str:
    try:
        return importlib.metadata.version("inboxlens")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def service_running(config: Config) -> bool:
    """The vault answers on its socket, or holds its keyset's lock."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        with contextlib.suppress(OSError):
            s.connect(str(config.vault_socket))
            return True
    if not (config.vault_dir / LOCK_FILE).exists():  # never create it: as root it would lock the vault out
        return False
    lock = KeysetLock(config.vault_dir)
    if lock.acquire():
        lock.release()
        return False
    return True


def keyset_ids(data: bytes) -> dict[int, str]:
    """From keyset.json: id -> public key (hex) of every key not revoked."""
    try:
        return {int(k["id"]): str(k["public_key"]) for k in json.loads(data)["keys"] if k["state"] != REVOKED}
    except (ValueError, KeyError, TypeError) as e:
        raise BackupError(f"the keyset is damaged ({type(e).__name__})") from None


# -- backup -----------------------------------------------------------------------------------

def backup(config: Config, target: Path, include_private: bool) -> int:
    if not permitted(config):
        return refuse("backup")
    target = target.absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} exists and is not an empty directory; name a new one")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} does not exist")
    with staging_dir(target, f".{target.name}.partial-") as staged:
        manifest = asyncio.run(collect(config, staged, include_private))
        write_file(staged / MANIFEST, json.dumps(manifest, indent=2).encode(), 0o600)  # last: it marks completion
        fsync_dir(staged)
        if target.exists():
            target.rmdir()
        os.rename(staged, target)
        fsync_dir(target.parent)
    report_backup(config, target, manifest)
    return 0


async def collect(config: Config, out: Path, include_private: bool) -> dict[str, Any]:
    database = await asyncio.to_thread(open_database, config, create=False)
    try:
        keyset, in_use = await vault_copy(config, out)
        migrations = await migrations_applied(database.dsn)
        await asyncio.to_thread(pg_dump, database.dsn, out / DB_DUMP, f"--exclude-schema={VAULT_SCHEMA}",
                                "dumping the database")
    finally:
        await asyncio.to_thread(database.release)
    usable = keyset_ids(keyset)
    missing = sorted(set(in_use) - set(usable))
    if missing:  # cannot happen with a sound vault: say so rather than write a backup that cannot open
        raise BackupError(f"stored tokens need key(s) {missing}, which the keyset does not hold")
    write_file(out / KEYSET_FILE, keyset, 0o600)
    private = copy_private(config, out, sorted(usable)) if include_private else []
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {"format": FORMAT, "inboxlens": version(), "created": created, "schema": {"migrations": migrations},
            "database": "configured" if config.database.dsn else "embedded",
            "token_store": config.vault.token_store, "keys": sorted(usable), "private": private,
            "files": {name: {"sha256": sha256(out / name), "bytes": (out / name).stat().st_size} for name in files}}


async def vault_copy(config: Config, out: Path) -> tuple[bytes, list[int]]:
    """The token store and the keyset as of one moment: the keyset read before and after agrees."""
    path = config.vault_dir / KEYSET_FILE
    for _ in range(5):
        try:
            before = path.read_bytes()
        except FileNotFoundError:
            raise BackupError(f"no keyset in {config.vault_dir}: nothing to back up") from None
        in_use = await copy_tokens(config, out)
        if path.read_bytes() == before:
            return before, in_use
    raise BackupError("the keyset kept changing while the tokens were copied (keys rotating?); try again")


async def copy_tokens(config: Config, out: Path) -> list[int]:
    """The token store into ``out``; the key ids its tokens are sealed under."""
    if config.vault.token_store == "postgres":
        (out / PG_TOKENS).unlink(missing_ok=True)
        dsn = config.vault.token_store_dsn
        await asyncio.to_thread(pg_dump, dsn, out / PG_TOKENS, f"--schema={VAULT_SCHEMA}", "dumping the token store")
        rows = await fetch(dsn, f"SELECT DISTINCT key_id FROM {VAULT_SCHEMA}.tokens")
        return sorted(int(r["key_id"]) for r in rows)
    source = config.vault_dir / paths.TOKEN_DB
    if not source.exists():
        return []  # no token stored yet
    (out / SQLITE_TOKENS).unlink(missing_ok=True)
    await asyncio.to_thread(copy_sqlite, source, out / SQLITE_TOKENS)
    with contextlib.closing(sqlite3.connect(f"file:{out / SQLITE_TOKENS}?mode=ro", uri=True)) as db:
        return sorted(int(k) for (k,) in db.execute("SELECT DISTINCT key_id FROM tokens"))


def copy_private(config: Config, out: Path, key_ids: list[int]) -> list[str]:
    """The private keys and web's cookie-signing key, in a 0700 directory, each file 0400."""
    directory = out / PRIVATE
    directory.mkdir(mode=0o700)
    sources = {f"key-{i}.secret": config.vault_dir / f"key-{i}.secret" for i in key_ids}
    sources[SESSION_KEY] = paths.web_dir(config.state_dir) / SESSION_KEY
    copied = []
    for name, source in sources.items():
        try:
            write_file(directory / name, source.read_bytes(), 0o400)
            copied.append(name)
        except FileNotFoundError:
            if name != SESSION_KEY:
                raise BackupError(f"private key file {source} is missing (a key given as a systemd credential? "
                                  "copy it yourself, and back up without --include-private-keys)") from None
    return copied


def report_backup(config: Config, target: Path, manifest: dict[str, Any]) -> None:
    migrations = manifest["schema"]["migrations"]
    size = sum(f["bytes"] for f in manifest["files"].values())
    tokens = f"the {manifest['token_store']} token store" if {SQLITE_TOKENS, PG_TOKENS} & set(manifest["files"]) \
        else "no token store (no token stored yet)"
    print(f"backup written to {target} ({size:,} bytes): the database (schema at "
          f"{migrations[-1] if migrations else 'no migration'}), {tokens}, "
          f"the keyset's public part (key(s) {', '.join(map(str, manifest['keys'])) or 'none'})")
    keys = ", ".join(f"key-{i}.secret" for i in manifest["keys"])
    if manifest["private"]:
        print(f"*** {target}/{PRIVATE} HOLDS THE VAULT'S PRIVATE KEYS ({keys}) and web's cookie-signing key: "
              "with them this backup opens every stored refresh token. Keep it as safe as the mailboxes, "
              "or move that directory apart from the rest. ***", file=sys.stderr)
    else:
        print(f"the vault's private keys are NOT in this backup: copy {keys or 'the key files'} from "
              f"{config.vault_dir} (or the systemd credentials inboxlens-key-<id>) and keep them apart from it; "
              "restore needs them (--keys DIR)", file=sys.stderr)
