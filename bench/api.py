"""API benchmark: the correspondent card under load, next to a bare aiohttp JSON endpoint.

``python -m bench api`` (``rate``, ``folding`` or ``saturation`` for one case;
``INBOXLENS_BENCH_API_SECONDS`` shortens the runs, ``INBOXLENS_BENCH_API_MAIL`` the
mailbox). One run starts what the
tests start: an embedded PostgreSQL (``bench.metrics.database``), the local OAuth provider,
a vault and the web process (``tests.support``), the web at the product's INFO log level
with its API rate limit raised out of the way (100,000 a minute, burst 10,000, per token). A
user connects a mailbox through the real OAuth flow and makes ``TOKENS`` API tokens on the
settings page.
The account (Europe/Berlin) gets ``MAIL`` messages over two years up to now from
``bench.metrics.Mailbox`` (Zipf-like correspondents, 40 % replies, DKIM/SPF/DMARC verdicts),
folded by ``PgMetricsStore.aggregate``, then ``VACUUM (ANALYZE)`` (as autovacuum would within a
minute). Every other correspondent has a card in an address book of the user (name,
organisation, title, two links; every fourth a photo), written as an import writes it, so the
card's profile block (issue 17) is in every second answer and the rest carry ``null``.
Before the load, each distinct card is asked for once, one at a time ("cold":
its reply times not kept yet), and those latencies are printed.

The requests: ``GET /api/v1/accounts/{id}/correspondents/{address}`` with one of ``TOKENS``
bearer tokens of the user, in turn (each has a rate-limit bucket of its own: together they
stay under the limit at any rate this machine reaches),
for ``PATHS`` addresses drawn Zipf-like from the mailbox's correspondents (the people
whose mail one reads most are the cards one opens most), each checked to answer 200 first.
The baseline, ``bench.bare_api``, serves the card body of the busiest correspondent from a
process of its own with no authentication and no database.

Both are driven by ``bench.loadgen`` in a second process over loopback TCP with keep-alive:

- ``rate``: open loop at 500 requests/s for ``RATE_SECONDS``, latency from when each
  request was due (no coordinated omission); target: card p99 < 20 ms.
- ``folding``: as ``rate``, while ``FOLD_ROWS`` new messages are folded every
  ``FOLD_EVERY`` seconds during the card's turns (a stress case: harvest's default is one
  sync per account every 300 s).
- ``saturation``: ``CONNECTIONS`` connections, each sending its next request when the last
  one answered, for ``SATURATION_SECONDS``: the most requests/s and the latencies at it.

The baseline and the card take turns, ``ROUNDS`` times, so a noisy neighbour hits both.
Each job warms up with ``WARMUP`` requests. Reported next to the latencies: CPU seconds per
1,000 requests of the server process, of the PostgreSQL backends serving the web's pool (the
web connects with ``application_name`` ``WEB_APP_NAME``; its backends are found in
``pg_stat_activity`` and read in ``/proc``) and of the load generator, and how busy the whole
machine was (``/proc/stat``): on 2 cores the generator, the web process and PostgreSQL
share them, so the saturation rate is this machine's, not the server's alone.

The run ends with issue 16's targets, each against the baseline of the same run: the card's
server CPU per request at saturation at most ``TARGET_CPU_RATIO`` times the bare endpoint's,
its throughput at least ``TARGET_SATURATION`` of the bare endpoint's, and the rate case's
p99 next to the bare endpoint's saturation rate (a slow machine, or a slow card?).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg

from inboxlens.metrics.model import AccountRef, InsightSettings
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.profiles import rows
from inboxlens.profiles.vcard import Link, Photo, Profile
from tests.support.oauth_provider import OAuthProvider
from tests.support.vaultproc import make_vault
from tests.support.webproc import WebProcess, free_port, make_web
from tests.web.conftest import CLIENT_ID, CLIENT_SECRET, Stack, account_id, bearer, connect, new_token, providers

from .metrics import COLUMNS, Mailbox, database
from .report import Sample, percentile, ratio, table, verdict

USER = "reader@mail.example"
ZONE = "Europe/Berlin"
MAIL = int(os.environ.get("INBOXLENS_BENCH_API_MAIL", 50_000))
PATHS = 1_000
SEED = 20261129
RATE = 500.0
TARGET_P99_MS = 20.0
TARGET_CPU_RATIO = 4.0  # card / bare server CPU per request at saturation, at most (issue 16.2)
TARGET_SATURATION = 0.2  # card / bare requests per second at saturation, at least
WEB_APP_NAME = "inboxlens-web-bench"  # the web pool's application_name: how its backends are found
RATE_SECONDS = float(os.environ.get("INBOXLENS_BENCH_API_SECONDS", 10))
SATURATION_SECONDS = float(os.environ.get("INBOXLENS_BENCH_API_SECONDS", 8))
CONNECTIONS = 16  # saturation; the rate case may open up to RATE_CONNECTIONS when answers lag
RATE_CONNECTIONS = 64
ROUNDS = 2
TOKENS = 16  # the API limit is per token, at most 100,000 a minute: 16 of them allow 26,000 cards/s
WARMUP = 300
START_TIMEOUT = 30.0
JOB_TIMEOUT = 180.0  # a load generator's own bound is its seconds + 30 s; this one is the parent's
FOLD_EVERY = 2.0  # seconds between folds in the folding case
FOLD_ROWS = 100  # new messages each
TIMEOUT = {"setup": 300.0, "rate": 2 * ROUNDS * (RATE_SECONDS + 60), "folding": 2 * ROUNDS * (RATE_SECONDS + 60),
           "saturation": 2 * ROUNDS * (SATURATION_SECONDS + 60)}


# -- the servers -----------------------------------------------------------------------------------

@dataclass
class Bare:
    """The baseline server: ``bench.bare_api`` in its own process."""

    body: dict[str, Any]
    port: int = field(default_factory=free_port)
    env: dict[str, str] | None = None  # None: this process's environment
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.bare_api", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=self.env)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"port": self.port, "body": self.body}).encode() + b"\n")
        await self.process.stdin.drain()
        if await asyncio.wait_for(self.process.stdout.readline(), START_TIMEOUT) != b"ready\n":
            raise RuntimeError("the bare aiohttp server did not start")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            await asyncio.wait_for(self.process.wait(), 15)


@asynccontextmanager
async def running(bare: Bare) -> AsyncIterator[Bare]:
    try:
        await bare.start()
        yield bare
    finally:
        await bare.stop()


@dataclass
class Target:
    """A server under load: where it listens, what to ask, and its process (for its CPU time)."""

    name: str
    base: str
    paths: list[str]
    headers: list[dict[str, str]]  # request i sends set i mod n
    pid: int
    pg_dsn: str | None = None  # where to find the PostgreSQL backends serving it (WEB_APP_NAME), if any


@dataclass
class Result(Sample):
    """A target's runs together: their latencies and wall time (``Sample``), answers and CPU."""

    statuses: Counter[str] = field(default_factory=Counter)
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    pg_cpu: float = 0.0
    machine_busy: list[float] = field(default_factory=list)

    def add_run(self, report: dict[str, Any], server_cpu: float, pg_cpu: float, busy: float) -> None:
        self.add(Sample([us * 1000 for us in report["latencies_us"]], report["wall"]))
        self.statuses.update(report["statuses"])
        self.client_cpu += report["cpu"]
        self.server_cpu += server_cpu
        self.pg_cpu += pg_cpu
        self.machine_busy.append(busy)

    def per_thousand(self, seconds: float) -> float:
        return seconds / self.count * 1000 if self.count else 0.0

    @property
    def failures(self) -> str:
        bad = {status: n for status, n in self.statuses.items() if status != "200"}
        return ", ".join(f"{n} x {status}" for status, n in sorted(bad.items())) or "none"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (after the parenthesised name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_if_alive(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0  # a backend that ended: its time is lost (the web's pool keeps its connections)


class Backends:
    """The CPU time of the PostgreSQL backends a target's pool uses, between ``start`` and ``stop``."""

    def __init__(self, dsn: str | None) -> None:
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None
        self.before: dict[int, float] = {}

    async def pids(self) -> list[int]:
        assert self.conn is not None
        rows = await self.conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", WEB_APP_NAME,
                                     timeout=10)
        return [int(r["pid"]) for r in rows]

    async def open(self) -> None:
        if self.dsn is not None:
            self.conn = await asyncpg.connect(self.dsn, timeout=10)

    async def start(self) -> None:
        if self.conn is not None:
            self.before = {pid: cpu_seconds_if_alive(pid) for pid in await self.pids()}

    async def stop(self) -> float:
        """CPU seconds since ``start``; a backend that appeared meanwhile counts from its start."""
        if self.conn is None:
            return 0.0
        pids = set(await self.pids()) | set(self.before)
        return sum(cpu_seconds_if_alive(pid) - self.before.get(pid, 0.0) for pid in pids)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


async def drive(target: Target, mode: str, **job: Any) -> tuple[dict[str, Any], float, float, float]:
    """One load-generator run against ``target``: its report, the server's and its PostgreSQL
    backends' CPU seconds, machine busy share."""
    spec = {"base": target.base, "paths": target.paths, "headers": target.headers, "mode": mode, "warmup": WARMUP,
            **job}
    backends = Backends(target.pg_dsn)
    await backends.open()  # its own backend is not the web's: not counted
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.loadgen", stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(JOB_TIMEOUT):
            assert process.stdin is not None and process.stdout is not None and process.stderr is not None
            process.stdin.write(json.dumps(spec).encode() + b"\n")
            await process.stdin.drain()
            if await process.stdout.readline() != b"warm\n":  # timed from here, warm-up excluded
                raise RuntimeError(f"the load generator failed:\n{(await process.stderr.read()).decode(errors='replace')}")
            await backends.start()
            cpu, (busy, total) = cpu_seconds(target.pid), machine_ticks()
            out, err = await process.communicate()
            cpu, (busy, total) = cpu_seconds(target.pid) - cpu, [a - b for a, b in zip(machine_ticks(), (busy, total))]
            pg = await backends.stop()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await backends.close()
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed (exit {process.returncode}):\n{err.decode(errors='replace')}")
    report = json.loads(out)
    if set(report["warmup_statuses"]) != {"200"}:
        raise RuntimeError(f"{target.name} answered the warm-up with {report['warmup_statuses']}")
    return report, cpu, pg, busy / total if total else 0.0


async def alternate(targets: Sequence[Target], mode: str, during: Callable[[Target], Any] | None = None,
                    **job: Any) -> dict[str, Result]:
    """ROUNDS turns of each target; ``during(target)``, if given, is an async context around each."""
    results = {target.name: Result() for target in targets}
    for _ in range(ROUNDS):
        for target in targets:
            async with (during(target) if during else nullcontext()):
                results[target.name].add_run(*await drive(target, mode, **job))
    return results


@dataclass
class Bench:
    targets: list[Target]
    dsn: str
    box: Mailbox
    account: AccountRef
    folds: list[float] = field(default_factory=list)  # seconds each fold during the ``folding`` case took
    results: dict[str, dict[str, Result]] = field(default_factory=dict)  # by case, for the targets at the end
    last_mail: datetime = field(default_factory=lambda: datetime.now(timezone.utc) - timedelta(hours=1))

    @asynccontextmanager
    async def folding(self, target: Target) -> AsyncIterator[None]:
        """While the card is under load, new mail is folded every FOLD_EVERY seconds, as a
        harvest would (its default is every 300 s): each fold adds load on PostgreSQL and
        makes the kept reply times of the correspondents it touched stale."""
        if target.name != "card":
            yield
            return
        async with asyncpg.create_pool(self.dsn, min_size=1, max_size=2) as pool:
            store = PgMetricsStore(pool, InsightSettings())

            async def fold_now_and_then() -> None:
                while True:
                    await asyncio.sleep(FOLD_EVERY)
                    now = datetime.now(timezone.utc)
                    rows = self.box.rows(FOLD_ROWS, self.last_mail, now)
                    self.last_mail = now
                    began = time.perf_counter()
                    await pool.copy_records_to_table("raw_headers", records=rows, columns=COLUMNS)
                    await store.aggregate(self.account)
                    self.folds.append(time.perf_counter() - began)

            task = asyncio.create_task(fold_now_and_then())
            try:
                yield
            finally:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task


# -- the cases -------------------------------------------------------------------------------------

HEADER = ["server", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "server cpu s/1k", "pg cpu s/1k",
          "loadgen cpu s/1k", "machine busy", "not 200"]


def rows_of(results: dict[str, Result]) -> list[list[object]]:
    return [[name, r.count, round(r.rate), r.ms(50), r.ms(90), r.ms(99), r.ms(100), r.per_thousand(r.server_cpu),
             r.per_thousand(r.pg_cpu), r.per_thousand(r.client_cpu), f"{max(r.machine_busy):.0%}", r.failures]
            for name, r in results.items()]


def target_note(results: dict[str, Result]) -> str:
    bare, card = results["bare aiohttp"], results["card"]
    return (f"target: card p99 < {TARGET_P99_MS:.0f} ms at {RATE:.0f}/s: {card.ms(99):.2f} ms "
            f"{verdict(card.ms(99) < TARGET_P99_MS and card.failures == 'none')} "
            f"(bare aiohttp's p99 in this run: {bare.ms(99):.2f} ms; card/bare p50 {ratio(card.ms(50), bare.ms(50))}, "
            f"p99 {ratio(card.ms(99), bare.ms(99))})")


async def bench_rate(bench: Bench) -> None:
    results = await alternate(bench.targets, "rate", rate=RATE, seconds=RATE_SECONDS, connections=RATE_CONNECTIONS)
    bench.results["rate"] = results
    table(f"1. fixed rate: {RATE:.0f} requests/s open loop for {RATE_SECONDS:.0f} s, {ROUNDS} alternating rounds; "
          "latency from when each request was due", HEADER, rows_of(results), [target_note(results)])


async def bench_folding(bench: Bench) -> None:
    results = await alternate(bench.targets, "rate", during=bench.folding, rate=RATE, seconds=RATE_SECONDS,
                              connections=RATE_CONNECTIONS)
    folds = sorted(bench.folds)
    table(f"2. fixed rate while folding (a stress case): as 1, and during the card's turns {FOLD_ROWS} new messages "
          f"are folded every {FOLD_EVERY:.0f} s, 150 times as often as harvest syncs an account by default",
          HEADER, rows_of(results),
          [target_note(results) + " (the target is case 1's)", f"folds during the card's turns: {len(folds)}, each "
           f"{folds[0] * 1000 if folds else 0:.0f}-{folds[-1] * 1000 if folds else 0:.0f} ms; each makes the kept "
           "reply times of the correspondents it touched stale"])


async def bench_saturation(bench: Bench) -> None:
    results = await alternate(bench.targets, "closed", seconds=SATURATION_SECONDS, connections=CONNECTIONS)
    bench.results["saturation"] = results
    bare, card = results["bare aiohttp"], results["card"]
    table(f"3. saturation: {CONNECTIONS} connections, closed loop, {SATURATION_SECONDS:.0f} s, "
          f"{ROUNDS} alternating rounds", HEADER, rows_of(results),
          [f"per card request: web {us_per_request(card, card.server_cpu):.0f} us of CPU, its PostgreSQL backends "
           f"{us_per_request(card, card.pg_cpu):.0f} us, the load generator {us_per_request(card, card.client_cpu):.0f}"
           f" us; per bare request: server {us_per_request(bare, bare.server_cpu):.0f} us, load generator "
           f"{us_per_request(bare, bare.client_cpu):.0f} us"])


def us_per_request(result: Result, seconds: float) -> float:
    return result.per_thousand(seconds) * 1000


def targets_note(bench: Bench) -> list[str]:
    """Issue 16's card targets, each against the bare endpoint of the same run."""
    lines = []
    saturation, rate = bench.results.get("saturation"), bench.results.get("rate")
    if saturation is not None:
        bare, card = saturation["bare aiohttp"], saturation["card"]
        cpu = card.per_thousand(card.server_cpu) / bare.per_thousand(bare.server_cpu) if bare.server_cpu else 0.0
        throughput = card.rate / bare.rate if bare.rate else 0.0
        lines += [f"card server CPU per request / bare's: {cpu:.2f}x (web {us_per_request(card, card.server_cpu):.0f}"
                  f" us, bare {us_per_request(bare, bare.server_cpu):.0f} us; PostgreSQL "
                  f"{us_per_request(card, card.pg_cpu):.0f} us more per card, not in the ratio); target <= "
                  f"{TARGET_CPU_RATIO:.0f}x: {verdict(0 < cpu <= TARGET_CPU_RATIO and card.failures == 'none')}",
                  f"card / bare saturation throughput: {throughput:.2f} ({card.rate:,.0f} / {bare.rate:,.0f} req/s); "
                  f"target >= {TARGET_SATURATION}: "
                  f"{verdict(throughput >= TARGET_SATURATION and card.failures == 'none')} (a MISS too if not every "
                  "answer was 200)"]
    if rate is not None:
        card = rate["card"]
        machine = (f"this machine's bare endpoint saturates at {saturation['bare aiohttp'].rate:,.0f} req/s in this run"
                   if saturation is not None else "the bare endpoint's saturation was not measured in this run")
        lines.append(f"card p99 at {RATE:.0f}/s: {card.ms(99):.2f} ms, target < {TARGET_P99_MS:.0f} ms: "
                     f"{verdict(card.ms(99) < TARGET_P99_MS and card.failures == 'none')} ({machine})")
    return lines


CASES: dict[str, Callable[[Bench], Awaitable[None]]] = {"rate": bench_rate, "folding": bench_folding,
                                                        "saturation": bench_saturation}


# -- the stack and its mail ------------------------------------------------------------------------

@asynccontextmanager
async def web_stack(tmp: Path, dsn: str) -> AsyncIterator[Stack]:
    oauth = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]})
    await oauth.start()
    vault = make_vault(tmp, providers=providers(oauth))
    vault.slice["config"]["log_level"] = "INFO"
    web: WebProcess = make_web(tmp, vault.state_dir, vault.runtime_dir, f"{dsn}&application_name={WEB_APP_NAME}",
                               providers(oauth),
                               {"api_requests_per_minute": 100_000, "api_burst": 10_000})
    web.slice["config"]["log_level"] = "INFO"  # the product's default; tests run web at DEBUG
    try:
        await vault.start()
        await web.start()
        assert web.process is not None
        await vault.register(web.process.pid, "web")
        yield Stack(oauth, vault, web, dsn)
    finally:
        await web.stop()
        await vault.stop()
        await oauth.stop()


