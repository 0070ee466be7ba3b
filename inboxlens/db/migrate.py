"""The schema migrations: numbered SQL files in ``migrations/``, applied in order, forward only.

Each file is applied once, in its own transaction, and recorded with its checksum;
a file changed after it was applied, a gap in the numbers, or a migration the code
does not know (newer code ran) stops the start with a message saying so.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from inboxlens.service_errors import PgError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x696E626F786C656E  # b"inboxlen": one fixed advisory-lock key for migrate()
_MIGRATION_FILE = re.compile(r"(\d+)_(\w+)\.sql")


@dataclass(frozen=True)
class _Migration:
    version: int
    name: str  # the file name without .sql, e.g. "001_foundation"
    sql: str
    sha256: str


def _load_migrations(directory: Path) -> list[_Migration]:
    """Every NNN_name.sql in directory, in order; refuses gaps, duplicates and misnamed files."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.fullmatch(path.name)
        if match is None:
            raise PgError(f"{path} is not named NNN_name.sql")
        data = path.read_bytes()
        found.append(_Migration(int(match[1]), path.stem, data.decode("utf-8"), hashlib.sha256(data).hexdigest()))
    found.sort(key=lambda m: (m.version, m.name))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise PgError(f"migrations in {directory} must be numbered 1, 2, 3... with no gaps or duplicates; "
                      f"found {versions}")
    return found


def _check_applied(applied: dict[int, tuple[str, str]], migrations: list[_Migration]) -> None:
    known = {m.version: m for m in migrations}
    for version, (name, sha256) in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            raise PgError(f"the database has migration {name}, which this code does not have (newer code ran?)")
        if (migration.name, migration.sha256) != (name, sha256):
            raise PgError(f"migration {migration.name} was changed after it was applied as {name} "
                          f"(checksum {sha256[:12]}..., file {migration.sha256[:12]}...); add a new migration instead")


async def migrate(dsn: str, directory: Path | None = None) -> list[str]:
    """Apply the pending migrations in order, each in its own transaction; return their names.

    Concurrent callers (any process, any node) take turns on one advisory lock, so each file
    is applied once.
    """
    migrations = _load_migrations(directory or MIGRATIONS_DIR)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        await connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                                 "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), "
                                 "sha256 text NOT NULL)")
        rows = await connection.fetch("SELECT version, name, sha256 FROM schema_migrations")
        _check_applied({row["version"]: (row["name"], row["sha256"]) for row in rows}, migrations)
        pending = [m for m in migrations if m.version not in {row["version"] for row in rows}]
        for migration in pending:
            await _apply(connection, migration)
        return [m.name for m in pending]
    finally:
        await connection.close()  # ends the session, and with it the advisory lock


async def _apply(connection: asyncpg.Connection, migration: _Migration) -> None:
    try:
        async with connection.transaction():
            await connection.execute(migration.sql)
            await connection.execute("INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                                     migration.version, migration.name, migration.sha256)
    except asyncpg.PostgresError as e:
        raise PgError(f"migration {migration.name} failed: {type(e).__name__}: {e}") from e

