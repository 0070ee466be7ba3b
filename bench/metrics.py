"""Metrics benchmarks: folding raw header rows into rollups, against one plain SQL GROUP BY.

``python -m bench metrics`` (``full`` or ``incremental`` for one case). One run starts an
embedded PostgreSQL (``inboxlens.db.embedded.EmbeddedPostgres`` in a temporary directory, as the OS
user ``inboxlens-test-pg`` when root, as the tests do; the server's default settings),
migrates a database, adds 100 accounts in 14 time zones (most with DST, some with odd
offsets), and loads 1,000,000 raw_headers rows with ``copy_records_to_table``, one account
at a time. The mail is generated from one seed, in order of time per account: 70 % received,
30 % sent (1-3 To/Cc), ~40 % replies (In-Reply-To and References name an earlier message of
the account; msg_key is harvest's SHA-256("id" NUL Message-ID)[:16]), 2,000-4,000
correspondents per account drawn Zipf-like, dates over two years, ~4 % automated, DKIM, SPF
and DMARC verdicts (mostly pass) and DKIM domains/selectors on received mail.
``INBOXLENS_BENCH_METRICS_ROWS`` (and ``..._ACCOUNTS``) shrink it for a quick check.

- ``full``: first the baseline, 3 times on the loaded rows: one ``SELECT account_id, local
  day, count(*) FILTER (received), count(*) FILTER (sent) FROM raw_headers JOIN
  mail_accounts GROUP BY 1, 2`` (all rows fetched). Then the aggregate under test folds all
  accounts, 4 aggregators at once, one account each at a time; the run checks that every row
  was folded and that account_daily equals the baseline's answer. The fold is cut off after
  ``INBOXLENS_BENCH_METRICS_FOLD_LIMIT`` seconds (180), so the suite ends by itself; then the
  rows committed so far give the rate. Peak memory: VmHWM of the
  pool's backends (``pg_backend_pid()``) and of this process, each reset just before
  (``/proc/<pid>/clear_refs``), their private (RssAnon) peak sampled every 20 ms, and
  ``getrusage`` ru_maxrss growth of this process.
- ``incremental``: after the full fold and a ``VACUUM raw_headers`` (the steady state:
  autovacuum clears the queue's deleted rows a minute after a mass delete), 1,000 new rows
  for the largest account (replies among them answer messages folded before), the GROUP BY
  over them, then the aggregate; 5 times with fresh rows, medians in milliseconds, and the
  CPU time the pool's backends and this process spent folding (``/proc/<pid>/schedstat``),
  which a busy machine's other work does not inflate as it does the wall time.

Targets (issue 16.5), each printed with PASS or MISS: the full fold at 100,000 rows/s or
more, and the incremental fold of 1,000 rows in 50 ms or less (median).

The aggregate under test is ``aggregator()``: ``PgMetricsStore.aggregate`` when
``inboxlens.metrics.postgres.store`` has it, else ``inboxlens.metrics.postgres.rollups.aggregate``
(``INBOXLENS_BENCH_METRICS_AGGREGATE=rollups`` forces the latter).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg

from inboxlens.metrics.postgres import rollups
from inboxlens.metrics.model import AccountRef, InsightSettings

from .report import ratio, table, verdict

ROWS = int(os.environ.get("INBOXLENS_BENCH_METRICS_ROWS", 1_000_000))
ACCOUNTS = int(os.environ.get("INBOXLENS_BENCH_METRICS_ACCOUNTS", 100))
AGGREGATORS = 4
NEW_ROWS = 1_000
REPEATS = 5  # incremental rounds, fresh rows each
BASELINE_ROUNDS = 3
SEED = 20261129
END = datetime(2026, 11, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=730)
SENT_SHARE, REPLY_SHARE, AUTOMATED_SHARE = 0.30, 0.40, 0.07  # automated: of received non-replies
SAMPLE_EVERY = 0.02  # seconds between RssAnon samples
TARGET_FULL_RATE = 100_000  # rows a second, the full fold (issue 16.5)
TARGET_INCREMENTAL_MS = 50.0  # the incremental fold of NEW_ROWS, median
FOLD_LIMIT = float(os.environ.get("INBOXLENS_BENCH_METRICS_FOLD_LIMIT", 180))  # seconds; then cut off
TIMEOUT = {"load": 300.0, "full": FOLD_LIMIT + 120.0, "incremental": 120.0}
ZONES = ("Europe/Berlin", "America/New_York", "UTC", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney",
         "Asia/Kolkata", "Europe/London", "America/Sao_Paulo", "Australia/Lord_Howe", "Pacific/Auckland",
         "Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham")
COLUMNS = ("account_id", "msg_key", "mailbox", "uid", "message_id", "in_reply_to", "refs", "subject",
           "from_address", "from_name", "to_addresses", "cc_addresses", "sent_at", "internal_date",
           "date_reliable", "direction", "automated", "list_id", "dkim", "spf", "dmarc", "dkim_domains",
           "dkim_signatures")
PEOPLE_DOMAINS = ("gmail.com",) * 6 + ("outlook.com",) * 3 + ("yahoo.com", "posteo.de", "icloud.com", "gmx.de",
                                                                 "proton.me", "uni-heidelberg.de", "acme.io")
SERVICES = ("notifications@github.com", "jira@acme.atlassian.net", "no-reply@accounts.google.com",
            "news@digest.news", "deals@acme-shop.com", "noreply@flights.io", "calendar-notification@google.com",
            "messages-noreply@linkedin.com", "billing@stripe.com", "support@zendesk.com")
ESPS = ("sendgrid.net", "amazonses.com", "mailgun.org")
SUBJECTS = ("meeting", "budget draft", "quarterly review", "lunch?", "invoice 2291", "photos", "trip plan",
            "notes", "deadline", "contract", "design feedback", "Zürich offsite", "résumé")

BASELINE_SQL = """
SELECT r.account_id, (r.sent_at AT TIME ZONE a.time_zone)::date AS day,
       count(*) FILTER (WHERE r.direction = 'received') AS received,
       count(*) FILTER (WHERE r.direction = 'sent') AS sent
