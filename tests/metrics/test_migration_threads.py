"""Migration 012 on a database folded before it: what it backfills, and what stays unknown."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg

from inboxlens.db.migrate import MIGRATIONS_DIR, migrate
from inboxlens.metrics.keys import gm_thread_key, message_id_key
from inboxlens.metrics.postgres.store import PgMetricsStore

NOW = datetime(2024, 6, 20, 12, tzinfo=timezone.utc)


async def test_thread_keys_are_backfilled_up_indexed_parents(pg_db: str, tmp_path: Path) -> None:
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:3]) < 12:
            shutil.copy(path, tmp_path / path.name)
    await migrate(pg_db, tmp_path)
    root, reply, deeper, orphan, gmail, loop_a, loop_b = (message_id_key(f"{n}@x.test") for n in
                                                           ("root", "reply", "deeper", "orphan", "gm", "la", "lb"))
    unseen = message_id_key("never-indexed@x.test")
    rows = [(root, "received", [], None), (reply, "sent", [root], None), (deeper, "received", [reply], None),
            (orphan, "received", [unseen], None), (gmail, "received", [root], 77),
            (loop_a, "received", [loop_b], None), (loop_b, "received", [loop_a], None)]
    async with asyncpg.create_pool(pg_db, min_size=1, max_size=2) as pool:
        user = await pool.fetchval("INSERT INTO users (email) VALUES ('me@home.test') RETURNING id")
        account = await pool.fetchval("INSERT INTO mail_accounts (user_id, address, provider, time_zone) "
                                      "VALUES ($1, 'me@home.test', 'test', 'UTC') RETURNING id", user)
        for i, (key, direction, parents, thread) in enumerate(rows):
            await pool.execute("INSERT INTO message_index (account_id, msg_key, sent_at, direction, automated, "
                               "correspondents, parent_keys, gm_thread_id) VALUES ($1, $2, $3, $4, false, $5, $6, $7)",
                               account, key, NOW - timedelta(days=9 - i), direction, ["ann@x.test"], parents, thread)
        assert "012_threads" in await migrate(pg_db)
        found = {r["msg_key"]: r for r in await pool.fetch("SELECT * FROM message_index")}
        assert [found[k]["thread_key"] for k in (root, reply, deeper)] == [root] * 3
        assert found[orphan]["thread_key"] == unseen  # its parent never indexed: the thread starts there
        assert found[gmail]["thread_key"] == gm_thread_key(77)
        assert {found[loop_a]["thread_key"], found[loop_b]["thread_key"]} <= {loop_a, loop_b}  # it stopped
        assert {(r["message_id"], r["to_me"]) for r in found.values()} == {(None, None)}
        # Unknown To/Cc counts as to you; the reply in root's thread answered root and deeper's
        # wait is the thread's (you wrote before it): deeper, orphan, gmail and the loop are owed.
        owed = await PgMetricsStore(pool).owed(account, now=NOW)
        assert [bytes.fromhex(p.msg_key) for p in owed] == [deeper, orphan, gmail, loop_a, loop_b]
        assert {p.message_id for p in owed} == {None}
