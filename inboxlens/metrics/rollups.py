"""Daily rollups per account and per correspondent, folded from raw header rows exactly once.

``aggregate(pool, account_id)`` runs in batches, each one transaction that:

1. locks the account's ``metrics_state`` row (an upsert), so aggregators of one account,
   on any number of processes or nodes, take turns;
2. deletes a batch of the account's ``raw_headers`` rows and inserts each into
   ``message_index``; only the rows whose insert did not conflict are counted, so a
   message harvested again after it was folded (a new UIDVALIDITY refetches a mailbox)
   adds nothing, and adds their counts to ``account_daily`` and ``correspondent_daily``;
3. recounts the distinct correspondents of the days it touched.

A crash anywhere rolls all of it back: the raw rows are still there, and nothing was
added. Days are local calendar dates in the account's time zone (PostgreSQL's
``AT TIME ZONE``), so a 23- or 25-hour DST day is one day. A correspondent is the other
party, lower-cased: From for a received message, each distinct To and Cc for a sent one;
the account's own address is never its own correspondent.

Weekly (ISO weeks) and monthly rollups are views over the daily tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import asyncpg

__all__ = ["DEFAULT_BATCH", "AccountNotFound", "CorrespondentRollup", "DayRollup", "FoldResult", "Period",
           "PeriodRollup", "aggregate", "correspondents", "daily", "monthly", "weekly"]

DEFAULT_BATCH = 50_000  # raw rows per transaction: bounds lock time and memory, not correctness
Period = Literal["day", "week", "month"]


class AccountNotFound(LookupError):
    """The caller named an account that does not exist (or was deleted meanwhile)."""


@dataclass(frozen=True)
class FoldResult:
    taken: int = 0  # raw rows deleted
    folded: int = 0  # of those, messages counted for the first time
    days: frozenset[date] = frozenset()  # local dates whose rollups changed

    @property
    def duplicates(self) -> int:
        return self.taken - self.folded

    def __add__(self, other: FoldResult) -> FoldResult:
        return FoldResult(self.taken + other.taken, self.folded + other.folded, self.days | other.days)


@dataclass(frozen=True)
class DayRollup:
    day: date
    received: int
    sent: int
    correspondents: int
    received_by_hour: tuple[int, ...]  # 24 local hours, [0] = 00:00-00:59
    sent_by_hour: tuple[int, ...]


@dataclass(frozen=True)
class PeriodRollup:
    start: date  # the Monday of an ISO week, or the first of a month
    received: int
    sent: int
    correspondents: int  # distinct over the whole period
    received_by_hour: tuple[int, ...]
    sent_by_hour: tuple[int, ...]
    received_by_weekday: tuple[int, ...]  # [0] = Monday ... [6] = Sunday
    sent_by_weekday: tuple[int, ...]


@dataclass(frozen=True)
class CorrespondentRollup:
    start: date  # the day, the Monday of the ISO week, or the first of the month
    correspondent: str
    received: int  # messages from them
    sent: int  # messages to them (To or Cc)
    active_days: int


# -- aggregation --------------------------------------------------------------------------------

_LOCK = """
INSERT INTO metrics_state (account_id, runs) VALUES ($1, 1)
ON CONFLICT (account_id) DO UPDATE SET runs = metrics_state.runs + 1
"""

# $1 account, $2 batch size, $3 time zone, $4 the account's own address.
# parent_keys: the hash harvest's msg_key uses for a Message-ID, of each In-Reply-To id (or
# of the last References id): a reply's parents are message_index primary keys.
_FOLD = r"""
WITH taken AS (
    DELETE FROM raw_headers r
    WHERE r.account_id = $1 AND r.msg_key IN (
        SELECT msg_key FROM raw_headers WHERE account_id = $1 ORDER BY msg_key LIMIT $2)
    RETURNING r.*
), indexed AS (
    INSERT INTO message_index (account_id, msg_key, sent_at, direction, automated, correspondents,
                               parent_keys, gm_thread_id)
    SELECT t.account_id, t.msg_key, t.sent_at, t.direction, t.automated,
           ARRAY(SELECT DISTINCT lower(a)
                 FROM unnest(CASE WHEN t.direction = 'received' THEN ARRAY[t.from_address]
                                  ELSE t.to_addresses || t.cc_addresses END) AS a
                 WHERE coalesce(a, '') <> '' AND lower(a) <> $4::text ORDER BY 1),
           ARRAY(SELECT substring(sha256('\x696400'::bytea || convert_to(m, 'UTF8')) FOR 16)
                 FROM unnest(CASE WHEN cardinality(t.in_reply_to) > 0 THEN t.in_reply_to
                                  ELSE t.refs[cardinality(t.refs):] END) AS m),
           t.gm_thread_id
    FROM taken t
    ON CONFLICT (account_id, msg_key) DO NOTHING
    RETURNING direction, correspondents, sent_at AT TIME ZONE $3::text AS at_local
), hourly AS (
    SELECT at_local::date AS day, extract(hour FROM at_local)::integer AS hour,
           count(*) FILTER (WHERE direction = 'received')::integer AS received,
           count(*) FILTER (WHERE direction = 'sent')::integer AS sent
    FROM indexed GROUP BY 1, 2
), days AS (
    INSERT INTO account_daily AS d (account_id, day, received, sent, received_by_hour, sent_by_hour)
    SELECT $1, g.day, sum(coalesce(h.received, 0)), sum(coalesce(h.sent, 0)),
           array_agg(coalesce(h.received, 0) ORDER BY hours.hour), array_agg(coalesce(h.sent, 0) ORDER BY hours.hour)
    FROM (SELECT DISTINCT day FROM hourly) AS g CROSS JOIN generate_series(0, 23) AS hours (hour)
         LEFT JOIN hourly h ON h.day = g.day AND h.hour = hours.hour
    GROUP BY g.day
    ON CONFLICT (account_id, day) DO UPDATE SET
        received = d.received + excluded.received, sent = d.sent + excluded.sent,
        received_by_hour = metrics_array_add(d.received_by_hour, excluded.received_by_hour),
        sent_by_hour = metrics_array_add(d.sent_by_hour, excluded.sent_by_hour)
    RETURNING day
), people AS (
    INSERT INTO correspondent_daily AS c (account_id, correspondent, day, received, sent)
    SELECT $1, p.correspondent, i.at_local::date,
           count(*) FILTER (WHERE i.direction = 'received'), count(*) FILTER (WHERE i.direction = 'sent')
    FROM indexed i CROSS JOIN unnest(i.correspondents) AS p (correspondent)
    GROUP BY 2, 3
    ON CONFLICT (account_id, correspondent, day) DO UPDATE SET
        received = c.received + excluded.received, sent = c.sent + excluded.sent
)
SELECT (SELECT count(*) FROM taken) AS taken, (SELECT count(*) FROM indexed) AS folded,
       ARRAY(SELECT day FROM days) AS days
