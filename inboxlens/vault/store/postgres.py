"""The vault's token store in PostgreSQL, for deployments with several nodes.

The tables live in their own schema (``inboxlens_vault``); the DSN is the vault's
own (``vault.token_store_dsn``), for a role that is the only one granted that schema.
No group commit here: the server already flushes concurrent commits' WAL together.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, Sequence

import asyncpg

from inboxlens.vault.store import DDL, Statement, TokenStore

SCHEMA = "inboxlens_vault"


class PgTokenStore(TokenStore):
    tokens_table = f"{SCHEMA}.tokens"
    events_table = f"{SCHEMA}.events"

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn

    @classmethod
    async def open(cls, dsn: str) -> "PgTokenStore":
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, command_timeout=10)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7243001)")  # vaults starting together create it once
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA};\n"
                               f"REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC;\n"
                               + cls._sql(DDL, blob="bytea", real="double precision",
                                          key="bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"))
        return cls(pool, dsn)

    async def _rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return list(await self._pool.fetch(sql, *args))

    async def _write(self, *statements: Statement) -> list[int]:
        async with self._pool.acquire() as conn, conn.transaction():
            # A status such as "UPDATE 1" or "INSERT 0 1" ends with the number of rows.
            return [int(str(await conn.execute(sql, *args)).split()[-1]) for sql, args in statements]

    @contextlib.asynccontextmanager
    async def refresh_lock(self, account_id: str) -> AsyncIterator[None]:
        """An advisory lock per account across every vault on this database.

        On a connection of its own, not the pool's: held for a whole refresh, it must not
        starve the reads and writes the refresh makes. Ending the session releases it, so a
        vault that dies never leaves it held.
        """
        conn = await asyncpg.connect(self._dsn, command_timeout=120)
        try:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 7243002))", account_id)
            yield
        finally:
            await conn.close()

    async def close(self) -> None:
        await self._pool.close()
