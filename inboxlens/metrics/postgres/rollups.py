"""PostgreSQL: raw header rows folded exactly once into the message index, daily rollups
and the per-correspondent and per-domain tables the insights read.

``aggregate(pool, account_id)`` runs in batches, each one transaction that:

1. locks the account's ``metrics_state`` row (an upsert), so aggregators of one account,
   on any number of processes or nodes, take turns;
2. deletes a batch of the account's ``raw_headers`` rows and inserts each into
   ``message_index``; only the rows whose insert did not conflict are counted, so a
   message harvested again after it was folded (a new UIDVALIDITY refetches a mailbox)
   adds nothing. Those add their counts to ``account_daily``, ``correspondent_daily``,
   ``contacts`` (first/last contact, hours) and ``sender_domains`` (verdicts), and their
   parent keys to ``reply_parents``;
3. recounts the distinct correspondents of the days it touched;
4. matches replies (``replies.fold``): the new messages to parents already indexed, and
   indexed messages to new parents (``message_replies``, one row per reply), adding each
   new reply's time to the arrays of its local day, and flags new messages that fail a
   check their domain usually passes (``auth_flags``).

Every statement's work follows the batch, not the account's history, whatever statistics
the planner has (tests/metrics/test_fold_plans_functional.py; docs/benchmarks.md, Metrics).

A crash anywhere rolls all of it back: the raw rows are still there, and nothing was
added. Days are local calendar dates in the account's time zone (PostgreSQL's
``AT TIME ZONE``), so a 23- or 25-hour DST day is one day. docs/insights.md defines
every number. Weekly (ISO weeks) and monthly rollups are sums over the daily tables.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from inboxlens.metrics.insights import WorkingClock
from inboxlens.metrics.model import (CorrespondentRollup, DayRollup, FoldResult, Period, PeriodRollup, Quantiles, WorkingHours)
from inboxlens.metrics.keys import message_id_key_sql, thread_key_sql
from inboxlens.metrics.postgres import replies
from inboxlens.metrics.store import DEFAULT_BATCH
from inboxlens.service_errors import AccountNotFound

__all__ = ["DEFAULT_BATCH", "AccountNotFound", "CorrespondentRollup", "DayRollup", "FoldResult", "Period",
           "PeriodRollup", "aggregate", "correspondents", "daily", "monthly", "weekly"]


# -- aggregation --------------------------------------------------------------------------------

_LOCK = """
INSERT INTO metrics_state (account_id, runs) VALUES ($1, 1)
ON CONFLICT (account_id) DO UPDATE SET runs = metrics_state.runs + 1
"""

# $1 account, $2 batch size, $3 time zone, $4 the account's own address.
# parent_keys: metrics.keys' msg_key of a Message-ID, of each In-Reply-To id (or
# of the last References id): a reply's parents are message_index primary keys.
# thread_key: metrics.keys.thread_key; to_me: a received message names you in To or Cc.
_FOLD = r"""
WITH taken AS (
    -- up to $2 of the account's rows, each by its row id (a TID scan): one pass over the
    -- account's queue. A join with the LIMIT subquery ran as a nested loop over the batch
    -- when the queue looked empty to the planner. The ids cannot move under this statement.
    DELETE FROM raw_headers r
    WHERE r.ctid = ANY (ARRAY(SELECT ctid FROM raw_headers WHERE account_id = $1 LIMIT $2))
    RETURNING r.*
), indexed AS (
    INSERT INTO message_index (account_id, msg_key, sent_at, direction, automated, correspondents,
                               parent_keys, gm_thread_id, from_domain, dkim, spf, dmarc, message_id, thread_key,
                               to_me)
    SELECT t.account_id, t.msg_key, t.sent_at, t.direction, t.automated,
           CASE WHEN t.direction <> 'received' THEN
               ARRAY(SELECT lower(u.a)  -- distinct, in header order (the first To first)
                     FROM unnest(t.to_addresses || t.cc_addresses) WITH ORDINALITY AS u (a, n)
                     WHERE coalesce(u.a, '') <> '' AND lower(u.a) <> lower($4::text)
                     GROUP BY lower(u.a) ORDER BY min(u.n))
           WHEN coalesce(t.from_address, '') <> '' AND lower(t.from_address) <> lower($4::text)
               THEN ARRAY[lower(t.from_address)] ELSE '{}' END,
           ARRAY(SELECT """ + message_id_key_sql("m") + r"""
                 FROM unnest(CASE WHEN cardinality(t.in_reply_to) > 0 THEN t.in_reply_to
                                  ELSE t.refs[cardinality(t.refs):] END) AS m),
           t.gm_thread_id,
           CASE WHEN t.direction = 'received' AND t.from_address LIKE '%_@_%'
                THEN lower(regexp_replace(t.from_address, '^.*@', '')) END,
           t.dkim, t.spf, t.dmarc, t.message_id, """ + thread_key_sql("t.msg_key", "t.in_reply_to", "t.refs",
                                                                     "t.gm_thread_id") + r""",
           CASE WHEN t.direction = 'received' THEN EXISTS (
               SELECT 1 FROM unnest(t.to_addresses || t.cc_addresses) AS x (a) WHERE lower(x.a) = lower($4::text)) END
    FROM taken t
    ON CONFLICT (account_id, msg_key) DO NOTHING
    RETURNING msg_key, direction, automated, correspondents, parent_keys, sent_at,
              sent_at AT TIME ZONE $3::text AS at_local, from_domain, dkim, spf, dmarc
), parents AS (
    INSERT INTO reply_parents (account_id, parent_key, msg_key)
    SELECT $1, p.key, i.msg_key FROM indexed i CROSS JOIN unnest(i.parent_keys) AS p (key)
    ON CONFLICT DO NOTHING
), hourly AS (
    SELECT at_local::date AS day, extract(hour FROM at_local)::integer AS hour,
           count(*) FILTER (WHERE direction = 'received')::integer AS received,
           count(*) FILTER (WHERE direction = 'sent')::integer AS sent
    FROM indexed GROUP BY 1, 2
), days AS (
    INSERT INTO account_daily AS d (account_id, day, received, sent, received_by_hour, sent_by_hour)
    SELECT $1, day, sum(received), sum(sent), metrics_by_hour(array_agg(hour), array_agg(received)),
           metrics_by_hour(array_agg(hour), array_agg(sent))
    FROM hourly GROUP BY day
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
), people_hourly AS (
    SELECT p.correspondent, extract(hour FROM i.at_local)::integer AS hour, min(i.sent_at) AS first_at,
           max(i.sent_at) AS last_at, count(*) FILTER (WHERE i.direction = 'received')::integer AS received,
           count(*) FILTER (WHERE i.direction = 'sent')::integer AS sent,
           count(*) FILTER (WHERE i.direction = 'received' AND i.automated)::integer AS automated
    FROM indexed i CROSS JOIN unnest(i.correspondents) AS p (correspondent)
    GROUP BY 1, 2
), touched AS (
    INSERT INTO contacts AS k (account_id, correspondent, first_contact, last_contact, received, sent,
                               automated_received, hours, version)
    SELECT $1, correspondent, min(first_at), max(last_at), sum(received), sum(sent), sum(automated),
           metrics_by_hour(array_agg(hour), array_agg(received)), nextval('contacts_version_seq')
    FROM people_hourly GROUP BY correspondent
    ON CONFLICT (account_id, correspondent) DO UPDATE SET
        version = excluded.version,
        first_contact = least(k.first_contact, excluded.first_contact),
        last_contact = greatest(k.last_contact, excluded.last_contact),
        received = k.received + excluded.received, sent = k.sent + excluded.sent,
        automated_received = k.automated_received + excluded.automated_received,
        hours = ARRAY(SELECT x + y FROM unnest(k.hours, excluded.hours) WITH ORDINALITY AS h (x, y, i) ORDER BY i)
    RETURNING correspondent
), domains AS (
    INSERT INTO sender_domains AS s (account_id, domain, messages, dkim_checked, dkim_pass, spf_checked, spf_pass,
                                     dmarc_checked, dmarc_pass, last_seen)
    SELECT $1, from_domain, count(*), count(dkim), count(*) FILTER (WHERE dkim = 'pass'),
           count(spf), count(*) FILTER (WHERE spf = 'pass'), count(dmarc), count(*) FILTER (WHERE dmarc = 'pass'),
           max(sent_at)
    FROM indexed WHERE direction = 'received' AND from_domain IS NOT NULL
    GROUP BY from_domain
    ON CONFLICT (account_id, domain) DO UPDATE SET
        messages = s.messages + excluded.messages,
        dkim_checked = s.dkim_checked + excluded.dkim_checked, dkim_pass = s.dkim_pass + excluded.dkim_pass,
        spf_checked = s.spf_checked + excluded.spf_checked, spf_pass = s.spf_pass + excluded.spf_pass,
        dmarc_checked = s.dmarc_checked + excluded.dmarc_checked, dmarc_pass = s.dmarc_pass + excluded.dmarc_pass,
        last_seen = greatest(s.last_seen, excluded.last_seen)
)
SELECT (SELECT count(*) FROM taken) AS taken, (SELECT count(*) FROM indexed) AS folded,
       ARRAY(SELECT day FROM days) AS days, ARRAY(SELECT msg_key FROM indexed) AS new_keys,
       ARRAY(SELECT correspondent FROM touched) AS people