"""

# A separate statement: it must see the correspondent_daily rows the fold just wrote.
_RECOUNT = """
UPDATE account_daily d SET correspondents =
    (SELECT count(*) FROM correspondent_daily c WHERE c.account_id = d.account_id AND c.day = d.day)
WHERE d.account_id = $1 AND d.day = ANY($2::date[])
"""

_RECORD = """
UPDATE metrics_state SET messages_folded = messages_folded + $2, duplicates_seen = duplicates_seen + $3,
                         last_aggregated_at = now()
WHERE account_id = $1
"""


async def aggregate(pool: asyncpg.Pool, account_id: int, *, batch_size: int = DEFAULT_BATCH) -> FoldResult:
    """Fold every raw row of the account not folded yet; one transaction per batch."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = FoldResult()
    while True:
        async with pool.acquire() as conn:
            result = await _fold_batch(conn, account_id, batch_size)
        total += result
        if result.taken < batch_size:
            return total


async def _fold_batch(conn: asyncpg.Connection, account_id: int, batch_size: int) -> FoldResult:
    async with conn.transaction():
        account = await conn.fetchrow("SELECT address, time_zone FROM mail_accounts WHERE id = $1", account_id)
        if account is None:
            raise AccountNotFound(f"no mail account {account_id}")
        await conn.execute(_LOCK, account_id)
        row = await conn.fetchrow(_FOLD, account_id, batch_size, account["time_zone"], account["address"])
        result = FoldResult(int(row["taken"]), int(row["folded"]), frozenset(row["days"]))
        await _recount(conn, account_id, result.days)
        await conn.execute(_RECORD, account_id, result.folded, result.duplicates)
    return result


