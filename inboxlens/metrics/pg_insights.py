"""PostgreSQL: the insights read from what ``rollups`` folded (docs/insights.md).

What does not depend on "now" was kept up to date by the fold, for the touched
correspondents only (``contacts``, ``message_replies``, ``sender_domains``,
``auth_flags``); volumes in the last N days, strength and owed replies are computed
here, when asked, with the formulas in ``insights``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from . import insights
from .model import (AuthFlag, Card, CheckCount, DomainAuth, InsightSettings, Order, Pending, Relationship,
                    ReplyStats)

# $1 account, $2 today (local), $3 one correspondent or NULL.
_RELATIONSHIPS = """
SELECT k.correspondent, k.first_contact, k.last_contact, k.received, k.sent, k.automated_received, k.hours,
       coalesce(sum(d.received + d.sent) FILTER (WHERE d.day > $2::date - 30), 0) AS last_30,
       coalesce(sum(d.received + d.sent) FILTER (WHERE d.day > $2::date - 90), 0) AS last_90,
       coalesce(sum(d.received + d.sent), 0) AS last_365,
       coalesce(sum(d.sent), 0) AS sent_365, coalesce(sum(d.received), 0) AS received_365
FROM contacts k
LEFT JOIN correspondent_daily d ON d.account_id = k.account_id AND d.correspondent = k.correspondent
                                AND d.day > $2::date - 365 AND d.day <= $2::date
WHERE k.account_id = $1 AND ($3::text IS NULL OR k.correspondent = lower($3))
GROUP BY k.account_id, k.correspondent
"""

# $1 account, $2 oldest, $3 newest, $4 'received' (owed) or 'sent' (awaiting), $5 correspondent or NULL.
_PENDING = """
SELECT m.msg_key, coalesce($5, m.correspondents[1]) AS correspondent, m.sent_at
FROM message_index m
WHERE m.account_id = $1 AND m.direction = $4 AND cardinality(m.correspondents) > 0
  AND m.sent_at BETWEEN $2 AND $3 AND ($4 = 'sent' OR NOT m.automated)
  AND ($5::text IS NULL OR $5 = ANY(m.correspondents))
  AND NOT EXISTS (SELECT 1 FROM message_index r
                  WHERE r.parent_keys @> ARRAY[m.msg_key] AND r.account_id = $1 AND r.direction <> $4)
  AND NOT EXISTS (SELECT 1 FROM message_index r
                  WHERE m.gm_thread_id IS NOT NULL AND r.account_id = $1 AND r.gm_thread_id = m.gm_thread_id
                    AND r.direction <> $4 AND r.sent_at > m.sent_at)
