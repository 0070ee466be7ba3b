"""MetricsStore on Apache Cassandra: raw rows in, rollups and insights out, on several nodes.

Config ([metrics]): backend = "cassandra", cassandra_hosts ("host" or "host:port"),
cassandra_keyspace, cassandra_username/cassandra_password (never logged), cassandra_local_dc,
cassandra_replication_factor (used by ``migrate_cassandra`` only), cassandra_timeout_seconds.
Schema: ``cassandra.cql`` beside this file; docs/cassandra.md explains every table.

Exactly-once without transactions. No number is ever incremented (a counter update
retried after a timeout counts twice). Instead every number is a row recomputed whole from
a bounded partition of the message index and overwritten, and every step of a fold is an
idempotent upsert keyed by the message:

1. read the account's raw rows (the 8 day buckets a 7-day TTL can leave alive);
2. upsert each message not ``complete`` yet into ``message_index`` (by account, msg_key)
   and the per-day, per-thread, per-parent, per-correspondent-year and per-domain-year
   index partitions;
3. recompute the reply rows (keyed by the reply's msg_key) of every message whose parent
   may have changed, and mark answered messages (only ever set to true);
4. recompute every touched local day's rollup rows from its index and reply partitions;
5. recompute the touched contact summaries and per-domain authentication counts;
6. decide the new messages' authentication flags; 7. mark them ``complete``;
8. only then delete the folded raw rows.

A crash anywhere leaves the raw rows and the incomplete index rows, and the next run
repeats the idempotent steps for them: the same rows, the same values. A message harvested
again after its fold finds a ``complete`` index row and changes nothing (its flags are not
decided twice). Two folds of one account at once (harvest leases an account to one
worker, so only by accident) still converge: recomputed rows are written with the
timestamp of the moment their inputs were read, so the later reader, which saw everything
the earlier one saw, wins.

``write_raw`` counts as new the rows whose msg_key no live raw bucket holds yet (one
read per bucket per 100 keys), and writes only those, so the first harvest of a message
wins as in PostgreSQL; two writers racing on one message may both count it (the fold
still counts it once). ``sweep`` deletes nothing: the TTL expires raw rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Literal, Sequence
from zoneinfo import ZoneInfo

from inboxlens.metrics.cassandra.aggregate import fold, take
from inboxlens.metrics.cassandra.contacts import ContactYear, page, relationship
from inboxlens.metrics.cassandra.fold import (CorrespondentDay, DayRow, Entry, correspondent_periods, day_rollup, domain_of, domain_total, from_us, live_raw_buckets, local_days, months, period_end, period_start, raw_bucket, still_waiting, sum_periods, thread_of, to_us)
from inboxlens.metrics.cassandra.session import (SCHEMA_FILE, CassandraUnavailable, CqlSession, Row, connect, gather_bounded, keyspace_cql, schema_statements)
from inboxlens.metrics.cassandra.statements import (STATEMENTS, as_date, contact_from, correspondent_day_from, day_row_from, domain_year_from, entry_from, raw_params)
from inboxlens.metrics.insights import reply_stats
from inboxlens.metrics.model import (AccountRef, AuthFlag, Card, CorrespondentRollup, DayRollup, DomainAuth, FoldResult, InsightSettings, Order, Pending, Period, PeriodRollup, RawRow, Relationship)
from inboxlens.metrics.store import DEFAULT_BATCH
from inboxlens.config.schema import MetricsConfig

__all__ = ["CassandraMetricsStore", "CassandraUnavailable", "migrate_cassandra", "open_cassandra"]

IN_KEYS = 100  # msg_keys per "IN ?" read: one partition, a bounded clustering-key list


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class CassandraMetricsStore:
    def __init__(self, cql: CqlSession, settings: InsightSettings,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self._cql = cql
        self._settings = settings
        self._clock = clock

    # -- writing --------------------------------------------------------------------------------

    async def write_raw(self, rows: Sequence[RawRow]) -> int:
        by_account: dict[int, dict[bytes, RawRow]] = defaultdict(dict)
        for row in rows:
            by_account[row.account_id].setdefault(row.msg_key, row)
        return sum([await self._write_account_raw(a, list(r.values())) for a, r in by_account.items()])

    async def _write_account_raw(self, account_id: int, rows: list[RawRow]) -> int:
        now = self._clock()
        held = await self._raw_keys(account_id, [r.msg_key for r in rows], now)
        new = [r for r in rows if r.msg_key not in held]
        bucket = raw_bucket(now)
        await self._cql.each("put_raw", [raw_params(r, bucket, to_us(r.sent_at), to_us(r.internal_date)) for r in new])
        return len(new)

    async def _raw_keys(self, account_id: int, keys: list[bytes], now: datetime) -> set[bytes]:
        reads = [(b, keys[i:i + IN_KEYS]) for b in live_raw_buckets(now) for i in range(0, len(keys), IN_KEYS)]
        found = await gather_bounded(reads, lambda r: self._cql.rows("raw_keys", account_id, r[0], r[1]))
        return {bytes(row["msg_key"]) for rows in found for row in rows}

    async def aggregate(self, account: AccountRef, *, batch_size: int = DEFAULT_BATCH) -> FoldResult:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        await self._cql.run("put_account", account.id, account.address.lower(), account.time_zone)
        total = FoldResult()
        while True:
            batch = await take(self._cql, account.id, batch_size, self._clock())
            if batch:
                total += await fold(self._cql, account, batch)
            if len(batch) < batch_size:
                return total

    # -- rollups --------------------------------------------------------------------------------

    async def daily(self, account_id: int, first: date, last: date) -> list[DayRollup]:
        return [day_rollup(d) for d in await self._days(account_id, first, last)]

    async def weekly(self, account_id: int, first: date, last: date) -> list[PeriodRollup]:
        return await self._periods(account_id, first, last, "week")

    async def monthly(self, account_id: int, first: date, last: date) -> list[PeriodRollup]:
        return await self._periods(account_id, first, last, "month")

    async def _periods(self, account_id: int, first: date, last: date, period: Period) -> list[PeriodRollup]:
        end = period_end(period_start(last, period), period)
        days, people = await self._days(account_id, first, end), await self._people(account_id, first, end)
        return [p for p in sum_periods(days, people, period) if first <= p.start <= last]

    async def correspondents(self, account_id: int, first: date, last: date, period: Period = "day",
                             correspondent: str | None = None) -> list[CorrespondentRollup]:
        people = await self._people(account_id, first, period_end(period_start(last, period), period))
        if correspondent is not None:
            people = [p for p in people if p.correspondent == correspondent.lower()]
        return [c for c in correspondent_periods(people, period) if first <= c.start <= last]

    async def _days(self, account_id: int, first: date, last: date) -> list[DayRow]:
        found = await gather_bounded(range(first.year, last.year + 1),
                                     lambda y: self._cql.rows("day_rollups", account_id, y, first, last))
        return sorted((day_row_from(r) for rows in found for r in rows), key=lambda d: d.day)

    async def _people(self, account_id: int, first: date, last: date) -> list[CorrespondentDay]:
        found = await gather_bounded(months(first, last),
                                     lambda m: self._cql.rows("correspondent_days", account_id, m, first, last))
        return [correspondent_day_from(r) for rows in found for r in rows]

    # -- relationships and cards ----------------------------------------------------------------

    async def relationships(self, account_id: int, *, now: datetime, order: Order = "strength",
                            limit: int = 50, offset: int = 0) -> list[Relationship]:
        account = await self._account(account_id)
        if account is None:
            return []
        today = now.astimezone(ZoneInfo(account.time_zone)).date()
        years: dict[str, list[ContactYear]] = defaultdict(list)
        for row in await self._cql.rows("contacts", account_id):
            years[row["correspondent"]].append(contact_from(row))
        recent: dict[str, list[CorrespondentDay]] = defaultdict(list)
        for day in await self._people(account_id, today - timedelta(days=364), today):
            recent[day.correspondent].append(day)
        return page([relationship(y, recent[c], now, today) for c, y in years.items()], order, limit, offset)

    async def card(self, account_id: int, correspondent: str, *, now: datetime) -> Card | None:
        account, who = await self._account(account_id), correspondent.lower()
        years = [contact_from(r) for r in await self._cql.rows("contact", account_id, who)]
        if account is None or not years:
            return None
        today = now.astimezone(ZoneInfo(account.time_zone)).date()
        recent = [d for d in await self._people(account_id, today - timedelta(days=364), today)
                  if d.correspondent == who]
        replies = await self._replies(account_id, who, range(min(y.year for y in years), today.year + 1))
        domain = domain_of(who)
        return Card.capped(relationship(years, recent, now, today),
                           reply_stats(replies, account.time_zone, self._settings.working_hours),
                           await self._pending(account_id, now, "received", self._settings.owed_after, who),
                           await self._pending(account_id, now, "sent", self._settings.awaiting_after, who),
                           await self._domain(account_id, domain) if domain else None,
                           [f for f in await self._flags(account_id, None) if f.correspondent == who])

    async def _replies(self, account_id: int, who: str, years: range) -> list[tuple[str, datetime, datetime]]:
        found = await gather_bounded(years, lambda y: self._cql.rows("contact_replies", account_id, who, y))
        return [(r["direction"], from_us(r["asked_us"]), from_us(r["answered_us"])) for rows in found for r in rows]

    async def _account(self, account_id: int) -> AccountRef | None:
        rows = await self._cql.rows("account", account_id)
        return AccountRef(account_id, rows[0]["address"], rows[0]["time_zone"]) if rows else None

    # -- owed and awaiting ----------------------------------------------------------------------

    async def owed(self, account_id: int, *, now: datetime) -> list[Pending]:
        return await self._pending(account_id, now, "received", self._settings.owed_after)

    async def awaiting(self, account_id: int, *, now: datetime) -> list[Pending]:
        return await self._pending(account_id, now, "sent", self._settings.awaiting_after)

    async def _pending(self, account_id: int, now: datetime, direction: Literal["sent", "received"],
                       after: timedelta, who: str | None = None) -> list[Pending]:
        """Oldest first; for a card (who), only those with them as correspondent, as in the lists."""
        account = await self._account(account_id)
        window = _Window(to_us(now - self._settings.lookback), to_us(now - after), direction, who)
        if account is None or window.first_us > window.last_us:
            return []
        days = local_days(from_us(window.first_us), from_us(window.last_us), account.time_zone)
        found = await gather_bounded(days, lambda d: self._day_entries(account_id, d))
        candidates = sorted((e for entries in found for e in entries if window.holds(e)),
                            key=lambda e: (e.sent_us, e.msg_key))
        waiting = await gather_bounded(candidates, lambda e: self._still_waiting(account_id, e))
        return [Pending(e.msg_key.hex(), e.correspondents[0], e.sent_at, now - e.sent_at, e.message_id)
                for e, still in zip(candidates, waiting) if still]

    async def _day_entries(self, account_id: int, day: date) -> list[Entry]:
        """A day's messages, with their thread key, To/Cc and Message-ID where day_threads has them."""
        rows = await self._cql.rows("day_messages", account_id, day)
        threads = {bytes(r["msg_key"]): r for r in await self._cql.rows("day_threads", account_id, day)}
        return [_with_thread(entry_from(r), threads.get(bytes(r["msg_key"]))) for r in rows]

    async def _still_waiting(self, account_id: int, e: Entry) -> bool:
        """One single-row read per direction of its thread (docs/insights.md)."""
        async def latest(direction: str) -> tuple[int, bytes] | None:
            rows = await self._cql.rows("thread_latest", account_id, thread_of(e), direction, limit=1)
            return (int(rows[0]["sent_us"]), bytes(rows[0]["msg_key"])) if rows else None
        return still_waiting(e, await latest("sent"), None if e.direction == "received" else await latest("received"))

    # Cassandra cannot count or skip rows server-side here: the pages are cut from the whole list.
    async def owed_page(self, account_id: int, *, now: datetime, limit: int, offset: int = 0
                        ) -> tuple[list[Pending], int]:
        found = await self.owed(account_id, now=now)
        return found[offset:offset + limit], len(found)

    async def awaiting_page(self, account_id: int, *, now: datetime, limit: int, offset: int = 0
                            ) -> tuple[list[Pending], int]:
        found = await self.awaiting(account_id, now=now)
        return found[offset:offset + limit], len(found)

    async def sender_domains_page(self, account_id: int, *, limit: int, offset: int = 0
                                  ) -> tuple[list[DomainAuth], int]:
        found = await self.sender_domains(account_id)
        return found[offset:offset + limit], len(found)

    # -- sender authenticity --------------------------------------------------------------------

    async def sender_domains(self, account_id: int) -> list[DomainAuth]:
        years = defaultdict(list)
        for row in await self._cql.rows("domain_years", account_id):
            years[row["domain"]].append(domain_year_from(row))
        return sorted((domain_total(y) for y in years.values()), key=lambda d: (-d.messages, d.domain))

    async def _domain(self, account_id: int, domain: str) -> DomainAuth | None:
        rows = await self._cql.rows("domain_year_rows", account_id, domain)
        return domain_total([domain_year_from(r) for r in rows]) if rows else None

    async def auth_flags(self, account_id: int, *, limit: int = 100) -> list[AuthFlag]:
        return await self._flags(account_id, limit)

    async def _flags(self, account_id: int, limit: int | None) -> list[AuthFlag]:
        """Newest first: year partitions newest first, each clustered by sent_us descending."""
        flags: list[AuthFlag] = []
        for year in sorted(await self._years(account_id), reverse=True):
            if limit is not None and len(flags) >= limit:
                break
            rows = await self._cql.rows("flags", account_id, year, limit=None if limit is None else limit - len(flags))
            flags += [AuthFlag(bytes(r["msg_key"]).hex(), r["domain"], r["correspondent"], from_us(r["sent_us"]),
                               tuple(r["failed"] or ())) for r in rows]
        return flags

    async def _years(self, account_id: int) -> set[int]:
        return {as_date(r["day"]).year for r in await self._cql.rows("days", account_id)}

    # -- lifecycle ------------------------------------------------------------------------------

    async def forget_account(self, account_id: int) -> None:
        """Every partition of the account, found from the day registry; the registry goes last."""
        days = [as_date(r["day"]) for r in await self._cql.rows("days", account_id)]
        walk = _Walk()
        for found in await gather_bounded(days, lambda d: self._walk_day(account_id, d)):
            walk.add(found)
        walk.add_summaries(await self._cql.rows("contacts", account_id), await self._cql.rows("domain_years", account_id))
        for table, keys in walk.partitions(days, live_raw_buckets(self._clock())):
            await self._cql.each(f"drop_{table}", [(account_id, *k) for k in keys])

    async def _walk_day(self, account_id: int, day: date) -> tuple[list[Entry], list[tuple[str, int]]]:
        entries = await self._day_entries(account_id, day)
        replies = [(r["correspondent"], day.year) for r in await self._cql.rows("day_replies", account_id, day)
                   if r["correspondent"]]
        return entries, replies

    async def sweep(self, now: datetime | None = None) -> int:
        """Nothing to do: raw rows expire by their table's TTL (7 days), unseen and uncounted."""
        return 0

    async def close(self) -> None:
        await self._cql.close()


