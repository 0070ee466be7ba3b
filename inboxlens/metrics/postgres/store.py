"""The PostgreSQL MetricsStore: the default, in the same database as the accounts.

Raw rows go to ``raw_headers`` (idempotent by account and msg_key); ``rollups`` folds
them exactly once and ``pg_insights`` answers the insight questions. The schema is the
numbered migrations (``inboxlens migrate``); the sweep deletes raw rows older than the
raw window that no aggregation took (it stalled), so nothing is kept past seven days.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Sequence, TypeVar

import asyncpg

from inboxlens.metrics.postgres import rollups
from inboxlens.metrics.model import (AccountRef, AuthFlag, Card, CorrespondentRollup, DayRollup, DomainAuth, FoldResult, InsightSettings, Order, Pending, Period, PeriodRollup, RawRow, Relationship)
from inboxlens.metrics.postgres.insights import Extra, PgInsights
from inboxlens.metrics.store import DEFAULT_BATCH

RAW_RETENTION = timedelta(days=7)
T = TypeVar("T")
RAW_COLUMNS = ("account_id", "msg_key", "mailbox", "uid", "message_id", "in_reply_to", "refs", "subject",
               "from_address", "from_name", "to_addresses", "cc_addresses", "sent_at", "internal_date",
               "date_reliable", "direction", "automated", "list_id", "dkim", "spf", "dmarc", "dkim_domains",
               "gm_thread_id", "dkim_signatures")
_LIST_COLUMNS = frozenset({"in_reply_to", "refs", "to_addresses", "cc_addresses", "dkim_domains", "dkim_signatures"})


class PgMetricsStore:
    def __init__(self, pool: asyncpg.Pool, settings: InsightSettings = InsightSettings()) -> None:
        self.pool = pool
        self.settings = settings
        self._insights = PgInsights(pool, settings)

    async def write_raw(self, rows: Sequence[RawRow]) -> int:
        if not rows:
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            return await write_raw_in(conn, rows)

    async def aggregate(self, account: AccountRef, *, batch_size: int = DEFAULT_BATCH) -> FoldResult:
        return await rollups.aggregate(self.pool, account.id, batch_size=batch_size,
                                       hours=self.settings.working_hours)

    async def daily(self, account_id: int, first: date, last: date) -> list[DayRollup]:
        return await rollups.daily(self.pool, account_id, first, last)

    async def weekly(self, account_id: int, first: date, last: date) -> list[PeriodRollup]:
        return await rollups.weekly(self.pool, account_id, first, last)

    async def monthly(self, account_id: int, first: date, last: date) -> list[PeriodRollup]:
        return await rollups.monthly(self.pool, account_id, first, last)

    async def correspondents(self, account_id: int, first: date, last: date, period: Period = "day",
                             correspondent: str | None = None) -> list[CorrespondentRollup]:
        return await rollups.correspondents(self.pool, account_id, first, last, period, correspondent)

    async def relationships(self, account_id: int, *, now: datetime, order: Order = "strength", limit: int = 50,
                            offset: int = 0) -> list[Relationship]:
        return await self._insights.relationships(account_id, now=now, order=order, limit=limit, offset=offset)

    async def card(self, account_id: int, correspondent: str, *, now: datetime) -> Card | None:
        return await self._insights.card(account_id, correspondent, now=now)

    async def card_with(self, account_id: int, correspondent: str, *, now: datetime,
                        extra: Extra[T] | None = None) -> tuple[Card | None, T | None]:
        """The card, and ``extra`` of its state row on its connection (``PgInsights.card_with``)."""
        return await self._insights.card_with(account_id, correspondent, now=now, extra=extra)

    async def owed(self, account_id: int, *, now: datetime) -> list[Pending]:
        return await self._insights.owed(account_id, now=now)

    async def awaiting(self, account_id: int, *, now: datetime) -> list[Pending]:
        return await self._insights.awaiting(account_id, now=now)

    async def owed_page(self, account_id: int, *, now: datetime, limit: int, offset: int = 0
                        ) -> tuple[list[Pending], int]:
        return await self._insights.pending_page(account_id, "received", now=now, limit=limit, offset=offset)

    async def awaiting_page(self, account_id: int, *, now: datetime, limit: int, offset: int = 0
                            ) -> tuple[list[Pending], int]:
        return await self._insights.pending_page(account_id, "sent", now=now, limit=limit, offset=offset)

    async def sender_domains(self, account_id: int) -> list[DomainAuth]:
        return await self._insights.sender_domains(account_id)

    async def sender_domains_page(self, account_id: int, *, limit: int, offset: int = 0
                                  ) -> tuple[list[DomainAuth], int]:
        return await self._insights.sender_domains_page(account_id, limit=limit, offset=offset)

    async def auth_flags(self, account_id: int, *, limit: int = 100) -> list[AuthFlag]:
        return await self._insights.auth_flags(account_id, limit=limit)

    async def forget_account(self, account_id: int) -> None:
        # Every metrics table references mail_accounts ON DELETE CASCADE; this is for a store
        # whose account row stays (the contract suite), and it is harmless after the row went.
        async with self.pool.acquire() as conn, conn.transaction():
            for table in _ACCOUNT_TABLES:
                await conn.execute(f"DELETE FROM {table} WHERE account_id = $1", account_id)

    async def sweep(self, now: datetime | None = None) -> int:
        cutoff = (now or datetime.now(timezone.utc)) - RAW_RETENTION
        status = await self.pool.execute("DELETE FROM raw_headers WHERE harvested_at < $1", cutoff)
        return int(str(status).split()[-1])

    async def close(self) -> None:
        """The pool belongs to the caller (it serves the accounts too)."""


_ACCOUNT_TABLES = ("raw_headers", "reply_parents", "message_replies", "auth_flags", "sender_domains", "contacts",
                   "correspondent_daily", "account_daily", "message_index", "metrics_state")


async def write_raw_in(conn: asyncpg.Connection, rows: Sequence[RawRow]) -> int:
    """Within the caller's transaction: a message already stored (same key) is skipped."""
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS raw_batch (LIKE raw_headers INCLUDING DEFAULTS) "
                       "ON COMMIT DELETE ROWS")
    await conn.copy_records_to_table("raw_batch", records=[_record(r) for r in rows], columns=RAW_COLUMNS)
    status = await conn.execute(f"INSERT INTO raw_headers ({', '.join(RAW_COLUMNS)}) "
                                f"SELECT {', '.join(RAW_COLUMNS)} FROM raw_batch ON CONFLICT DO NOTHING")
    return int(str(status).split()[-1])


def _record(row: RawRow) -> tuple[object, ...]:
    return tuple(list(getattr(row, c)) if c in _LIST_COLUMNS else getattr(row, c) for c in RAW_COLUMNS)
