"""PostgreSQL: replies matched to their parents, and auth flags, as each fold batch indexes
new messages (``rollups`` calls ``fold`` inside the batch's transaction, after its fold
statement: it must see the rows just indexed and the sender domains' new counts).

A reply is a message whose In-Reply-To (or last References) names a message of the other
direction, or, without either, the latest earlier message of the other direction in its
Gmail thread (docs/insights.md). Either may be folded first: the new messages look for
their parents, and the messages already indexed that name a new one (``reply_parents``,
migration 014) find it. Every lookup is one index probe per key, so a fold's cost follows
its new rows, not the account's index (tests/metrics/test_fold_plans_functional.py).
"""

from __future__ import annotations

import asyncpg

from inboxlens.metrics.insights import WorkingClock
from inboxlens.metrics.model import USUAL_MIN_CHECKED, USUAL_PASS_RATE

# Replies and auth flags, after the fold (it must see the rows just indexed and the domains'
# counts). $1 account, $2 the newly indexed keys. Candidates for replies: the new messages,
# indexed messages naming a new one as parent, and parentless messages in a new message's
# Gmail thread. Each lookup is a LATERAL subquery the planner cannot turn inside out (LIMIT
# or OFFSET 0 keeps it apart): one probe of an index per key, whatever it believes about
# the tables' sizes, where a join left free ran as a scan of the account's index per fold,
# or per key. It answers the replies found, to be stored with their working-hours time.
_MESSAGE = """(SELECT msg_key, direction, sent_at, correspondents, parent_keys, gm_thread_id FROM message_index
             WHERE account_id = $1 AND msg_key = {key} LIMIT 1)"""