FROM raw_headers r JOIN mail_accounts a ON a.id = r.account_id
{where}GROUP BY 1, 2
"""

Fold = Callable[[AccountRef], Awaitable[Any]]


def aggregator(pool: asyncpg.Pool) -> tuple[str, Fold]:
    """The aggregate the cases time: the PostgreSQL MetricsStore once it exists, else rollups."""
    if os.environ.get("INBOXLENS_BENCH_METRICS_AGGREGATE") != "rollups":
        try:
            from inboxlens.metrics.postgres.store import PgMetricsStore
        except ImportError:
            pass
        else:
            return "inboxlens.metrics.postgres.store.PgMetricsStore.aggregate", PgMetricsStore(pool, InsightSettings()).aggregate
    return "inboxlens.metrics.postgres.rollups.aggregate", lambda account: rollups.aggregate(pool, account.id)


# -- the mail ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sent:
    """What a later reply needs of a message: its id, its thread and the other party."""

    message_id: str
    refs: tuple[str, ...]
    party: str


@dataclass
class Mailbox:
    """One account's mail, made in order of time, so a reply always answers an earlier message."""

    account: AccountRef
    rng: random.Random
    people: list[str]
    cumulative: list[float]  # Zipf-like weights of people, summed
    seq: int = 0
    uids: dict[str, int] = field(default_factory=lambda: {"INBOX": 0, "Sent": 0})
    recent: dict[str, deque[Sent]] = field(default_factory=lambda: {"received": deque(maxlen=300),
                                                                     "sent": deque(maxlen=300)})
    replies: int = 0

    @classmethod
    def make(cls, account: AccountRef, seed: int) -> Mailbox:
        rng = random.Random(seed)
        count = rng.randint(2000, 4000)
        people = [f"{rng.choice('abcdefghijklmnopqrstuvwxyz')}{rng.getrandbits(24):x}.{i}@{rng.choice(PEOPLE_DOMAINS)}"
                  for i in range(count)]
        total, cumulative = 0.0, []
        for rank in range(count):
            total += 1 / (rank + 1) ** 1.1
            cumulative.append(total)
        return cls(account, rng, people, cumulative)

    def person(self) -> str:
        return self.people[bisect.bisect(self.cumulative, self.rng.random() * self.cumulative[-1])]

    def rows(self, count: int, first: datetime, last: datetime) -> list[tuple[Any, ...]]:
        start, width = first.timestamp(), (last - first).total_seconds()
        instants = sorted(start + self.rng.random() * width for _ in range(count))
        return [self.message(datetime.fromtimestamp(at, timezone.utc)) for at in instants]

    def message(self, at: datetime) -> tuple[Any, ...]:
        rng = self.rng
        direction = "sent" if rng.random() < SENT_SHARE else "received"
        answering = self.recent["received" if direction == "sent" else "sent"]
        parent = rng.choice(answering) if answering and rng.random() < REPLY_SHARE else None
        self.replies += parent is not None
        if direction == "sent":
            return self._sent(at, parent)
        automated = parent is None and rng.random() < AUTOMATED_SHARE
        return self._received(at, parent, automated)

    def _sent(self, at: datetime, parent: Sent | None) -> tuple[Any, ...]:
        to = [parent.party if parent else self.person()]
        cc: list[str] = []
        for _ in range(self.rng.choice((0, 0, 0, 1, 1, 2))):
            (to if self.rng.random() < 0.5 else cc).append(self.person())
        own = self.account.address
        message_id, refs, subject = self._ids(own, parent)
        self.uids["Sent"] += 1
        self.recent["sent"].append(Sent(message_id, refs, to[0]))
        return (self.account.id, key(message_id), "Sent", self.uids["Sent"], message_id, _parent_ids(parent),
                list(refs), subject, own, "Me", to, cc, at, at, True, "sent", False, None, None, None, None, [], [])

    def _received(self, at: datetime, parent: Sent | None, automated: bool) -> tuple[Any, ...]:
        rng = self.rng
        sender = rng.choice(SERVICES) if automated else parent.party if parent else self.person()
        domain = sender.rsplit("@", 1)[1]
        message_id, refs, subject = self._ids(sender, parent)
        self.uids["INBOX"] += 1
        if not automated:
            self.recent["received"].append(Sent(message_id, refs, sender))
        dkim, spf, dmarc = _verdict(rng, 0.93), _verdict(rng, 0.95), _verdict(rng, 0.90)
        signers = [domain] + ([rng.choice(ESPS)] if automated else [])
        signatures = [f"{d}/s{rng.randint(1, 3)}" for d in signers]
        cc = [self.person()] if rng.random() < 0.1 else []
        list_id = f"<news.{domain}>" if automated and rng.random() < 0.6 else None
        return (self.account.id, key(message_id), "INBOX", self.uids["INBOX"], message_id, _parent_ids(parent),
                list(refs), subject, sender, sender.split("@")[0].title(), [self.account.address], cc, at,
                at + timedelta(seconds=rng.uniform(1, 120)), rng.random() > 0.005, "received", automated, list_id,
                dkim, spf, dmarc, signers if dkim == "pass" else [], signatures)

    def _ids(self, sender: str, parent: Sent | None) -> tuple[str, tuple[str, ...], str]:
        self.seq += 1
        message_id = f"<{self.seq:x}.{self.rng.getrandbits(48):012x}@{sender.rsplit('@', 1)[1]}>"
        refs = (*parent.refs[-4:], parent.message_id) if parent else ()
        subject = self.rng.choice(SUBJECTS)
        return message_id, refs, f"Re: {subject}" if parent else subject


