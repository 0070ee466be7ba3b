"""Folding raw rows into the Cassandra store's index, rollups and insights, exactly once.

Cassandra has no multi-partition transaction, so nothing here adds to a stored number.
Each batch of raw rows goes through steps that are each idempotent:

1. look the messages up in ``message_index``; a ``complete`` one was folded before and is
   a duplicate (only its raw rows go, step 8);
2. write the rest into the index: the day registry, then ``day_messages`` and
   ``day_threads`` (so a crash leaves every partition findable from the registry), then
   ``message_index``, ``parent_links``, ``thread_entries``, ``thread_messages``,
   ``contact_messages``, ``domain_messages``;
3. mark what they answer and what answers them (``answered``, only ever set to true) and
   recompute the reply row of every message whose parent may have changed: the new ones,
   their children, later thread messages of the other direction;
4. recompute the rollup rows of every touched local day from its ``day_messages`` and
   ``day_replies`` partitions, and overwrite them;
5. recompute the touched (correspondent, year) contact summaries and (domain, year)
   authentication counts the same way;
6. decide the authentication flags of the new messages against the totals of step 5;
7. set ``complete`` on their index rows; 8. delete the folded raw rows.

A crash anywhere leaves the raw rows and incomplete index rows; the next run repeats the
steps for those messages, which rewrites the same rows with the same values. Recomputed
rows are written ``USING TIMESTAMP`` of the moment their inputs were read, so of two runs
recomputing a row at once the one that saw more wins (see docs/cassandra.md).
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import date, datetime
from typing import Iterable, Sequence

from inboxlens.metrics.cassandra.contacts import fold_contact_year
from inboxlens.metrics.cassandra.fold import (Entry, Reply, choose_parent, domain_total, entry_of, flag_of, fold_day, fold_domain_year, live_raw_buckets, newly_answered, reply_of, thread_of, thread_parent)
from inboxlens.metrics.cassandra.session import CqlSession, gather_bounded
from inboxlens.metrics.cassandra.statements import (contact_message_from, contact_params, correspondent_day_params, day_row_params, domain_params, domain_year_from, entry_from, entry_params, raw_from, reply_from, thread_params)
from inboxlens.metrics.model import AccountRef, FoldResult, RawRow

Batch = dict[bytes, list[tuple[int, RawRow]]]  # msg_key -> (bucket, row) of every raw copy taken


def now_us() -> int:
    return time.time_ns() // 1000


async def take(cql: CqlSession, account_id: int, batch_size: int, now: datetime) -> Batch:
    """Up to batch_size messages' raw rows, oldest bucket first."""
    batch: Batch = defaultdict(list)
    for bucket in live_raw_buckets(now):
        for row in await cql.rows("raw", account_id, bucket, limit=batch_size - len(batch)):
            batch[bytes(row["msg_key"])].append((bucket, raw_from(row)))
        if len(batch) >= batch_size:
            break
    return dict(batch)


async def fold(cql: CqlSession, account: AccountRef, batch: Batch) -> FoldResult:
    folder = _Folder(cql, account.id)
    complete = await folder.completed(list(batch))
    todo = [entry_of(copies[0][1], account) for key, copies in batch.items() if key not in complete]
    await folder.index(todo)
    reply_days, reply_people = await folder.match(todo)
    days = {e.day for e in todo} | reply_days
    await gather_bounded(sorted(days), folder.recompute_day)
    people = {(c, e.day.year) for e in todo for c in e.correspondents}
    await gather_bounded(sorted(people), folder.recompute_contact)
    domains = {(d, e.day.year) for e in todo if (d := e.from_domain)}
    await gather_bounded(sorted(domains), folder.recompute_domain)
    await folder.flag(todo)
    await cql.each("complete", [(account.id, e.msg_key) for e in todo])
    await cql.each("del_raw", [(account.id, bucket, key) for key, copies in batch.items() for bucket, _ in copies])
    return FoldResult(len(batch), len(todo), frozenset(days),
                      frozenset({c for c, _ in people} | reply_people))