async def fill(stack: Stack, account: AccountRef) -> tuple[Mailbox, str]:
    """The account's mail, folded; the mailbox (to draw correspondents from) and a summary."""
    box = Mailbox.make(account, SEED)
    now = datetime.now(timezone.utc)
    rows = box.rows(MAIL, now - timedelta(days=730), now - timedelta(hours=1))
    async with asyncpg.create_pool(stack.dsn, min_size=1, max_size=2) as pool:
        await pool.copy_records_to_table("raw_headers", records=rows, columns=COLUMNS)
        began = time.perf_counter()
        await PgMetricsStore(pool, InsightSettings()).aggregate(account)
        folded = time.perf_counter() - began
        await profiles(pool, box, account.id)
        # What autovacuum does within a minute of a harvest this size; done now, it does not
        # land in the middle of a timed case.
        await pool.execute("VACUUM (ANALYZE)")
        contacts = await pool.fetchval("SELECT count(*) FROM contacts WHERE account_id = $1", account.id)
        replies = await pool.fetchval("SELECT count(*) FROM message_replies WHERE account_id = $1", account.id)
    return box, f"{MAIL:,} messages, {contacts:,} correspondents, {replies:,} replies matched; folded in {folded:.1f} s"


PHOTO = b"\x89PNG\r\n\x1a\n" + bytes(2048)  # a small PNG's size: the card carries its URL, never its bytes