MATCH = r"""
WITH fresh AS (
    SELECT m.* FROM unnest($2::bytea[]) AS n (key)
    CROSS JOIN LATERAL (SELECT msg_key, direction, sent_at, correspondents, parent_keys, gm_thread_id, from_domain,
                               dkim, spf, dmarc FROM message_index WHERE account_id = $1 AND msg_key = n.key LIMIT 1) AS m
), cand AS (
    SELECT msg_key, direction, sent_at, correspondents, parent_keys, gm_thread_id FROM fresh
    UNION
    SELECT m.* FROM unnest($2::bytea[]) AS n (key)
    CROSS JOIN LATERAL (SELECT msg_key FROM reply_parents WHERE account_id = $1 AND parent_key = n.key OFFSET 0) AS r
    CROSS JOIN LATERAL """ + _MESSAGE.format(key="r.msg_key") + r""" AS m
    UNION
    SELECT m.* FROM (SELECT DISTINCT gm_thread_id FROM fresh WHERE gm_thread_id IS NOT NULL) AS t
    CROSS JOIN LATERAL (SELECT msg_key, direction, sent_at, correspondents, parent_keys, gm_thread_id
                        FROM message_index WHERE account_id = $1 AND gm_thread_id = t.gm_thread_id
                                                 AND cardinality(parent_keys) = 0 OFFSET 0) AS m
), by_id AS (
    -- of its parents of the other direction: the latest sent before it, else the first after
    SELECT c.msg_key, p.msg_key AS parent_key, c.direction, c.sent_at AS answered_at, p.sent_at AS asked_at,
           c.correspondents AS own_people, p.correspondents AS parent_people
    FROM cand c CROSS JOIN LATERAL (
        SELECT p.* FROM unnest(c.parent_keys) AS k (key) CROSS JOIN LATERAL """ + _MESSAGE.format(key="k.key") + r""" AS p
        WHERE p.direction <> c.direction
        ORDER BY (p.sent_at <= c.sent_at) DESC, CASE WHEN p.sent_at <= c.sent_at THEN p.sent_at END DESC,
                 p.sent_at, p.msg_key
        LIMIT 1) AS p
), by_thread AS (
    SELECT c.msg_key, p.msg_key AS parent_key, c.direction, c.sent_at AS answered_at, p.sent_at AS asked_at,
           c.correspondents AS own_people, p.correspondents AS parent_people
    FROM cand c CROSS JOIN LATERAL (
        SELECT msg_key, sent_at, correspondents FROM message_index
        WHERE account_id = $1 AND gm_thread_id = c.gm_thread_id AND direction <> c.direction AND sent_at < c.sent_at
        ORDER BY sent_at DESC, msg_key LIMIT 1) AS p
    WHERE cardinality(c.parent_keys) = 0
), flags AS (
    -- new messages that fail a check their domain usually passes ($3 fewest other verdicts,
    -- $4 the usual pass rate); sender_domains counts them already (the fold ran before)
    INSERT INTO auth_flags (account_id, msg_key, domain, correspondent, sent_at, failed)
    SELECT $1, m.msg_key, m.from_domain, m.correspondents[1], m.sent_at, f.failed
    FROM fresh m
    CROSS JOIN LATERAL (SELECT * FROM sender_domains WHERE account_id = $1 AND domain = m.from_domain LIMIT 1) AS d
    CROSS JOIN LATERAL (
        SELECT ARRAY(SELECT v.name FROM (VALUES (1, 'dkim', m.dkim, d.dkim_checked, d.dkim_pass),
                                                (2, 'spf', m.spf, d.spf_checked, d.spf_pass),
                                                (3, 'dmarc', m.dmarc, d.dmarc_checked, d.dmarc_pass))
                                        AS v (n, name, verdict, checked, passed)
                     WHERE v.verdict <> 'pass' AND v.checked - 1 >= $3 AND v.passed::float8 / (v.checked - 1) >= $4
                     ORDER BY v.n) AS failed) AS f
    WHERE m.direction = 'received' AND cardinality(m.correspondents) > 0 AND cardinality(f.failed) > 0
    ON CONFLICT (account_id, msg_key) DO NOTHING
)
SELECT msg_key, parent_key, CASE WHEN direction = 'sent' THEN 'yours' ELSE 'theirs' END AS direction,
       CASE WHEN direction = 'sent' THEN parent_people[1] ELSE own_people[1] END AS correspondent, asked_at, answered_at,
       least(greatest(extract(epoch FROM answered_at - asked_at), 0), 2147483647)::integer AS seconds
FROM (SELECT * FROM by_id UNION ALL SELECT * FROM by_thread) AS matched
"""

# The replies matched, stored: $1 account, $2..$9 their columns, $10 time zone. A reply
# matched before (a thread's parentless message, again) conflicts and counts nothing.
ANSWER = r"""
WITH replies AS (
    INSERT INTO message_replies (account_id, msg_key, parent_key, direction, correspondent, asked_at, answered_at,
                                 seconds, business_seconds)
    SELECT $1, r.* FROM unnest($2::bytea[], $3::bytea[], $4::text[], $5::text[], $6::timestamptz[],
                               $7::timestamptz[], $8::integer[], $9::float8[]) AS r
    ON CONFLICT (account_id, msg_key) DO NOTHING
    RETURNING direction, correspondent, seconds, (answered_at AT TIME ZONE $10::text)::date AS day
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


async def fold(conn: asyncpg.Connection, account_id: int, new_keys: list[bytes], zone: str,
               clock: WorkingClock | None) -> set[str]:
    """Match and store the replies among and to the new messages (with their working-hours
    time when there is a clock) and flag the new messages; the correspondents whose reply
    times changed."""
    found = await conn.fetch(MATCH, account_id, new_keys, USUAL_MIN_CHECKED, USUAL_PASS_RATE)
    if not found:
        return set()
    columns = [[r[i] for r in found] for i in range(len(found[0]))]
    business = [clock.between(r["asked_at"], r["answered_at"]) for r in found] if clock else [None] * len(found)
    return set(await conn.fetchval(ANSWER, account_id, *columns, business, zone))
