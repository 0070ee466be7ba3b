"""Web's pool skips asyncpg's RESET round trip (``keep_session``): nothing web runs may leave
session state on a connection for the next request to find."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

# SQL that outlives its statement or transaction on a pooled connection.
SESSION_STATE = {
    "a session setting": re.compile(r"""(^|["';(]\s*)SET\s+(?!LOCAL\b)(SESSION\s+)?"""
                                    r"""(\w+\s*(=|TO\b)|ROLE\b|TIME\s+ZONE\b|AUTHORIZATION\b)""", re.I | re.M),
    "set_config outside a transaction": re.compile(r"set_config\s*\([^)]*,\s*(false|\$\d+)\s*\)", re.I),
    "LISTEN": re.compile(r"\bLISTEN\s+[a-z_]\w*"),  # our SQL keywords are upper case
    "a session advisory lock": re.compile(r"pg_(try_)?advisory_lock(_shared)?\s*\(", re.I),
    "a cursor held over commit": re.compile(r"WITH\s+HOLD", re.I),
    # A temp table emptied at commit (harvest's raw_batch) may stay: the next user finds it empty.
    "a prepared transaction or temp table": re.compile(
        r"PREPARE\s+TRANSACTION|CREATE\s+TEMP(ORARY)?\s+TABLE(?![\s\S]{0,120}ON COMMIT (DELETE|DROP))", re.I),
}


def web_modules() -> dict[str, Path]:
    """Every inboxlens module the web process loads (asked of a fresh interpreter: this one
    has imported whatever the tests before imported)."""
    out = subprocess.run([sys.executable, "-c", "import json, sys, inboxlens.web.__main__; print(json.dumps("
                          "{n: m.__file__ for n, m in sys.modules.items() if n.startswith('inboxlens') and "
                          "getattr(m, '__file__', None)}))"], capture_output=True, text=True, check=True, timeout=60)
    return {name: Path(path) for name, path in sorted(json.loads(out.stdout).items())}


def hits(pattern: re.Pattern[str], text: str) -> list[str]:
    """Where the pattern matches; a SET that continues an UPDATE (``... DO UPDATE " "SET x =``) is no setting."""
    return [m.group(0) for m in pattern.finditer(text)
            if not (m.group(0).lstrip("\"';( ").upper().startswith("SET") and "UPDATE" in text[max(0, m.start() - 200):m.start()])]


def test_the_web_pool_returns_connections_without_a_reset_query() -> None:
    main = importlib.import_module("inboxlens.web.__main__")
    assert re.search(r"asyncpg\.create_pool\([^()]*(\([^()]*\)[^()]*)*reset=keep_session", Path(main.__file__).read_text())


@pytest.mark.parametrize("name, pattern", SESSION_STATE.items())
def test_no_module_web_loads_leaves_session_state(name: str, pattern: re.Pattern[str]) -> None:
    modules = web_modules()
    assert "inboxlens.metrics.postgres.insights" in modules and "inboxlens.web.api.views" in modules
    found = [f"{module}: {m!r}" for module, path in modules.items()
             for m in hits(pattern, path.read_text())]
    assert not found, f"{name} in code the web process runs (its pool does not reset connections): {found}"


@pytest.mark.parametrize("sql, name", [("SET search_path = x", "a session setting"),
                                        ('"SET statement_timeout TO 5"', "a session setting"),
                                        ('"SET ROLE web"', "a session setting"),
                                        ("SET TIME ZONE 'UTC'", "a session setting"),
                                        ("SET SESSION AUTHORIZATION web", "a session setting"),
                                        ("SELECT set_config('x.y', $1, $2)", "set_config outside a transaction"),
                                        ("SELECT pg_try_advisory_lock(7)", "a session advisory lock"),
                                        ("LISTEN accounts", "LISTEN"),
                                        ("SELECT pg_advisory_lock($1)", "a session advisory lock"),
                                        ("CREATE TEMP TABLE t (x int)", "a prepared transaction or temp table")])
def test_the_patterns_catch_what_they_are_for(sql: str, name: str) -> None:
    assert hits(SESSION_STATE[name], sql)
    assert not any(hits(p, s) for p in SESSION_STATE.values()
                   for s in ("UPDATE t SET x = 1", "SET LOCAL lock_timeout = '1s'", "SELECT pg_advisory_xact_lock(1)",
                             "CREATE TEMP TABLE IF NOT EXISTS b (LIKE r) ON COMMIT DELETE ROWS",
                             '"INSERT INTO t VALUES (1) ON CONFLICT (k) DO UPDATE "\n    "SET x = excluded.x"'))


async def test_keep_session_sends_nothing(pg_dsn: str) -> None:
    from inboxlens.web.__main__ import keep_session

    async with asyncpg.create_pool(pg_dsn, min_size=1, max_size=1, reset=keep_session) as pool:
        async with pool.acquire() as conn:
            before = conn._protocol.queries_count  # asyncpg counts every query it sends
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same connection, back
            assert conn._protocol.queries_count == before + 2  # the two SELECTs, no RESET between