@dataclass(frozen=True)
class _Window:
    first_us: int
    last_us: int
    direction: Literal["sent", "received"]
    who: str | None = None

    def holds(self, e: Entry) -> bool:
        """Not answered directly, in the window, to or from someone; owed ones from a person (not
        a machine) to you (To or Cc; unknown before day_threads); for a card, with them first."""
        received = e.direction == "received"
        return (e.direction == self.direction and not e.answered and bool(e.correspondents)
                and self.first_us <= e.sent_us <= self.last_us and not (received and (e.automated or e.to_me is False))
                and (self.who is None or self.who == e.correspondents[0]))


def _with_thread(e: Entry, row: Row | None) -> Entry:
    if row is None:
        return e
    return replace(e, thread_key=bytes(row["thread_key"]) if row["thread_key"] is not None else None,
                   to_me=row["to_me"], message_id=row["message_id"])


@dataclass
class _Walk:
    """What forget_account found to delete, by table."""

    keys: set[bytes] = field(default_factory=set)
    parents: set[bytes] = field(default_factory=set)
    threads: set[int] = field(default_factory=set)
    thread_keys: set[bytes] = field(default_factory=set)
    people: set[tuple[str, int]] = field(default_factory=set)
    domains: set[tuple[str, int]] = field(default_factory=set)

    def add(self, found: tuple[list[Entry], list[tuple[str, int]]]) -> None:
        entries, reply_people = found
        self.people.update(reply_people)
        for e in entries:
            self.keys.add(e.msg_key)
            self.parents.update(e.parent_keys)
            self.threads.update([e.gm_thread_id] if e.gm_thread_id is not None else [])
            self.thread_keys.add(thread_of(e))
            self.people.update((c, e.day.year) for c in e.correspondents)
            self.domains.update([(e.from_domain, e.day.year)] if e.from_domain else [])

    def add_summaries(self, contacts: Sequence[Row], domains: Sequence[Row]) -> None:
        """Summary rows name partitions too (a reply to someone never written to, say)."""
        self.people.update((r["correspondent"], int(r["year"])) for r in contacts)
        self.domains.update((r["domain"], int(r["year"])) for r in domains)

    def partitions(self, days: list[date], raw_buckets: list[int]) -> list[tuple[str, list[tuple[object, ...]]]]:
        """Raw rows first (nothing folds them again), the day registry and account row last."""
        years = sorted({d.year for d in days})
        people: list[tuple[object, ...]] = sorted(self.people)
        domains: list[tuple[object, ...]] = sorted(self.domains)
        return [("raw_rows", [(b,) for b in raw_buckets]), ("message_index", [(k,) for k in self.keys]),
                ("parent_links", [(k,) for k in self.parents]), ("thread_messages", [(t,) for t in self.threads]),
                ("thread_entries", [(k,) for k in sorted(self.thread_keys)]),
                ("contact_messages", people), ("contact_replies", people), ("domain_messages", domains),
                ("day_rollups", [(y,) for y in years]),
                ("correspondent_days", [(m,) for m in sorted({d.replace(day=1) for d in days})]),
                ("auth_flags", [(y,) for y in years]), ("contacts", [()]), ("domain_auth", [()]),
                ("day_messages", [(d,) for d in days]), ("day_replies", [(d,) for d in days]),
                ("day_threads", [(d,) for d in days]),
                ("accounts", [()]), ("account_days", [()])]


async def open_cassandra(config: MetricsConfig, settings: InsightSettings) -> CassandraMetricsStore:
    """Connect to the configured keyspace and prepare every statement (run migrate first)."""
    cql = await connect(config, None)
    try:
        await cql.prepare(STATEMENTS, config.cassandra_keyspace)
    except Exception as e:
        await cql.close()
        raise CassandraUnavailable(f"cannot prepare the metrics statements in keyspace "
                                   f"{config.cassandra_keyspace!r} (has `inboxlens migrate` run?): "
                                   f"{type(e).__name__}: {e}") from None
    return CassandraMetricsStore(cql, settings)


async def migrate_cassandra(config: MetricsConfig) -> None:
    """Create the keyspace (if missing) and every table (if missing): safe to run again."""
    cql = await connect(config, None)
    try:
        await cql.ddl(keyspace_cql(config.cassandra_keyspace, config.cassandra_replication_factor,
                                   config.cassandra_local_dc))
        for statement in schema_statements(SCHEMA_FILE.read_text(encoding="utf-8"), config.cassandra_keyspace):
            await cql.ddl(statement)
    finally:
        await cql.close()
