"""The fold's plans on a real PostgreSQL: the work of folding a few new rows grows with
those rows, not with the account's index, even when the planner knows nothing.

No timing: each statement runs under EXPLAIN ANALYZE (rolled back where it writes) and the
test counts the rows its plan nodes read from tables and threw away in joins. The tables
are left as a first harvest leaves them: message_index never analysed, and the raw queue
analysed while empty (autovacuum's last look at it), which made the planner run the batch's
DELETE as a nested loop over the batch (quadratic) and reply matching as a scan of the
account's whole index.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from inboxlens.db.migrate import migrate
from inboxlens.metrics.model import USUAL_MIN_CHECKED, USUAL_PASS_RATE
from inboxlens.metrics.postgres import replies, rollups
from tests.metrics.test_rollups import OWN, add_account, key_of

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
INDEXED = 3_000  # messages folded before
NEW = 60  # then folded under EXPLAIN
TABLES = ("raw_headers", "message_index", "reply_parents", "message_replies", "auth_flags")


@pytest.fixture
async def conn(pg_db: str) -> AsyncIterator[asyncpg.Connection]:
    await migrate(pg_db)
    connection = await asyncpg.connect(pg_db)
    try:
        for table in TABLES:  # statistics only where the test puts them
            await connection.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        yield connection
    finally:
        await connection.close()


def mail(first: int, count: int) -> Iterator[tuple[Any, ...]]:
    """Raw rows: a conversation with each of 50 people, every other message answering the
    one before it (so replies name parents folded earlier), a third in Gmail threads."""
    for n in range(first, first + count):
        person = f"p{n % 50}@example.test"
        received = n % 2 == 0
        message_id = f"m{n}@example.test"
        parent = [f"m{n - 25}@example.test"] if n >= 25 and n % 4 < 2 else []
        yield (key_of(message_id), message_id, parent, parent, person if received else OWN,
               [OWN] if received else [person], START + timedelta(minutes=n),
               "received" if received else "sent", n // 50 if n % 3 == 0 else None, "pass" if n % 13 else "fail")


async def store(conn: asyncpg.Connection, account: int, rows: Iterator[tuple[Any, ...]]) -> None:
    await conn.executemany(
        "INSERT INTO raw_headers (account_id, msg_key, mailbox, uid, message_id, in_reply_to, refs, from_address, "
        "to_addresses, sent_at, internal_date, date_reliable, direction, automated, gm_thread_id, dkim) "
        "VALUES ($1, $2, 'INBOX', 1, $3, $4, $5, $6, $7, $8, $8, true, $9, false, $10, $11)",
        [(account, *row) for row in rows])


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def work(plan: dict[str, Any]) -> tuple[int, int]:
    """Rows the plan's table scans returned or filtered out, and rows its joins compared
    and threw away (EXPLAIN prints both per loop)."""
    read = dropped = 0
    for node in nodes(plan):
        loops = node.get("Actual Loops", 0)
        if "Relation Name" in node and node["Node Type"].endswith("Scan"):
            read += round((node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
                           + node.get("Rows Removed by Index Recheck", 0)) * loops)
        dropped += round(node.get("Rows Removed by Join Filter", 0) * loops)
    return read, dropped


async def explain(conn: asyncpg.Connection, sql: str, *args: Any) -> tuple[int, int]:
    """work() of the statement, run under EXPLAIN ANALYZE in a savepoint: what it wrote is undone."""
    savepoint = conn.transaction()
    await savepoint.start()
    try:
        found = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
    finally:
        await savepoint.rollback()
    return work(json.loads(found)[0]["Plan"])


async def test_folding_a_few_rows_reads_as_much_whatever_the_size_of_the_index(conn: asyncpg.Connection) -> None:
    account = await add_account(conn)
    await store(conn, account, mail(0, INDEXED))
    async with conn.transaction():  # the first fold, in one batch, as a first harvest
        await rollups._fold_batch(conn, account, rollups.DEFAULT_BATCH, None)
    await conn.execute("ANALYZE raw_headers")  # empty now: the planner takes the queue for empty
    await store(conn, account, mail(INDEXED, NEW))
    assert await conn.fetchval("SELECT count(*) FROM pg_stats WHERE tablename = 'message_index'") == 0

    async with conn.transaction():
        await conn.execute(rollups._LOCK, account)
        args = (account, rollups.DEFAULT_BATCH, "UTC", OWN)
        fold = await explain(conn, rollups._FOLD, *args)
        new_keys = (await conn.fetchrow(rollups._FOLD, *args))["new_keys"]
        matching = await explain(conn, replies.MATCH, account, new_keys, USUAL_MIN_CHECKED, USUAL_PASS_RATE)
        await replies.fold(conn, account, new_keys, "UTC", None)
        flagged = await conn.fetchval("SELECT count(*) FROM auth_flags WHERE msg_key = ANY($1)", new_keys)
        matched = await conn.fetchval("SELECT count(*) FROM message_replies WHERE msg_key = ANY($1)", new_keys)
    assert len(new_keys) == NEW and matched > NEW // 4  # the new rows did answer messages folded before
    assert flagged > 0  # and some failed DKIM where their domain passes
    # Each new row costs a handful of index probes (its parents, its thread, its replies),
    # never a pass over the INDEXED messages or a comparison of every new row with every other.
    assert fold[0] <= 4 * NEW and fold[1] <= NEW, fold
    assert matching[0] <= 10 * NEW and matching[1] <= NEW, matching
