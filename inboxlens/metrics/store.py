"""The MetricsStore interface: raw header rows in, rollups and insights out.

Two backends implement it and one contract suite (``tests/metrics/test_contract.py``)
runs them both:

- ``inboxlens.metrics.postgres.store.PgMetricsStore``: PostgreSQL through asyncpg, in the same
  database as the accounts (the default; schema in ``inboxlens/migrations``).
- ``inboxlens.metrics.cassandra.store.CassandraMetricsStore``: Apache Cassandra through
  cassandra-driver, for more than one node (schema in ``metrics/cassandra.cql``).

The rules every backend keeps:

- ``write_raw`` is idempotent: a message (account, msg_key) written twice is one row.
  Raw rows live until ``aggregate`` folds them, and never longer than seven days.
- ``aggregate`` is exactly-once: folding the same raw rows again, a message harvested
  again after its fold, or a crash at any point and a new run all give the same numbers.
- Days are local calendar dates in the account's time zone; weeks are ISO weeks and
  months calendar months, both summed from the daily rollups.
- Insights are recomputed by ``aggregate`` for the correspondents its rows touched only;
  what depends on "now" (volumes in the last N days, strength, owed replies) is
  computed when read.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol, Sequence

from inboxlens.metrics.model import (AccountRef, AuthFlag, Card, CorrespondentRollup, DayRollup, DomainAuth, FoldResult, Order, Pending, Period, PeriodRollup, RawRow, Relationship)
from inboxlens.service_errors import AccountNotFound

__all__ = ["AccountNotFound", "MetricsStore"]

DEFAULT_BATCH = 50_000  # raw rows per fold step: bounds lock time and memory, not correctness


class MetricsStore(Protocol):
    async def write_raw(self, rows: Sequence[RawRow]) -> int:
        """Store raw rows (idempotent by account and msg_key); returns how many were new."""

    async def aggregate(self, account: AccountRef, *, batch_size: int = DEFAULT_BATCH) -> FoldResult:
        """Fold every raw row of the account not folded yet into rollups and insights."""

    async def daily(self, account_id: int, first: date, last: date) -> list[DayRollup]:
        """The account's days from first to last (inclusive) that had any message."""

    async def weekly(self, account_id: int, first: date, last: date) -> list[PeriodRollup]:
        """ISO weeks whose Monday falls from first to last (inclusive)."""

    async def monthly(self, account_id: int, first: date, last: date) -> list[PeriodRollup]:
        """Calendar months whose first day falls from first to last (inclusive)."""

    async def correspondents(self, account_id: int, first: date, last: date, period: Period = "day",
                             correspondent: str | None = None) -> list[CorrespondentRollup]:
        """Per correspondent (or only the one named) and period starting from first to last."""

    async def relationships(self, account_id: int, *, now: datetime, order: Order = "strength",
                            limit: int = 50, offset: int = 0) -> list[Relationship]:
        """The account's correspondents, best first by the order asked for, a page at a time."""

    async def card(self, account_id: int, correspondent: str, *, now: datetime) -> Card | None:
        """Everything known about one correspondent, or None if they never wrote or were written to."""

    async def owed(self, account_id: int, *, now: datetime) -> list[Pending]:
        """Messages from people (not machines) you have not answered, oldest first."""

    async def awaiting(self, account_id: int, *, now: datetime) -> list[Pending]:
        """Your messages to people who have not answered, oldest first."""

    async def owed_page(self, account_id: int, *, now: datetime, limit: int, offset: int = 0
                        ) -> tuple[list[Pending], int]:
        """A page of ``owed`` (limit rows from offset on) and how many there are in all."""

    async def awaiting_page(self, account_id: int, *, now: datetime, limit: int, offset: int = 0
                            ) -> tuple[list[Pending], int]:
        """A page of ``awaiting`` and how many there are in all."""

    async def sender_domains(self, account_id: int) -> list[DomainAuth]:
        """Per sender domain, how often its messages passed DKIM, SPF and DMARC."""

    async def sender_domains_page(self, account_id: int, *, limit: int, offset: int = 0
                                  ) -> tuple[list[DomainAuth], int]:
        """A page of ``sender_domains`` and how many there are in all."""

    async def auth_flags(self, account_id: int, *, limit: int = 100) -> list[AuthFlag]:
        """Messages that failed a check their domain usually passes, newest first."""

    async def forget_account(self, account_id: int) -> None:
        """Delete everything held for the account (a disconnect)."""

    async def sweep(self, now: datetime | None = None) -> int:
        """Delete raw rows older than the raw window; returns how many went."""

    async def close(self) -> None:
        """Release connections."""