async def profiles(pool: asyncpg.Pool, box: Mailbox, account: int) -> None:
    """An address book with a card for every other correspondent, as a .vcf import writes it."""
    user = await pool.fetchval("SELECT user_id FROM mail_accounts WHERE id = $1", account)
    cards = {f"vcf:{n}": Profile((person,), name=f"Person {n}", organization=f"Company {n % 50}", title="Engineer",
                                 photo=Photo("image/png", PHOTO) if n % 4 == 0 else None,
                                 links=(Link("url", f"https://example.test/people/{n}", "home"),
                                        Link("social", f"@person{n}", "mastodon")))
             for n, person in enumerate(box.people) if n % 2 == 0}
    async with pool.acquire() as conn, conn.transaction():
        book = await conn.fetchval("INSERT INTO address_books (user_id, kind, label) VALUES ($1, 'vcf', "
                                   "'Bench contacts') RETURNING id", user)
        await rows.put_cards(conn, book, user, cards)
        await rows.bump_version(conn, user)


async def card_paths(stack: Stack, box: Mailbox, account: int, token: str) -> tuple[list[str], dict[str, Any], str]:
    """PATHS card paths, Zipf-like; each distinct one checked to answer 200; the busiest one's body."""
    rng, drawn, known, cold = random.Random(SEED), list[str](), dict[str, Any](), list[int]()
    box.rng = rng
    async with aiohttp.ClientSession(stack.web.url, headers=bearer(token)) as client:
        for _ in range(PATHS * 20):
            if len(drawn) == PATHS:
                break
            path = f"/api/v1/accounts/{account}/correspondents/{quote(box.person(), safe='@')}"
            if path not in known:
                began = time.perf_counter_ns()
                async with client.get(path) as response:
                    known[path] = await response.json() if response.status == 200 else None
                cold.append((time.perf_counter_ns() - began) // 1000)
            if known[path] is not None:
                drawn.append(path)
    if len(drawn) < PATHS:
        raise RuntimeError(f"only {len(drawn)} of {PATHS} drawn correspondents have a card")
    busiest = Counter(drawn).most_common(1)[0][0]
    body: dict[str, Any] = known[busiest]
    sizes = sorted(len(json.dumps(body)) for body in known.values() if body is not None)
    return drawn, body, (
        f"{len(set(drawn))} distinct cards among {PATHS} paths, JSON {sizes[0]:,}-{sizes[-1]:,} bytes (median "
        f"{sizes[len(sizes) // 2]:,}); the baseline serves the busiest one's ({len(json.dumps(known[busiest])):,} "
        f"bytes)\ncold cards (first request for each, one at a time, reply times not yet kept): p50 "
        f"{percentile(cold, 50) / 1000:.2f} ms, p99 {percentile(cold, 99) / 1000:.2f} ms, max {max(cold) / 1000:.2f} ms")


async def run(names: Sequence[str] = ()) -> None:
    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="inboxlens-bench-api-"))
    os.chmod(tmp, 0o711)  # PostgreSQL's and the vault's OS users traverse it
    try:
        async with database(tmp) as dsn, web_stack(tmp, dsn) as stack:
            async with asyncio.timeout(TIMEOUT["setup"]):
                async with stack.browser() as browser:
                    await connect(stack, browser, USER, ZONE)
                    tokens = [await new_token(browser, f"bench {i}") for i in range(TOKENS)]
                account = AccountRef(await account_id(stack, USER), USER, ZONE)
                box, mail = await fill(stack, account)
                paths, body, cards = await card_paths(stack, box, account.id, tokens[0])
            print(f"stack: web and vault processes, PostgreSQL, aiohttp {aiohttp.__version__}; "
                  f"set up in {time.perf_counter() - began:.0f} s\nmail: {mail}\ncards: {cards}")
            async with running(Bare(body)) as bare:
                assert stack.web.process is not None and bare.process is not None
                targets = [Target("bare aiohttp", bare.url, paths, [{}], bare.process.pid),
                           Target("card", stack.web.url, paths, [bearer(token) for token in tokens],
                                  stack.web.process.pid, stack.dsn)]
                bench = Bench(targets, stack.dsn, box, account)
                for name in names or CASES:
                    async with asyncio.timeout(TIMEOUT[name]):
                        await CASES[name](bench)
                table("issue 16.2, the card against the bare endpoint of this run", ["target"],
                      [[line] for line in targets_note(bench)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\napi suite: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    from . import __main__ as bench_main

    bench_main.main(["api", *sys.argv[1:]])
