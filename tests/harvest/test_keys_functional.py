"""msg_key has one definition: PostgreSQL's fold computes exactly what Python does."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from inboxlens.harvest.headers.parse import parse_header_block
from inboxlens.harvest.store import msg_key
from inboxlens.metrics import keys
from inboxlens.metrics.cassandra import fold

# What PostgreSQL text can hold: any character but NUL and lone surrogates.
MESSAGE_IDS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=300)


@pytest.fixture
async def conn(pg_db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_db)
    yield connection
    await connection.close()


async def test_postgresql_and_python_agree_on_the_key_of_any_message_id(conn):
    query = f"SELECT array_agg({keys.message_id_key_sql('m')} ORDER BY n) FROM unnest($1::text[]) " \
            "WITH ORDINALITY AS u (m, n)"
    seen: list[str] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(MESSAGE_IDS, min_size=1, max_size=20))
    def collect(ids: list[str]) -> None:
        seen.extend(ids)
    collect()
    seen += ["a@b", "ünïcødé@ex.test", "\U0001f600@emoji", "", "x" * 998]
    assert await conn.fetchval(query, seen) == [keys.message_id_key(m) for m in seen]


def test_the_fold_sql_uses_the_one_definition():
    from inboxlens.metrics.postgres import rollups
    assert keys.message_id_key_sql("m") in rollups._FOLD


def test_harvest_and_cassandra_key_a_message_id_alike():
    record = parse_header_block(1, datetime(2024, 7, 17, tzinfo=timezone.utc),
                                b"Message-ID: <abc@example.test>\r\n\r\n", trusted_authserv_ids=frozenset())
    assert msg_key(record) == fold.message_key("abc@example.test") == keys.message_id_key("abc@example.test")
    assert len(msg_key(record)) == keys.KEY_BYTES


def test_without_a_message_id_the_headers_make_the_key():
    when = datetime(2024, 7, 17, tzinfo=timezone.utc)
    one = keys.msg_key(None, "a@x.test", when, "hi", ["b@x.test"])
    assert one == keys.msg_key("", "a@x.test", when, "hi", ["b@x.test"])
    assert one != keys.msg_key(None, "a@x.test", when, "hi!", ["b@x.test"])
    assert one != keys.message_id_key("")  # a header key never collides with an id key by construction


THREADS = st.tuples(st.binary(min_size=16, max_size=16), st.lists(MESSAGE_IDS, max_size=3),
                    st.lists(MESSAGE_IDS, max_size=3), st.none() | st.integers(-2**63, 2**63 - 1))


async def test_postgresql_and_python_agree_on_the_thread_key_of_any_headers(conn):
    """The fold's thread key (and migration 012's for a Gmail thread) is metrics.keys.thread_key."""
    seen: list[tuple[bytes, list[str], list[str], int | None]] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(THREADS, min_size=1, max_size=10))
    def collect(found: list[tuple[bytes, list[str], list[str], int | None]]) -> None:
        seen.extend(found)
    collect()
    seen += [(b"k" * 16, [], [], None), (b"k" * 16, ["p@x"], ["root@x", "p@x"], None), (b"k" * 16, ["p@x"], [], 7)]
    query = (f"SELECT {keys.thread_key_sql('$1::bytea', '($2::text[])', '($3::text[])', '$4::bigint')}")
    for key_, irt, refs, thread in seen:
        assert await conn.fetchval(query, key_, irt, refs, thread) == keys.thread_key(key_, irt, refs, thread)
    migration = (Path(__file__).parents[2] / "inboxlens/db/migrations/012_threads.sql").read_text()
    assert keys.gm_thread_key_sql("gm_thread_id").replace("(gm_thread_id)", "gm_thread_id") in migration


def test_a_thread_is_keyed_by_gmail_then_its_root_then_its_parent_then_itself():
    own = b"o" * 16
    assert keys.thread_key(own, (), (), None) == own
    assert keys.thread_key(own, ("p@x",), (), None) == keys.message_id_key("p@x")
    assert keys.thread_key(own, ("p@x",), ("root@x", "p@x"), None) == keys.message_id_key("root@x")
    assert keys.thread_key(own, ("p@x",), ("root@x",), 42) == keys.gm_thread_key(42) != keys.gm_thread_key(43)
