"""Pages of owed, awaiting and sender domains are cut in SQL (issue 11.8): no more rows
cross the wire than the page holds, and the pages and totals are those of the whole lists."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

import asyncpg
import pytest

from inboxlens.db.migrate import migrate
from inboxlens.metrics.model import AccountRef, InsightSettings
from inboxlens.metrics.postgres.store import PgMetricsStore
from tests.web.conftest import raw

OWN = "me@own.test"
PEOPLE = 23


class CountingPool:
    """The pool, counting the rows each fetch brings back."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.fetched: list[int] = []

    async def fetch(self, *args: Any) -> list[Any]:
        found = await self.pool.fetch(*args)
        self.fetched.append(len(found))
        return list(found)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


@pytest.fixture
async def store(pg_db: str) -> AsyncIterator[tuple[PgMetricsStore, CountingPool, int]]:
    await migrate(pg_db)
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=2)
    user = await pool.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", OWN)
    account = await pool.fetchval("INSERT INTO mail_accounts (user_id, address, provider) VALUES ($1, $2, 'test') "
                                  "RETURNING id", user, OWN)
    now = datetime.now(timezone.utc)
    rows = [raw(account, OWN, f"<in{i}@p{i}.test>", now - timedelta(days=2, hours=i), received_from=f"p{i}@d{i % 7}.test")
            for i in range(PEOPLE)]
    rows += [raw(account, OWN, f"<out{i}@own>", now - timedelta(days=4, hours=i), sent_to=f"q{i}@elsewhere.test")
             for i in range(PEOPLE)]
    seeding = PgMetricsStore(pool, InsightSettings())
    await seeding.write_raw(rows)
    await seeding.aggregate(AccountRef(account, OWN, "UTC"))
    counting = CountingPool(pool)
    yield PgMetricsStore(counting, InsightSettings()), counting, account  # type: ignore[arg-type]
    await pool.close()


@pytest.mark.parametrize("limit, offset", [(5, 0), (5, 20), (50, 0), (1, PEOPLE - 1), (10, PEOPLE), (10, 1000)])
async def test_pages_are_slices_of_the_whole_list_and_no_more_rows_are_read(
        store: tuple[PgMetricsStore, CountingPool, int], limit: int, offset: int) -> None:
    metrics, pool, account = store
    now = datetime.now(timezone.utc)
    for whole, paged in ((metrics.owed, metrics.owed_page), (metrics.awaiting, metrics.awaiting_page)):
        everything = await whole(account, now=now)
        assert len(everything) == PEOPLE
        pool.fetched.clear()
        page, total = await paged(account, now=now, limit=limit, offset=offset)
        assert (page, total) == (everything[offset:offset + limit], PEOPLE)
        assert pool.fetched and max(pool.fetched) <= limit
    domains = await metrics.sender_domains(account)
    pool.fetched.clear()
    page_of_domains, domains_total = await metrics.sender_domains_page(account, limit=limit, offset=offset)
    assert (page_of_domains, domains_total) == (domains[offset:offset + limit], 7)
    assert max(pool.fetched) <= limit


async def test_an_account_with_nothing_has_empty_pages(store: tuple[PgMetricsStore, CountingPool, int]) -> None:
    metrics, _, account = store
    now = datetime.now(timezone.utc)
    assert await metrics.owed_page(account + 1, now=now, limit=5) == ([], 0)
    assert await metrics.sender_domains_page(account + 1, limit=5, offset=3) == ([], 0)