class _Folder:
    """One batch's steps, for one account."""

    def __init__(self, cql: CqlSession, account_id: int) -> None:
        self.cql = cql
        self.account_id = account_id

    async def completed(self, keys: Sequence[bytes]) -> set[bytes]:
        rows = await gather_bounded(keys, lambda k: self.cql.rows("index", self.account_id, k))
        return {k for k, found in zip(keys, rows) if found and found[0]["complete"]}

    async def entry(self, key: bytes) -> Entry | None:
        rows = await self.cql.rows("index", self.account_id, key)
        return entry_from(rows[0]) if rows else None

    async def entries(self, keys: Iterable[bytes]) -> list[Entry]:
        found = await gather_bounded(list(keys), self.entry)
        return [e for e in found if e is not None]

    async def thread(self, e: Entry) -> list[Entry]:
        if e.gm_thread_id is None:
            return []
        return [entry_from(r) for r in await self.cql.rows("thread", self.account_id, e.gm_thread_id)]

    # -- step 2 -------------------------------------------------------------------------------------

    async def index(self, todo: Sequence[Entry]) -> None:
        a = self.account_id
        await self.cql.each("put_day", [(a, d) for d in sorted({e.day for e in todo})])
        await self.cql.each("put_day_message", [(a, e.day, e.msg_key, *entry_params(e)) for e in todo])
        await self.cql.each("put_day_thread", [(a, e.day, e.msg_key, thread_of(e), e.to_me, e.message_id)
                                               for e in todo])  # before thread_entries: forget finds it from here
        await gather_bounded([
            self.cql.each("put_index", [(a, e.msg_key, e.day, *entry_params(e)) for e in todo]),
            self.cql.each("put_link", [(a, p, e.msg_key) for e in todo for p in e.parent_keys]),
            self.cql.each("put_thread_entry", [(a, thread_of(e), e.direction, e.sent_us, e.msg_key) for e in todo]),
            self.cql.each("put_thread", [thread_params(a, e) for e in todo if e.gm_thread_id is not None]),
            self.cql.each("put_contact_message", [(a, c, e.day.year, e.sent_us, e.msg_key, e.direction, e.automated,
                                                   e.hour) for e in todo for c in e.correspondents]),
            self.cql.each("put_domain_message", [(a, e.from_domain, e.day.year, e.msg_key, e.sent_us, e.dkim, e.spf,
                                                  e.dmarc) for e in todo if e.from_domain]),
        ], lambda write: write, limit=6)

    # -- step 3 -------------------------------------------------------------------------------------

    async def match(self, todo: Sequence[Entry]) -> tuple[set[date], set[str]]:
        """Answers marked, replies recomputed: the days and correspondents whose replies changed."""
        affected = await gather_bounded(todo, self.answer)
        candidates = {e.msg_key: e for found in affected for e in found}
        replies = await gather_bounded(list(candidates.values()), self.recompute_reply)
        days = {r.day for r, _ in filter(None, replies)}
        people = {c for r, old in filter(None, replies) for c in (r.correspondent, old) if c}
        return days, people

    async def answer(self, new: Entry) -> list[Entry]:
        """Marks what new answers and what answers it; returns the messages whose reply may change."""
        parents = await self.entries(new.parent_keys)
        links = await self.cql.rows("links", self.account_id, new.msg_key)
        children = await self.entries(bytes(r["child_key"]) for r in links)
        thread = await self.thread(new)
        await self.cql.each("answer", [(self.account_id, e.day, e.msg_key)
                                       for e in newly_answered(new, parents, children, thread)])
        later = [t for t in thread if not t.parent_keys and t.direction != new.direction and t.sent_us > new.sent_us]
        return [new, *children, *later]

    async def recompute_reply(self, message: Entry) -> tuple[Reply, str | None] | None:
        stamp = now_us()
        if message.parent_keys:
            parent = choose_parent(message, await self.entries(message.parent_keys))
        else:
            parent = thread_parent(message, await self.thread(message))
        if parent is None:
            return None
        reply = reply_of(message, parent)
        before = await self.cql.rows("day_reply", self.account_id, reply.day, reply.reply_key)
        old = before[0]["correspondent"] if before else None
        await self._write_reply(reply, old, stamp)
        return reply, old

    async def _write_reply(self, r: Reply, old: str | None, stamp: int) -> None:
        a, year = self.account_id, r.day.year
        await self.cql.run("put_day_reply", a, r.day, r.reply_key, r.direction, r.correspondent, r.asked_us,
                           r.answered_us, stamp)
        if r.correspondent:
            await self.cql.run("put_contact_reply", a, r.correspondent, year, r.reply_key, r.direction, r.asked_us,
                               r.answered_us, stamp)
        if old and old != r.correspondent:  # a better parent from someone else turned up
            await self.cql.run("del_contact_reply", stamp, a, old, year, r.reply_key)

    # -- steps 4 to 6 -------------------------------------------------------------------------------

    async def recompute_day(self, day: date) -> None:
        stamp = now_us()
        entries = [entry_from(r) for r in await self.cql.rows("day_messages", self.account_id, day)]
        replies = [reply_from(r) for r in await self.cql.rows("day_replies", self.account_id, day)]
        row, people = fold_day(day, entries, replies)
        await self.cql.run("put_day_rollup", *day_row_params(self.account_id, row, stamp))
        await self.cql.each("put_correspondent_day", [correspondent_day_params(self.account_id, p, stamp)
                                                      for p in people])

    async def recompute_contact(self, key: tuple[str, int]) -> None:
        stamp = now_us()
        rows = await self.cql.rows("contact_messages", self.account_id, *key)
        summary = fold_contact_year(key[0], key[1], [contact_message_from(r) for r in rows])
        if summary is not None:
            await self.cql.run("put_contact", *contact_params(self.account_id, summary, stamp))

    async def recompute_domain(self, key: tuple[str, int]) -> None:
        domain, year = key
        stamp = now_us()
        rows = await self.cql.rows("domain_messages", self.account_id, domain, year)
        counts = fold_domain_year(domain, year, [(int(r["sent_us"]), r["dkim"], r["spf"], r["dmarc"]) for r in rows])
        await self.cql.run("put_domain_year", *domain_params(self.account_id, counts, stamp))

    async def flag(self, todo: Sequence[Entry]) -> None:
        suspects = [e for e in todo if e.from_domain and {e.dkim, e.spf, e.dmarc} - {None, "pass"}]
        totals = {}
        for domain in sorted({e.from_domain for e in suspects if e.from_domain}):
            rows = await self.cql.rows("domain_year_rows", self.account_id, domain)
            totals[domain] = domain_total([domain_year_from(r) for r in rows])
        flags = [(e, flag_of(e, totals[e.from_domain])) for e in suspects if e.from_domain]
        await self.cql.each("put_flag", [(self.account_id, e.day.year, e.sent_us, e.msg_key, f.domain, f.correspondent,
                                          list(f.failed)) for e, f in flags if f is not None])
