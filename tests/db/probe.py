"""Run as a child's OS user: log in as its role (peer authentication) and try every operation.

``python -m tests.db.probe DSN`` prints one JSON object: for each table and view of schema
public, which columns SELECT, INSERT and UPDATE were allowed on, and whether DELETE was;
for each sequence, whether nextval (USAGE) and SELECT were. Each try runs in a
transaction that is rolled back, on no rows (``WHERE false``): permission is checked
before the executor looks at a row, so nothing is written.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import asyncpg


async def allowed(connection: asyncpg.Connection, statement: str) -> bool:
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(statement)
        return True
    except asyncpg.InsufficientPrivilegeError:
        return False
    finally:
        await transaction.rollback()


async def table(connection: asyncpg.Connection, name: str, columns: list[str], view: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"SELECT": [], "INSERT": [], "UPDATE": []}
    for column in columns:
        if await allowed(connection, f'SELECT "{column}" FROM "{name}" WHERE false'):
            result["SELECT"].append(column)
        if view:
            continue
        if await allowed(connection, f'INSERT INTO "{name}" ("{column}") OVERRIDING SYSTEM VALUE '
                                     f'SELECT NULL WHERE false'):
            result["INSERT"].append(column)
        if await allowed(connection, f'UPDATE "{name}" SET "{column}" = DEFAULT WHERE false'):
            result["UPDATE"].append(column)
    if view:  # not automatically updatable, so no statement can try: ask the catalog
        granted = {p: bool(await connection.fetchval("SELECT has_table_privilege($1, $2)", f'"{name}"', p))
                   for p in ("INSERT", "UPDATE", "DELETE")}
        result.update(INSERT=columns if granted["INSERT"] else [], UPDATE=columns if granted["UPDATE"] else [],
                      DELETE=granted["DELETE"])
    else:
        result["DELETE"] = await allowed(connection, f'DELETE FROM "{name}" WHERE false')
    return result


async def probe(dsn: str) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        relations = await connection.fetch(
            "SELECT c.relname, c.relkind::text AS relkind, array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum > 0) "
            "AS columns FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') GROUP BY 1, 2")
        found: dict[str, Any] = {"whoami": await connection.fetchval("SELECT current_user"), "tables": {},
                                 "sequences": {},
                                 "create": await allowed(connection, "CREATE TABLE public.probe_made (x int)")}
        for r in relations:
            if r["relkind"] == "S":
                found["sequences"][r["relname"]] = {
                    "USAGE": await allowed(connection, f"SELECT nextval('\"{r['relname']}\"')"),
                    "SELECT": await allowed(connection, f'SELECT last_value FROM "{r["relname"]}"')}
            else:
                found["tables"][r["relname"]] = await table(connection, r["relname"], list(r["columns"]),
                                                            r["relkind"] == "v")
        return found
    finally:
        await connection.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(probe(sys.argv[1]))))