async def _recount(conn: asyncpg.Connection, account_id: int, days: frozenset[date]) -> None:
    if days:
        await conn.execute(_RECOUNT, account_id, sorted(days))


# -- reading ------------------------------------------------------------------------------------

async def daily(pool: asyncpg.Pool, account_id: int, first: date, last: date) -> list[DayRollup]:
    """The account's days from first to last (local dates, inclusive) that had any message."""
    rows = await pool.fetch("SELECT day, received, sent, correspondents, received_by_hour, sent_by_hour "
                            "FROM account_daily WHERE account_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day",
                            account_id, first, last)
    return [DayRollup(r["day"], r["received"], r["sent"], r["correspondents"], tuple(r["received_by_hour"]),
                      tuple(r["sent_by_hour"])) for r in rows]


async def weekly(pool: asyncpg.Pool, account_id: int, first: date, last: date) -> list[PeriodRollup]:
    """ISO weeks whose Monday falls from first to last (inclusive)."""
    return await _periods(pool, "account_weekly", "week_start", account_id, first, last)


async def monthly(pool: asyncpg.Pool, account_id: int, first: date, last: date) -> list[PeriodRollup]:
    """Calendar months whose first day falls from first to last (inclusive)."""
    return await _periods(pool, "account_monthly", "month_start", account_id, first, last)


async def _periods(pool: asyncpg.Pool, view: str, start: str, account_id: int, first: date,
                   last: date) -> list[PeriodRollup]:
    rows = await pool.fetch(f"SELECT {start} AS start, received, sent, correspondents, received_by_hour, "
                            f"sent_by_hour, received_by_weekday, sent_by_weekday FROM {view} "
                            f"WHERE account_id = $1 AND {start} BETWEEN $2 AND $3 ORDER BY {start}",
                            account_id, first, last)
    return [_period(r) for r in rows]


def _period(r: Any) -> PeriodRollup:
    return PeriodRollup(r["start"], int(r["received"]), int(r["sent"]), int(r["correspondents"]),
                        tuple(r["received_by_hour"]), tuple(r["sent_by_hour"]), tuple(r["received_by_weekday"]),
                        tuple(r["sent_by_weekday"]))


_CORRESPONDENT_SOURCES: dict[Period, str] = {
    "day": "SELECT day AS start, correspondent, received, sent, 1 AS active_days FROM correspondent_daily",
    "week": "SELECT week_start AS start, correspondent, received, sent, active_days FROM correspondent_weekly",
    "month": "SELECT month_start AS start, correspondent, received, sent, active_days FROM correspondent_monthly",
}


async def correspondents(pool: asyncpg.Pool, account_id: int, first: date, last: date, period: Period = "day",
                         correspondent: str | None = None) -> list[CorrespondentRollup]:
    """Per correspondent (or only the one named) and period starting from first to last (inclusive)."""
    source = _CORRESPONDENT_SOURCES[period]
    rows = await pool.fetch(f"SELECT * FROM ({source} WHERE account_id = $1) AS p "
                            "WHERE start BETWEEN $2 AND $3 AND ($4::text IS NULL OR correspondent = lower($4)) "
                            "ORDER BY start, correspondent", account_id, first, last, correspondent)
    return [CorrespondentRollup(r["start"], r["correspondent"], int(r["received"]), int(r["sent"]),
                                int(r["active_days"])) for r in rows]