"""

# A separate statement: it must see the correspondent_daily rows the fold just wrote.
_RECOUNT = """
UPDATE account_daily d SET correspondents =
    (SELECT count(*) FROM correspondent_daily c
     WHERE c.account_id = d.account_id AND c.day = d.day AND c.received + c.sent > 0)
WHERE d.account_id = $1 AND d.day = ANY($2::date[])
"""

_RECORD = """
UPDATE metrics_state SET messages_folded = messages_folded + $2, duplicates_seen = duplicates_seen + $3,
                         last_aggregated_at = now()
WHERE account_id = $1
"""


async def aggregate(pool: asyncpg.Pool, account_id: int, *, batch_size: int = DEFAULT_BATCH,
                    hours: WorkingHours | None = None) -> FoldResult:
    """Fold every raw row of the account not folded yet; one transaction per batch. With
    ``hours``, each new reply's time in those working hours is stored too."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = FoldResult()
    while True:
        async with pool.acquire() as conn:
            result = await _fold_batch(conn, account_id, batch_size, hours)
        total += result
        if result.taken < batch_size:
            return total


async def _fold_batch(conn: asyncpg.Connection, account_id: int, batch_size: int,
                      hours: WorkingHours | None) -> FoldResult:
    async with conn.transaction():
        account = await conn.fetchrow("SELECT address, time_zone FROM mail_accounts WHERE id = $1", account_id)
        if account is None:
            raise AccountNotFound(f"no mail account {account_id}")
        zone = account["time_zone"]
        await conn.execute(_LOCK, account_id)
        clock = await _working_clock(conn, account_id, zone, hours) if hours is not None else None
        row = await conn.fetchrow(_FOLD, account_id, batch_size, zone, account["address"])
        await _recount(conn, account_id, frozenset(row["days"]))
        touched = set(row["people"])
        answered = await replies.fold(conn, account_id, row["new_keys"], zone, clock) if row["new_keys"] else set()
        if answered - touched:  # the fold's upsert stamped the contacts it touched
            await conn.execute("UPDATE contacts SET version = nextval('contacts_version_seq') "
                               "WHERE account_id = $1 AND correspondent = ANY($2::text[])", account_id,
                               sorted(answered - touched))
        if clock is not None:
            await _business_backlog(conn, account_id, clock)
        result = FoldResult(int(row["taken"]), int(row["folded"]), frozenset(row["days"]), frozenset(touched | answered))
        await conn.execute(_RECORD, account_id, result.folded, result.duplicates)
    return result


