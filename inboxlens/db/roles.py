"""Database roles for the children: what each may do, table by table."""

from __future__ import annotations

import asyncpg


async def grant_child_roles(dsn: str, roles: tuple[str, ...]) -> None:
    """Embedded, root mode: peer authentication lets each child log in only as its own OS user's role.

    They get data rights on the application's tables, never ownership or DDL.
    """
    connection = await asyncpg.connect(dsn)
    try:
        for role in (role for role in roles):
            quoted = '"' + role + '"'
            if not await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await connection.execute(f"CREATE ROLE {quoted} LOGIN")
            await connection.execute(f"GRANT USAGE ON SCHEMA public TO {quoted}")
            await connection.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}")
            await connection.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}")
    finally:
        await connection.close()