ORDER BY m.sent_at, m.msg_key
"""

_DOMAINS = """
SELECT domain, messages, dkim_checked, dkim_pass, spf_checked, spf_pass, dmarc_checked, dmarc_pass, last_seen
FROM sender_domains WHERE account_id = $1 AND ($2::text IS NULL OR domain = $2) ORDER BY messages DESC, domain
"""

_FLAGS = """
SELECT msg_key, domain, correspondent, sent_at, failed FROM auth_flags
WHERE account_id = $1 AND ($3::text IS NULL OR correspondent = $3) ORDER BY sent_at DESC, msg_key LIMIT $2
"""


class PgInsights:
    def __init__(self, pool: asyncpg.Pool, settings: InsightSettings) -> None:
        self.pool = pool
        self.settings = settings

    async def relationships(self, account_id: int, *, now: datetime, order: Order = "strength", limit: int = 50,
                            offset: int = 0) -> list[Relationship]:
        found = await self._relationships(account_id, now, None)
        return sorted(found, key=_ORDERS[order])[offset:offset + limit]

    async def card(self, account_id: int, correspondent: str, *, now: datetime) -> Card | None:
        who = correspondent.lower()
        found = await self._relationships(account_id, now, who)
        if not found:
            return None
        domain = who.rpartition("@")[2]
        domains = await self.sender_domains(account_id, domain) if domain else []
        return Card(found[0], await self.reply_stats(account_id, who),
                    tuple(await self._pending(account_id, now, "received", who)),
                    tuple(await self._pending(account_id, now, "sent", who)),
                    domains[0] if domains else None, tuple(await self.auth_flags(account_id, correspondent=who)))

    async def reply_stats(self, account_id: int, correspondent: str) -> ReplyStats:
        zone = await self._time_zone(account_id)
        rows = await self.pool.fetch("SELECT direction, asked_at, answered_at FROM message_replies "
                                     "WHERE account_id = $1 AND correspondent = $2", account_id, correspondent)
        return insights.reply_stats(((r["direction"], r["asked_at"], r["answered_at"]) for r in rows), zone,
                                    self.settings.working_hours)

    async def owed(self, account_id: int, *, now: datetime) -> list[Pending]:
        return await self._pending(account_id, now, "received", None)

    async def awaiting(self, account_id: int, *, now: datetime) -> list[Pending]:
        return await self._pending(account_id, now, "sent", None)

    async def sender_domains(self, account_id: int, domain: str | None = None) -> list[DomainAuth]:
        rows = await self.pool.fetch(_DOMAINS, account_id, domain)
        return [DomainAuth(r["domain"], r["messages"], CheckCount(r["dkim_checked"], r["dkim_pass"]),
                           CheckCount(r["spf_checked"], r["spf_pass"]), CheckCount(r["dmarc_checked"], r["dmarc_pass"]),
                           r["last_seen"]) for r in rows]

    async def auth_flags(self, account_id: int, *, limit: int = 100, correspondent: str | None = None) -> list[AuthFlag]:
        rows = await self.pool.fetch(_FLAGS, account_id, limit, correspondent)
        return [AuthFlag(r["msg_key"].hex(), r["domain"], r["correspondent"], r["sent_at"], tuple(r["failed"]))
                for r in rows]

    async def _relationships(self, account_id: int, now: datetime, correspondent: str | None) -> list[Relationship]:
        today = now.astimezone(ZoneInfo(await self._time_zone(account_id))).date()
        rows = await self.pool.fetch(_RELATIONSHIPS, account_id, today, correspondent)
        return [_relationship(r, now) for r in rows]

    async def _pending(self, account_id: int, now: datetime, direction: str, who: str | None) -> list[Pending]:
        wait = self.settings.owed_after if direction == "received" else self.settings.awaiting_after
        rows = await self.pool.fetch(_PENDING, account_id, now - self.settings.lookback, now - wait, direction, who)
        return [Pending(r["msg_key"].hex(), r["correspondent"], r["sent_at"], now - r["sent_at"]) for r in rows]

    async def _time_zone(self, account_id: int) -> str:
        return str(await self.pool.fetchval("SELECT time_zone FROM mail_accounts WHERE id = $1", account_id) or "UTC")


def _relationship(r: Any, now: datetime) -> Relationship:
    automated = r["automated_received"] * 2 > r["received"]
    balance = insights.reciprocity(int(r["sent_365"]), int(r["received_365"]))
    since = (now - r["last_contact"]) / timedelta(days=1)
    score = insights.strength(int(r["last_30"]), int(r["last_90"]), int(r["last_365"]), balance, since, automated)
    return Relationship(r["correspondent"], r["first_contact"], r["last_contact"], r["received"], r["sent"],
                        int(r["last_30"]), int(r["last_90"]), int(r["last_365"]), round(balance, 4), score,
                        tuple(r["hours"]), automated)


_ORDERS: dict[str, Any] = {
    "strength": lambda r: (-r.strength, -r.last_contact.timestamp(), r.correspondent),
    "recency": lambda r: (-r.last_contact.timestamp(), r.correspondent),
    "volume": lambda r: (-r.last_365, -(r.received + r.sent), r.correspondent),
}