def business_key(zone: str, hours: WorkingHours) -> str:
    """What stored business_seconds were worked out in, say "Europe/Berlin 09:00:00-17:00:00 01234"."""
    return f"{zone} {hours.start.isoformat()}-{hours.end.isoformat()} {''.join(map(str, sorted(hours.weekdays)))}"


BUSINESS_BATCH = 20_000  # replies worked out per fold batch (after a change of hours, the rest come next time)


async def _working_clock(conn: asyncpg.Connection, account_id: int, zone: str, hours: WorkingHours) -> WorkingClock:
    """Within the batch's transaction, before any reply is stored: the clock new replies'
    working-hours time is worked out with. When the account's zone or the working hours
    changed, every stored time is dropped, to be worked out again (_business_backlog)."""
    key = business_key(zone, hours)
    if await conn.fetchval("SELECT business_hours FROM metrics_state WHERE account_id = $1", account_id) != key:
        await conn.execute("UPDATE message_replies SET business_seconds = NULL "
                           "WHERE account_id = $1 AND business_seconds IS NOT NULL", account_id)
        await conn.execute("UPDATE metrics_state SET business_hours = $2 WHERE account_id = $1", account_id, key)
    return WorkingClock(zone, hours)


async def _business_backlog(conn: asyncpg.Connection, account_id: int, clock: WorkingClock) -> None:
    """The working-hours time of replies that have none yet (after a change of zone or hours,
    or stored by a fold without hours), at most BUSINESS_BATCH at a time; until all have
    one, cards work them out when read."""
    todo = await conn.fetch("SELECT msg_key, asked_at, answered_at FROM message_replies "
                            "WHERE account_id = $1 AND business_seconds IS NULL LIMIT $2", account_id, BUSINESS_BATCH)
    if todo:
        await conn.execute("UPDATE message_replies r SET business_seconds = v.seconds "
                           "FROM unnest($2::bytea[], $3::float8[]) AS v (msg_key, seconds) "
                           "WHERE r.account_id = $1 AND r.msg_key = v.msg_key", account_id,
                           [r["msg_key"] for r in todo], [clock.between(r["asked_at"], r["answered_at"]) for r in todo])


async def _recount(conn: asyncpg.Connection, account_id: int, days: frozenset[date]) -> None:
    if days:
        await conn.execute(_RECOUNT, account_id, sorted(days))