def key(message_id: str) -> bytes:
    """harvest's msg_key for a message with a Message-ID (``inboxlens.harvest.store.msg_key``)."""
    return hashlib.sha256(b"id\0" + message_id.encode()).digest()[:16]


def _parent_ids(parent: Sent | None) -> list[str]:
    return [parent.message_id] if parent else []


def _verdict(rng: random.Random, passing: float) -> str | None:
    draw = rng.random()
    return "pass" if draw < passing else "fail" if draw < passing + 0.03 else "softfail" if draw < 0.99 else None


# -- memory -------------------------------------------------------------------------------------

def status_kb(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> bool:
    """Set VmHWM back to the current RSS (Linux ``clear_refs`` 5); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def scheduled(pids: Sequence[int]) -> tuple[int, int]:
    """Nanoseconds the processes ran on a CPU and waited for one, so far (Linux schedstat)."""
    ran = waited = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/schedstat").read_text().split()
        ran, waited = ran + int(fields[0]), waited + int(fields[1])
    return ran, waited


@dataclass
class Peaks:
    """Peak memory of some processes over a stretch of time, in kB."""

    pids: Sequence[int]
    reset: bool = False
    anon: dict[int, int] = field(default_factory=dict)  # sampled peak RssAnon
    hwm: dict[int, int] = field(default_factory=dict)  # VmHWM at the end
    maxrss_growth: int = 0  # this process's ru_maxrss, end minus start

    def show(self, pids: Sequence[int]) -> str:
        hwm = [self.hwm[p] for p in pids]
        anon = [self.anon.get(p, 0) for p in pids]
        if len(pids) == 1:
            return f"{hwm[0]:,} ({anon[0]:,})"
        return f"max {max(hwm):,} ({max(anon):,}), sum {sum(hwm):,} ({sum(anon):,})"


@asynccontextmanager
async def watching(pids: Sequence[int]) -> AsyncIterator[Peaks]:
    peaks = Peaks(pids, all([reset_peak(p) for p in pids]))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def sample() -> None:
        while True:
            for pid in pids:
                peaks.anon[pid] = max(peaks.anon.get(pid, 0), status_kb(pid, "RssAnon"))
            await asyncio.sleep(SAMPLE_EVERY)

    sampler = asyncio.create_task(sample())
    try:
        yield peaks
    finally:
        sampler.cancel()
        peaks.hwm = {pid: status_kb(pid, "VmHWM") for pid in pids}
        peaks.maxrss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss


# -- the bench ----------------------------------------------------------------------------------

@dataclass
class Bench:
    pool: asyncpg.Pool
    direct: asyncpg.Connection  # the baseline's connection
    fold_name: str
    fold: Fold
    boxes: list[Mailbox] = field(default_factory=list)
    rows: int = 0
    folded: bool = False

    async def backends(self) -> list[int]:
        """The pool's backend pids (the pool keeps all its connections: min_size == max_size)."""
        held = [await self.pool.acquire() for _ in range(self.pool.get_max_size())]
        try:
            return sorted([await conn.fetchval("SELECT pg_backend_pid()") for conn in held])
        finally:
            for conn in held:
                await self.pool.release(conn)

    async def fold_all(self) -> None:
        """Every account folded, AGGREGATORS at a time (each batch commits on its own)."""
        queue: asyncio.Queue[Mailbox] = asyncio.Queue()
        for box in self.boxes:
            queue.put_nowait(box)

        async def worker() -> None:
            while not queue.empty():
                await self.fold(queue.get_nowait().account)

        await asyncio.gather(*(worker() for _ in range(AGGREGATORS)))
        self.folded = True

    async def baseline(self, account_id: int | None = None) -> tuple[float, list[asyncpg.Record]]:
        """The GROUP BY over all raw rows, or over one account's (two statements: each its own plan)."""
        began = time.perf_counter()
        if account_id is None:
            rows = await self.direct.fetch(BASELINE_SQL.format(where=""))
        else:
            rows = await self.direct.fetch(BASELINE_SQL.format(where="WHERE r.account_id = $1\n"), account_id)
        return time.perf_counter() - began, rows


async def load(bench: Bench) -> None:
    rng = random.Random(SEED)
    weights = [rng.uniform(0.5, 2.0) for _ in range(ACCOUNTS)]
    counts = [int(ROWS * w / sum(weights)) for w in weights]
    counts[0] += ROWS - sum(counts)
    generating = copying = 0.0
    began = time.perf_counter()
    for i, count in enumerate(counts):
        account = await add_account(bench.pool, i)
        box = Mailbox.make(account, SEED + i)
        bench.boxes.append(box)
        t0 = time.perf_counter()
        rows = box.rows(count, END - SPAN, END)
        t1 = time.perf_counter()
        await bench.pool.copy_records_to_table("raw_headers", records=rows, columns=COLUMNS)
        generating, copying = generating + t1 - t0, copying + time.perf_counter() - t1
    loaded = time.perf_counter() - began
    await bench.direct.execute("VACUUM (ANALYZE) raw_headers")
    await bench.direct.execute("CHECKPOINT")  # the load's dirty pages are not the fold's to write
    bench.rows = await bench.direct.fetchval("SELECT count(*) FROM raw_headers")
    print(await describe_load(bench, loaded, generating, copying, time.perf_counter() - began - loaded))


async def add_account(pool: asyncpg.Pool, i: int) -> AccountRef:
    address, zone = f"user{i:03d}@mail{i % 7}.example", ZONES[i % len(ZONES)]
    user = await pool.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", address)
    account = await pool.fetchval("INSERT INTO mail_accounts (user_id, address, provider, time_zone) "
                                  "VALUES ($1, $2, 'test', $3) RETURNING id", user, address, zone)
    return AccountRef(account, address, zone)


async def describe_load(bench: Bench, seconds: float, generating: float, copying: float, vacuum: float) -> str:
    shares = await bench.direct.fetchrow(
        "SELECT avg((direction = 'received')::int) AS received, avg((cardinality(in_reply_to) > 0)::int) AS replies, "
        "avg(automated::int) AS automated, avg((dkim = 'pass')::int) AS dkim_pass, "
        "count(DISTINCT (account_id, lower(from_address))) FILTER (WHERE direction = 'received') AS senders, "
        "pg_size_pretty(pg_total_relation_size('raw_headers')) AS size FROM raw_headers")
    return (f"loaded {bench.rows:,} raw_headers rows for {len(bench.boxes)} accounts in {seconds:.1f} s "
            f"(generate {generating:.1f} s, COPY {copying:.1f} s; then VACUUM ANALYZE + CHECKPOINT {vacuum:.1f} s); "
            f"{shares['size']}; received {shares['received']:.0%}, replies {shares['replies']:.0%}, "
            f"automated {shares['automated']:.1%}, DKIM pass {shares['dkim_pass']:.0%}, "
            f"{shares['senders'] / len(bench.boxes):,.0f} distinct senders per account")


# -- 1. full --------------------------------------------------------------------------------------

async def bench_full(bench: Bench) -> None:
    direct_pid = await bench.direct.fetchval("SELECT pg_backend_pid()")
    base_runs: list[float] = []
    async with watching([direct_pid, os.getpid()]) as base_peaks:
        for _ in range(BASELINE_ROUNDS):
            seconds, answer = await bench.baseline()
            base_runs.append(seconds)
    plan = "\n".join(r[0] for r in await bench.direct.fetch("EXPLAIN " + BASELINE_SQL.format(where="")))
    pids = await bench.backends()
    async with watching([*pids, os.getpid()]) as peaks:
        began = time.perf_counter()
        try:
            async with asyncio.timeout(FOLD_LIMIT):
                await bench.fold_all()
        except TimeoutError:
            pass
        seconds = time.perf_counter() - began
    folded = int(await bench.direct.fetchval("SELECT coalesce(sum(messages_folded), 0) FROM metrics_state"))
    check = await verify(bench, answer, folded) if bench.folded else (
        f"CUT OFF after {FOLD_LIMIT:.0f} s (INBOXLENS_BENCH_METRICS_FOLD_LIMIT): {folded:,} of {bench.rows:,} "
        f"rows folded; at that rate all would take ~{bench.rows / (folded / seconds):,.0f} s" if folded else
        f"CUT OFF after {FOLD_LIMIT:.0f} s: no account finished")
    base = statistics.median(base_runs)
    me = os.getpid()
    rows = [[f"baseline: one GROUP BY (account, local day), median of {BASELINE_ROUNDS}", bench.rows, base,
             round(bench.rows / base), base_peaks.show([direct_pid]), base_peaks.hwm[me], base_peaks.maxrss_growth,
             "1.00"],
            [f"aggregate, {AGGREGATORS} at once, one account each at a time", folded, seconds,
             round(folded / seconds), peaks.show(pids), peaks.hwm[me], peaks.maxrss_growth,
             ratio(seconds, base) if bench.folded else f"> {seconds / base:.0f}"]]
    settings = await bench.direct.fetchrow("SELECT current_setting('shared_buffers') AS sb, "
                                           "current_setting('work_mem') AS wm, "
                                           "current_setting('max_parallel_workers_per_gather') AS par")
    workers = "parallel, " + plan.split("Workers Planned: ")[1].split()[0] + " workers" if "Workers" in plan else "serial"
    rate = folded / seconds if seconds else 0.0
    notes = [f"target: full fold >= {TARGET_FULL_RATE:,} rows/s: {rate:,.0f} "
             f"{verdict(bench.folded and rate >= TARGET_FULL_RATE)}",
             f"aggregate under test: {bench.fold_name}",
             f"ratio = seconds / the baseline's seconds; baseline rounds: {' / '.join(f'{s:.2f}' for s in base_runs)} s "
             f"(plan: {workers}; its parallel workers' memory is not in the backend column)",
             f"check: {check}",
             "PG backends kB: VmHWM (peak RSS, counts the shared buffers a backend touched) and, in brackets, "
             f"peak RssAnon (private) sampled every {SAMPLE_EVERY * 1000:.0f} ms; over the pool's {len(pids)} backends "
             f"for the aggregate; peaks reset before each side: {base_peaks.reset and peaks.reset}",
             f"python kB: this process's VmHWM (reset before) and ru_maxrss growth (0 = below the load's peak); "
             f"server: shared_buffers {settings['sb']}, work_mem {settings['wm']}, "
             f"max_parallel_workers_per_gather {settings['par']}"]
    table(f"1. full: {bench.rows:,} raw rows, {len(bench.boxes)} accounts, each folded once",
          ["what", "rows", "seconds", "rows/s", "PG backend kB", "python VmHWM kB", "python maxrss +kB", "ratio"],
          rows, notes)


async def verify(bench: Bench, answer: Sequence[asyncpg.Record], folded: int) -> str:
    left = await bench.direct.fetchval("SELECT count(*) FROM raw_headers")
    daily = await bench.direct.fetch("SELECT account_id, day, received, sent FROM account_daily")
    same = {tuple(r) for r in daily} == {tuple(r) for r in answer}
    return (f"{folded:,} of {bench.rows:,} rows folded, {left:,} raw rows left; account_daily "
            f"{'equals' if same else 'DIFFERS FROM'} the baseline's {len(answer):,} (account, day) rows")


# -- 2. incremental -------------------------------------------------------------------------------

async def bench_incremental(bench: Bench) -> None:
    box = await folded_account(bench)
    # The steady state: autovacuum has cleared the rows the fold deleted from the queue (a
    # minute after a mass delete), as it would between two syncs; the GROUP BY gains as much.
    await bench.direct.execute("VACUUM raw_headers")
    base_ms: list[float] = []
    fold_ms: list[float] = []
    replies = box.replies
    pids = [*await bench.backends(), os.getpid()]
    cpu_ms: list[float] = []
    queued_ms: list[float] = []
    for round_ in range(REPEATS):
        first = END + timedelta(days=round_)
        await bench.pool.copy_records_to_table("raw_headers", records=box.rows(NEW_ROWS, first, first + timedelta(days=1)),
                                               columns=COLUMNS)
        seconds, answer = await bench.baseline(box.account.id)
        base_ms.append(seconds * 1000)
        before = scheduled(pids)
        began = time.perf_counter()
        result = await bench.fold(box.account)
        fold_ms.append((time.perf_counter() - began) * 1000)
        after = scheduled(pids)
        cpu_ms.append((after[0] - before[0]) / 1e6)
        queued_ms.append((after[1] - before[1]) / 1e6)
        if result.folded != NEW_ROWS:
            raise RuntimeError(f"the aggregate folded {result.folded} of {NEW_ROWS} new rows")
    base, fold = statistics.median(base_ms), statistics.median(fold_ms)
    table(f"2. incremental: {NEW_ROWS:,} new raw rows for one account ({box.account.time_zone}, "
          f"{box.seq - REPEATS * NEW_ROWS:,} messages folded before), {REPEATS} rounds with fresh rows",
          ["what", "rows", "median ms", "min ms", "max ms", "ratio"],
          [["baseline: the GROUP BY over the new rows", NEW_ROWS, base, min(base_ms), max(base_ms), "1.00"],
           ["aggregate(account)", NEW_ROWS, fold, min(fold_ms), max(fold_ms), ratio(fold, base)]],
          [f"target: incremental fold of {NEW_ROWS:,} rows <= {TARGET_INCREMENTAL_MS:.0f} ms (median): {fold:.1f} ms "
           f"{verdict(fold <= TARGET_INCREMENTAL_MS)}",
           f"CPU time of the pool's backends and this process while folding (/proc/<pid>/schedstat), median: "
           f"{statistics.median(cpu_ms):.1f} ms on a CPU, {statistics.median(queued_ms):.1f} ms waiting for one "
           f"(a busy machine's share of the wall time)",
           f"aggregate under test: {bench.fold_name}",
           f"replies among the new rows (to earlier messages, folded before or in the same round): "
           f"{(box.replies - replies) / (REPEATS * NEW_ROWS):.0%}; per round ms: "
           f"{' / '.join(f'{m:.1f}' for m in fold_ms)}"])


async def folded_account(bench: Bench) -> Mailbox:
    """The largest account with every raw row folded; a middle-sized one folded now if none is."""
    done = {r[0] for r in await bench.direct.fetch(
        "SELECT id FROM mail_accounts a WHERE NOT EXISTS (SELECT 1 FROM raw_headers r WHERE r.account_id = a.id)")}
    folded = [b for b in bench.boxes if b.account.id in done]
    if folded:
        return max(folded, key=lambda b: b.seq)
    box = sorted(bench.boxes, key=lambda b: b.seq)[len(bench.boxes) // 2]
    began = time.perf_counter()
    await bench.fold(box.account)
    print(f"(no account folded yet: folded account {box.account.id}, {box.seq:,} rows, first, untimed: "
          f"{time.perf_counter() - began:.1f} s)")
    return box


# -- the suite ------------------------------------------------------------------------------------

CASES: dict[str, Callable[[Bench], Awaitable[None]]] = {"full": bench_full, "incremental": bench_incremental}


@asynccontextmanager
async def database(tmp: Path) -> AsyncIterator[str]:
    """A migrated database on an embedded PostgreSQL of its own, as the tests start one."""
    from inboxlens.db.embedded import EmbeddedPostgres
    from inboxlens.db.migrate import migrate
    from tests.conftest import TEST_PG_USER, dsn_with_database
    from tests.support.osusers import ensure_user

    root = os.geteuid() == 0
    if root:
        ensure_user(TEST_PG_USER)
    pg = EmbeddedPostgres(tmp / "pg" / "data", tmp / "pg" / "sock", run_as=TEST_PG_USER if root else None,
                          superuser_map=("root",) if root else ())
    admin_dsn = await asyncio.to_thread(pg.start)
    try:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute('CREATE DATABASE "inboxlens_bench"')
        await admin.close()
        dsn = dsn_with_database(admin_dsn, "inboxlens_bench")
        await migrate(dsn)
        yield dsn
    finally:
        await asyncio.to_thread(pg.stop)


async def run(names: Sequence[str] = ()) -> None:
    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="inboxlens-bench-metrics-"))
    os.chmod(tmp, 0o711)  # PostgreSQL's OS user traverses it to its data and socket directories
    try:
        async with database(tmp) as dsn, asyncpg.create_pool(dsn, min_size=AGGREGATORS + 2,
                                                             max_size=AGGREGATORS + 2) as pool:
            direct = await asyncpg.connect(dsn)
            try:
                version = await direct.fetchval("SHOW server_version")
                print(f"stack: PostgreSQL {version}, asyncpg {asyncpg.__version__}; "
                      f"started in {time.perf_counter() - began:.1f} s")
                bench = Bench(pool, direct, *aggregator(pool))
                async with asyncio.timeout(TIMEOUT["load"]):
                    await load(bench)
                for name in names or CASES:
                    async with asyncio.timeout(TIMEOUT[name]):
                        await CASES[name](bench)
            finally:
                await direct.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nmetrics suite: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    from . import __main__ as bench_main

    bench_main.main(["metrics", *sys.argv[1:]])
