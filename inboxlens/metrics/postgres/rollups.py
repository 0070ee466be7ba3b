"""PostgreSQL: raw header rows folded exactly once into the message index, daily rollups
and the per-correspondent and per-domain tables the insights read.

``aggregate(pool, account_id)`` runs in batches, each one transaction that:

1. locks the account's ``metrics_state`` row (an upsert), so aggregators of one account,
   on any number of processes or nodes, take turns;
2. deletes a batch of the account's ``raw_headers`` rows and inserts each into
   ``message_index``; only the rows whose insert did not conflict are counted, so a
   message harvested again after it was folded (a new UIDVALIDITY refetches a mailbox)
   adds nothing. Those add their counts to ``account_daily``, ``correspondent_daily``,
   ``contacts`` (first/last contact, hours) and ``sender_domains`` (verdicts);
3. recounts the distinct correspondents of the days it touched;
4. matches replies: the new messages to parents already indexed, and indexed messages to
   new parents (``message_replies``, one row per reply), adding each new reply's time to
   the arrays of its local day;
5. flags new messages that fail a check their domain usually passes (``auth_flags``).

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
from inboxlens.metrics.model import (USUAL_MIN_CHECKED, USUAL_PASS_RATE, CorrespondentRollup, DayRollup, FoldResult, Period, PeriodRollup, Quantiles, WorkingHours)
from inboxlens.metrics.keys import message_id_key_sql, thread_key_sql
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
    DELETE FROM raw_headers r
    WHERE r.account_id = $1 AND r.msg_key IN (
        SELECT msg_key FROM raw_headers WHERE account_id = $1 ORDER BY msg_key LIMIT $2)
    RETURNING r.*
), indexed AS (
    INSERT INTO message_index (account_id, msg_key, sent_at, direction, automated, correspondents,
                               parent_keys, gm_thread_id, from_domain, dkim, spf, dmarc, message_id, thread_key,
                               to_me)
    SELECT t.account_id, t.msg_key, t.sent_at, t.direction, t.automated,
           ARRAY(SELECT lower(u.a)  -- distinct, in header order (the first To first)
                 FROM unnest(CASE WHEN t.direction = 'received' THEN ARRAY[t.from_address]
                                  ELSE t.to_addresses || t.cc_addresses END) WITH ORDINALITY AS u (a, n)
                 WHERE coalesce(u.a, '') <> '' AND lower(u.a) <> lower($4::text)
                 GROUP BY lower(u.a) ORDER BY min(u.n)),
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
    RETURNING msg_key, direction, automated, correspondents, sent_at, sent_at AT TIME ZONE $3::text AS at_local,
              from_domain, dkim, spf, dmarc
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
), touched AS (
    INSERT INTO contacts AS k (account_id, correspondent, first_contact, last_contact, received, sent,
                               automated_received, hours)
    SELECT $1, p.correspondent, min(i.sent_at), max(i.sent_at),
           count(*) FILTER (WHERE i.direction = 'received'), count(*) FILTER (WHERE i.direction = 'sent'),
           count(*) FILTER (WHERE i.direction = 'received' AND i.automated),
           coalesce(metrics_array_sum(metrics_one_hot(24, extract(hour FROM i.at_local)::integer + 1, 1))
                        FILTER (WHERE i.direction = 'received'), array_fill(0, ARRAY[24]))
    FROM indexed i CROSS JOIN unnest(i.correspondents) AS p (correspondent)
    GROUP BY 2
    ON CONFLICT (account_id, correspondent) DO UPDATE SET
        first_contact = least(k.first_contact, excluded.first_contact),
        last_contact = greatest(k.last_contact, excluded.last_contact),
        received = k.received + excluded.received, sent = k.sent + excluded.sent,
        automated_received = k.automated_received + excluded.automated_received,
        hours = metrics_array_add(k.hours, excluded.hours)
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

# Replies, after the fold (it must see the rows just indexed). $1 account, $2 the newly
# indexed keys, $3 time zone. Candidates: the new messages, indexed messages naming a new
# one as parent, and parentless messages in a new message's Gmail thread; none matched yet.
_REPLIES = r"""
WITH threads AS (
    SELECT DISTINCT gm_thread_id FROM message_index
    WHERE account_id = $1 AND msg_key = ANY($2::bytea[]) AND gm_thread_id IS NOT NULL
), cand AS (
    SELECT m.msg_key, m.direction, m.sent_at, m.correspondents, m.parent_keys, m.gm_thread_id
    FROM message_index m
    WHERE m.account_id = $1
      AND (m.msg_key = ANY($2::bytea[]) OR m.parent_keys && $2::bytea[]
           OR (cardinality(m.parent_keys) = 0 AND m.gm_thread_id IN (SELECT gm_thread_id FROM threads)))
      AND NOT EXISTS (SELECT 1 FROM message_replies r WHERE r.account_id = $1 AND r.msg_key = m.msg_key)
), by_id AS (
    SELECT DISTINCT ON (c.msg_key) c.msg_key, p.msg_key AS parent_key, c.direction, c.sent_at AS answered_at,
           p.sent_at AS asked_at, c.correspondents AS own_people, p.correspondents AS parent_people
    FROM cand c CROSS JOIN LATERAL unnest(c.parent_keys) AS parent (msg_key)
         -- by primary key, one parent at a time (never a scan of the account's index)
         JOIN message_index p ON p.account_id = $1 AND p.msg_key = parent.msg_key AND p.direction <> c.direction
    ORDER BY c.msg_key, (p.sent_at <= c.sent_at) DESC, CASE WHEN p.sent_at <= c.sent_at THEN p.sent_at END DESC,
             p.sent_at, p.msg_key
), by_thread AS (
    SELECT DISTINCT ON (c.msg_key) c.msg_key, p.msg_key AS parent_key, c.direction, c.sent_at AS answered_at,
           p.sent_at AS asked_at, c.correspondents AS own_people, p.correspondents AS parent_people
    FROM cand c JOIN message_index p ON p.account_id = $1 AND p.gm_thread_id = c.gm_thread_id
                                     AND p.direction <> c.direction AND p.sent_at < c.sent_at
    WHERE cardinality(c.parent_keys) = 0
    ORDER BY c.msg_key, p.sent_at DESC, p.msg_key
), replies AS (
    INSERT INTO message_replies (account_id, msg_key, parent_key, direction, correspondent, asked_at, answered_at,
                                 seconds)
    SELECT $1, msg_key, parent_key, CASE WHEN direction = 'sent' THEN 'yours' ELSE 'theirs' END,
           CASE WHEN direction = 'sent' THEN parent_people[1] ELSE own_people[1] END, asked_at, answered_at,
           least(greatest(extract(epoch FROM answered_at - asked_at), 0), 2147483647)::integer
    FROM (SELECT * FROM by_id UNION ALL SELECT * FROM by_thread) AS matched
    ON CONFLICT (account_id, msg_key) DO NOTHING
    RETURNING direction, correspondent, seconds, (answered_at AT TIME ZONE $3::text)::date AS day
), per_day AS (
    INSERT INTO account_daily AS d (account_id, day, received_by_hour, sent_by_hour, your_reply_seconds,
                                    their_reply_seconds)
    SELECT $1, day, array_fill(0, ARRAY[24]), array_fill(0, ARRAY[24]),
           coalesce(array_agg(seconds) FILTER (WHERE direction = 'yours'), '{}'),
           coalesce(array_agg(seconds) FILTER (WHERE direction = 'theirs'), '{}')
    FROM replies GROUP BY day
    ON CONFLICT (account_id, day) DO UPDATE SET
        your_reply_seconds = d.your_reply_seconds || excluded.your_reply_seconds,
        their_reply_seconds = d.their_reply_seconds || excluded.their_reply_seconds
), per_person AS (
    -- A reply counts for its correspondent even on a day they had no message (you answered
    -- them to someone else): such a row has no messages and is not an active day.
    INSERT INTO correspondent_daily AS d (account_id, correspondent, day, your_reply_seconds, their_reply_seconds)
    SELECT $1, correspondent, day, coalesce(array_agg(seconds) FILTER (WHERE direction = 'yours'), '{}'),
           coalesce(array_agg(seconds) FILTER (WHERE direction = 'theirs'), '{}')
    FROM replies WHERE correspondent IS NOT NULL GROUP BY correspondent, day
    ON CONFLICT (account_id, correspondent, day) DO UPDATE SET
        your_reply_seconds = d.your_reply_seconds || excluded.your_reply_seconds,
        their_reply_seconds = d.their_reply_seconds || excluded.their_reply_seconds
)
SELECT ARRAY(SELECT DISTINCT correspondent FROM replies WHERE correspondent IS NOT NULL) AS people
"""

# $1 account, $2 the newly indexed keys, $3 fewest other verdicts, $4 the usual pass rate.
_FLAGS = """
INSERT INTO auth_flags (account_id, msg_key, domain, correspondent, sent_at, failed)
SELECT $1, m.msg_key, m.from_domain, m.correspondents[1], m.sent_at, f.failed
FROM message_index m JOIN sender_domains d ON d.account_id = $1 AND d.domain = m.from_domain
CROSS JOIN LATERAL (
    SELECT ARRAY(SELECT v.name FROM (VALUES (1, 'dkim', m.dkim, d.dkim_checked, d.dkim_pass),
                                            (2, 'spf', m.spf, d.spf_checked, d.spf_pass),
                                            (3, 'dmarc', m.dmarc, d.dmarc_checked, d.dmarc_pass))
                                    AS v (n, name, verdict, checked, passed)
                 WHERE v.verdict <> 'pass' AND v.checked - 1 >= $3 AND v.passed::float8 / (v.checked - 1) >= $4
                 ORDER BY v.n) AS failed) AS f
WHERE m.account_id = $1 AND m.msg_key = ANY($2::bytea[]) AND m.direction = 'received'
  AND cardinality(m.correspondents) > 0 AND cardinality(f.failed) > 0
ON CONFLICT (account_id, msg_key) DO NOTHING
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
        await conn.execute(_LOCK, account_id)
        row = await conn.fetchrow(_FOLD, account_id, batch_size, account["time_zone"], account["address"])
        await _recount(conn, account_id, frozenset(row["days"]))
        people = set(row["people"])
        if row["new_keys"]:
            people.update(await conn.fetchval(_REPLIES, account_id, row["new_keys"], account["time_zone"]))
            await conn.execute(_FLAGS, account_id, row["new_keys"], USUAL_MIN_CHECKED, USUAL_PASS_RATE)
        if people:
            await conn.execute("UPDATE contacts SET version = nextval('contacts_version_seq') "
                               "WHERE account_id = $1 AND correspondent = ANY($2::text[])", account_id, sorted(people))
        if hours is not None:
            await _business_seconds(conn, account_id, account["time_zone"], hours)
        result = FoldResult(int(row["taken"]), int(row["folded"]), frozenset(row["days"]), frozenset(people))
        await conn.execute(_RECORD, account_id, result.folded, result.duplicates)
    return result


def business_key(zone: str, hours: WorkingHours) -> str:
    """What stored business_seconds were worked out in, say "Europe/Berlin 09:00:00-17:00:00 01234"."""
    return f"{zone} {hours.start.isoformat()}-{hours.end.isoformat()} {''.join(map(str, sorted(hours.weekdays)))}"


BUSINESS_BATCH = 20_000  # replies worked out per fold batch (after a change of hours, the rest come next time)


async def _business_seconds(conn: asyncpg.Connection, account_id: int, zone: str, hours: WorkingHours) -> None:
    """Within the batch's transaction: the working-hours time of the replies that have none
    yet (all of them after the account's zone or the working hours changed), at most
    BUSINESS_BATCH at a time; until all have one, cards work them out when read."""
    key = business_key(zone, hours)
    if await conn.fetchval("SELECT business_hours FROM metrics_state WHERE account_id = $1", account_id) != key:
        await conn.execute("UPDATE message_replies SET business_seconds = NULL "
                           "WHERE account_id = $1 AND business_seconds IS NOT NULL", account_id)
        await conn.execute("UPDATE metrics_state SET business_hours = $2 WHERE account_id = $1", account_id, key)
    todo = await conn.fetch("SELECT msg_key, asked_at, answered_at FROM message_replies "
                            "WHERE account_id = $1 AND business_seconds IS NULL LIMIT $2", account_id, BUSINESS_BATCH)
    if todo:
        clock = WorkingClock(zone, hours)
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