# -- reading ------------------------------------------------------------------------------------

_UNITS: dict[Period, str] = {"day": "day", "week": "week", "month": "month"}

# Reply times of each period (and correspondent), concatenated over its days. $1 account,
# $2..$3 period starts, $4 the unit, $5 one correspondent or NULL.
_REPLY_ARRAYS = """
SELECT p.start, p.correspondent, coalesce(array_agg(s.seconds) FILTER (WHERE s.kind = 1), '{{}}') AS yours,
       coalesce(array_agg(s.seconds) FILTER (WHERE s.kind = 2), '{{}}') AS theirs
FROM (SELECT date_trunc($4, day::timestamp)::date AS start, {who} AS correspondent,
             your_reply_seconds, their_reply_seconds
      FROM {table} WHERE account_id = $1 AND ($5::text IS NULL OR {who} = lower($5))) AS p
CROSS JOIN LATERAL (SELECT 1 AS kind, unnest(p.your_reply_seconds) AS seconds
                    UNION ALL SELECT 2, unnest(p.their_reply_seconds)) AS s
WHERE p.start BETWEEN $2 AND $3
GROUP BY 1, 2
"""

Replies = dict[tuple[date, str], tuple[Quantiles, Quantiles]]


async def _replies(pool: asyncpg.Pool, account_id: int, first: date, last: date, period: Period,
                   per_correspondent: bool, correspondent: str | None = None) -> Replies:
    query = _REPLY_ARRAYS.format(table="correspondent_daily" if per_correspondent else "account_daily",
                                 who="correspondent" if per_correspondent else "''")
    rows = await pool.fetch(query, account_id, first, last, _UNITS[period], correspondent)
    return {(r["start"], r["correspondent"]): (Quantiles.of(r["yours"]), Quantiles.of(r["theirs"])) for r in rows}


async def daily(pool: asyncpg.Pool, account_id: int, first: date, last: date) -> list[DayRollup]:
    """The account's days from first to last (local dates, inclusive) that had any message."""
    rows = await pool.fetch("SELECT day, received, sent, correspondents, received_by_hour, sent_by_hour "
                            "FROM account_daily WHERE account_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day",
                            account_id, first, last)
    replies = await _replies(pool, account_id, first, last, "day", False)
    none = (Quantiles(), Quantiles())
    return [DayRollup(r["day"], r["received"], r["sent"], r["correspondents"], tuple(r["received_by_hour"]),
                      tuple(r["sent_by_hour"]), *replies.get((r["day"], ""), none)) for r in rows]


async def weekly(pool: asyncpg.Pool, account_id: int, first: date, last: date) -> list[PeriodRollup]:
    """ISO weeks whose Monday falls from first to last (inclusive)."""
    return await _periods(pool, "week", account_id, first, last)


async def monthly(pool: asyncpg.Pool, account_id: int, first: date, last: date) -> list[PeriodRollup]:
    """Calendar months whose first day falls from first to last (inclusive)."""
    return await _periods(pool, "month", account_id, first, last)


_PERIOD_VIEWS = {"week": ("account_weekly", "week_start"), "month": ("account_monthly", "month_start")}


async def _periods(pool: asyncpg.Pool, period: Period, account_id: int, first: date, last: date) -> list[PeriodRollup]:
    view, start = _PERIOD_VIEWS[period]
    rows = await pool.fetch(f"SELECT {start} AS start, received, sent, correspondents, received_by_hour, "
                            f"sent_by_hour, received_by_weekday, sent_by_weekday FROM {view} "
                            f"WHERE account_id = $1 AND {start} BETWEEN $2 AND $3 ORDER BY {start}",
                            account_id, first, last)
    replies = await _replies(pool, account_id, first, last, period, False)
    return [_period(r, replies.get((r["start"], ""), (Quantiles(), Quantiles()))) for r in rows]


def _period(r: Any, replies: tuple[Quantiles, Quantiles]) -> PeriodRollup:
    return PeriodRollup(r["start"], int(r["received"]), int(r["sent"]), int(r["correspondents"]),
                        tuple(r["received_by_hour"]), tuple(r["sent_by_hour"]), tuple(r["received_by_weekday"]),
                        tuple(r["sent_by_weekday"]), *replies)


_CORRESPONDENT_SOURCES: dict[Period, str] = {
    "day": "SELECT day AS start, correspondent, received, sent, (received + sent > 0)::integer AS active_days "
           "FROM correspondent_daily",
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
    replies = await _replies(pool, account_id, first, last, period, True, correspondent)
    none = (Quantiles(), Quantiles())
    return [CorrespondentRollup(r["start"], r["correspondent"], int(r["received"]), int(r["sent"]),
                                int(r["active_days"]), *replies.get((r["start"], r["correspondent"]), none))
            for r in rows]
