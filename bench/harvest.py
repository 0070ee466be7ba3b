"""Harvest benchmarks: end-to-end messages per second and peak memory, against bare IMAP fetches.

``python -m bench harvest`` (or ``make bench``; ``python -m bench harvest rate`` or ``memory``
for one case). One run starts, all on this machine: an embedded PostgreSQL (as the OS user
``inboxlens-test-pg`` when root, as the tests do), the test OAuth provider, a Dovecot with
XOAUTH2 on loopback and a vault process; it migrates a database, adds one account per
mailbox size with a refresh token in the vault (``tests/harvest/conftest.py::Mail``), and
writes ``realistic_messages`` (every one forced into INBOX) into a Maildir once per size.

- ``rate``, 20,000 messages, warm Dovecot cache, the same header fields everywhere
  (``HEADER_FIELDS`` plus UID INTERNALDATE FLAGS), rounds alternating so noise hits all:

  a. stdlib ``imaplib``, one ``UID FETCH 1:*`` (the ceiling; in a worker thread, since a
     blocking client must not stall the loop that serves Dovecot's token introspection);
  b. aioimaplib 2.0.3 as shipped, ``UID FETCH`` in batches of 200 (larger batches hang it:
     /work/shared/notes/imap-and-dovecot.md), each under a timeout;
  c. our client alone: ``ImapSession.fetch_headers`` in batches of ``harvest.batch_size``;
  d. end to end: ``Scheduler.once(account)`` from empty harvest tables (vault token, login,
     LIST, EXAMINE, SEARCH, fetch, parse, store), first-sync window 3,650 days.

  a-c time the fetches only (after login and EXAMINE); d is timed whole. Targets: d/b >= 0.5
  (the first harvest issue) and d/a >= 0.3 (issue 16.1; 0.5 the moonshot). A parse-only line (``parse_header_block`` over c's answers, in-process)
  shows how the end-to-end time splits.
- ``memory``: d in a child process (``python -m bench.harvest --child``) for 20,000 and for
  100,000 messages; the child reports its VmHWM (peak RSS) before and after the harvest.
  Flat in the number of messages means the two peaks are about equal. The child imports only
  what a harvest process imports (none of the test helpers), so its peak is the harvest's.
  The vault authorises a caller by PID in development mode: the child's PID is registered
  as harvest, and the child waits for "go" until the vault has logged the registration.
- ``loop``: d in that child on stock asyncio and on uvloop, alternating (issue 16.7); not in
  the default run: ``python -m bench loops`` runs it, beside the other children's loop cases.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import asyncpg

from inboxlens.config.schema import HarvestConfig
from inboxlens.config.vault import ProviderConfig
from inboxlens.harvest.imap import ImapSession
from inboxlens.harvest.scheduler import Limits, Scheduler
from inboxlens.harvest.sync import HEADER_FIELDS, Fetched, SyncSettings
from inboxlens.vault.client import VaultClient

from .report import ratio, table, verdict
from .stack import mail_stack, version

if TYPE_CHECKING:  # the test helpers are imported where the parent uses them: never in the child
    from tests.harvest.conftest import Mail

REPO = Path(__file__).resolve().parents[1]
SMALL, LARGE = 20_000, 100_000
SEEDS = {SMALL: 20, LARGE: 100}
ROUNDS = 3  # each side this many times, alternating (the order reversed every other round)
BATCH = HarvestConfig().batch_size  # 250, the product's default
AIO_BATCH = 200  # aioimaplib as shipped hangs on FETCH answers of ~1,000+ messages
FETCH_TIMEOUT = 30.0  # per aioimaplib command
CHILD_TIMEOUT = 120.0
CASE_TIMEOUT = {"rate": 150.0, "memory": 300.0, "loop": 60.0}
LOOP_ROUNDS = 3  # the loop case: d in a child on each event loop, alternating
TARGET = 0.5  # d / b
TARGET_A = 0.3  # d / a, issue 16.1
FLAT = 1.10  # peak at 100k / peak at 20k
ITEMS = f"(UID INTERNALDATE FLAGS BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})])"  # as fetch_headers asks
CHILD = (sys.executable, "-m", "bench.harvest", "--child")
_FETCH_LINE = re.compile(rb"(?:\* )?\d+ FETCH \(")


@dataclass
class Run:
    """One timed pass over a mailbox."""

    messages: int
    seconds: float
    header_bytes: int = 0
    cpu: float = 0.0  # CPU seconds of this process (all its threads) meanwhile

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


@dataclass
class Runs:
    runs: list[Run] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(r.messages for r in self.runs)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def cpu(self) -> float:
        return sum(r.cpu for r in self.runs)

    def spread(self) -> str:
        return " / ".join(f"{r.rate:,.0f}" for r in self.runs)


@dataclass
class Box:
    """One mailbox size: its user, account and UIDs."""

    user: str
    account: int
    count: int
    uids: list[int]
    written_s: float
    cold_fetch: Run


@dataclass
class Bench:
    mail: Mail
    boxes: dict[int, Box] = field(default_factory=dict)

    async def token(self, box: Box) -> str:
        return (await self.mail.client.get(str(box.account))).token

    async def box(self, count: int) -> Box:
        """The mailbox of ``count`` messages, written (and Dovecot's cache warmed) once per run."""
        if count not in self.boxes:
            from tests.support.maildir import realistic_messages

            user = f"bench-{count // 1000}k@example.test"
            began = time.perf_counter()

            def write() -> None:
                messages = [m.copy_to("INBOX") for m in realistic_messages(user, count, SEEDS[count])]
                self.mail.dovecot.deliver(user, messages)

            await asyncio.to_thread(write)
            written = time.perf_counter() - began
            account = await self.mail.add_account(user)
            token = (await self.mail.client.get(str(account))).token
            uids, cold = await asyncio.to_thread(imaplib_fetch, self.mail.dovecot.port, user, token)
            if cold.messages != count:
                raise RuntimeError(f"Dovecot has {cold.messages} messages in {user}'s INBOX, not {count}")
            self.boxes[count] = Box(user, account, count, uids, written, cold)
        return self.boxes[count]


# -- the four sides -------------------------------------------------------------------------

def imaplib_fetch(port: int, user: str, token: str) -> tuple[list[int], Run]:
    """a. stdlib imaplib, XOAUTH2, one ``UID FETCH 1:*``; blocking (run it in a thread)."""
    import imaplib

    conn = imaplib.IMAP4("127.0.0.1", port)
    try:
        conn.authenticate("XOAUTH2", lambda _: f"user={user}\1auth=Bearer {token}\1\1".encode())
        conn.select("INBOX", readonly=True)
        typ, found = conn.uid("SEARCH", "ALL")
        if typ != "OK":
            raise RuntimeError(f"imaplib UID SEARCH: {typ}")
        uids = sorted(int(u) for u in found[0].split())
        began, cpu = time.perf_counter(), time.process_time()
        typ, data = conn.uid("FETCH", "1:*", ITEMS)
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
        if typ != "OK":
            raise RuntimeError(f"imaplib UID FETCH: {typ}")
        literals = [item[1] for item in data if isinstance(item, tuple)]
        return uids, Run(len(literals), elapsed, sum(len(h) for h in literals), cpu)
    finally:
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


async def aioimaplib_fetch(port: int, user: str, token: str, uids: Sequence[int]) -> Run:
    """b. aioimaplib as shipped (its own protocol), ``UID FETCH`` in batches of 200."""
    import aioimaplib

    imap = aioimaplib.IMAP4("127.0.0.1", port, timeout=FETCH_TIMEOUT)
    try:
        await imap.wait_hello_from_server()
        if (await imap.xoauth2(user, token)).result != "OK":
            raise RuntimeError("aioimaplib: XOAUTH2 refused")
        if (await imap.select("INBOX")).result != "OK":
            raise RuntimeError("aioimaplib: SELECT failed")
        messages = header_bytes = 0
        began, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(uids), AIO_BATCH):
            response = await asyncio.wait_for(imap.uid("fetch", uid_set(uids[start:start + AIO_BATCH]), ITEMS),
                                              FETCH_TIMEOUT)
            if response.result != "OK":
                raise RuntimeError(f"aioimaplib: UID FETCH answered {response.result}")
            messages += sum(1 for line in response.lines if isinstance(line, bytes) and _FETCH_LINE.match(line))
            header_bytes += sum(len(line) for line in response.lines if isinstance(line, bytearray))
        return Run(messages, time.perf_counter() - began, header_bytes, time.process_time() - cpu)
    finally:
        try:
            await asyncio.wait_for(imap.logout(), 5)
        except (OSError, TimeoutError, aioimaplib.AioImapException):
            pass
        if imap.protocol.transport is not None:
            imap.protocol.transport.close()


async def ours_fetch(mail: Mail, user: str, token: str, uids: Sequence[int]) -> tuple[Run, list[Fetched]]:
    """c. ``ImapSession.fetch_headers`` in batches of harvest.batch_size: no parsing, no storing."""
    session = await ImapSession.open(mail.provider())
    try:
        await session.authenticate(user, token)
        await session.examine("INBOX")
        fetched: list[Fetched] = []
        began, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(uids), BATCH):
            fetched += await session.fetch_headers(uids[start:start + BATCH], HEADER_FIELDS, gmail=False)
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    finally:
        await session.logout()
    return Run(len(fetched), elapsed, sum(len(f.header) for f in fetched), cpu), fetched


async def empty_harvest_tables(pool: asyncpg.Pool) -> None:
    """What a first sync starts from: no rows, no checkpoints, no harvest state."""
    await pool.execute("TRUNCATE raw_headers, mailbox_checkpoints, harvest_state")


async def harvest(mail: Mail, account: int) -> Run:
    """d. ``Scheduler.once(account)`` from empty harvest tables, timed whole."""
    await empty_harvest_tables(mail.pool)
    scheduler = mail.scheduler(owner="bench-harvester", batch_size=BATCH, first_sync_days=3650)
    began, cpu = time.perf_counter(), time.process_time()
    stored = await scheduler.once(account)
    return Run(stored, time.perf_counter() - began, cpu=time.process_time() - cpu)


def parse_only(fetched: Sequence[Fetched], settings: SyncSettings) -> Run:
    """For the split: ``parse_header_block`` on c's answers, as AccountSync._parse calls it."""
    from inboxlens.harvest.headers.parse import parse_header_block, parse_internaldate

    began, cpu = time.perf_counter(), time.process_time()
    for f in fetched:
        parse_header_block(f.uid, parse_internaldate(f.internal_date), f.header,
                           trusted_authserv_ids=settings.trusted_authserv_ids, flags=f.flags,
                           gm_msgid=f.gm_msgid, gm_thrid=f.gm_thrid, gm_labels=f.gm_labels)
    return Run(len(fetched), time.perf_counter() - began, cpu=time.process_time() - cpu)


def _us(run: Run | Runs) -> str:
    """CPU microseconds per message."""
    return f"{run.cpu / run.messages * 1e6:.0f}" if run.messages else "-"


def uid_set(uids: Sequence[int]) -> str:
    ranges: list[list[int]] = []
    for uid in uids:
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return ",".join(f"{a}:{b}" if a != b else str(a) for a, b in ranges)


# -- 1. rate ------------------------------------------------------------------------------------

async def bench_rate(bench: Bench) -> None:
    mail, box = bench.mail, await bench.box(SMALL)
    port = mail.dovecot.port
    last: dict[str, list[Fetched]] = {}

    async def side_a() -> Run:
        return (await asyncio.to_thread(imaplib_fetch, port, box.user, await bench.token(box)))[1]

    async def side_b() -> Run:
        return await aioimaplib_fetch(port, box.user, await bench.token(box), box.uids)

    async def side_c() -> Run:
        run, last["fetched"] = await ours_fetch(mail, box.user, await bench.token(box), box.uids)
        return run

    async def side_d() -> Run:
        return await harvest(mail, box.account)

    sides: dict[str, Callable[[], Awaitable[Run]]] = {"a": side_a, "b": side_b, "c": side_c, "d": side_d}
    results = {name: Runs() for name in sides}
    for round_ in range(ROUNDS):
        for name in (list(sides) if round_ % 2 == 0 else list(reversed(sides))):
            results[name].runs.append(await sides[name]())
    parsed = parse_only(last["fetched"], mail.settings())
    rows_stored = await mail.pool.fetchval("SELECT count(*) FROM raw_headers WHERE account_id = $1", box.account)

    a, b, c, d = (results[name] for name in "abcd")
    labels = {"a": "a. imaplib, one UID FETCH 1:*", "b": f"b. aioimaplib 2.0.3 as shipped, batches of {AIO_BATCH}",
              "c": f"c. ImapSession.fetch_headers, batches of {BATCH}", "d": "d. Scheduler.once: fetch+parse+store"}
    rows = [[labels[n], r.messages, r.seconds, r.cpu, round(r.rate), r.spread(), ratio(r.rate, a.rate),
             ratio(r.rate, b.rate)] for n, r in results.items()]
    rows.append(["for the split: parse only (in-process)", parsed.messages, parsed.seconds, parsed.cpu,
                 round(parsed.rate), "", ratio(parsed.rate, a.rate), ratio(parsed.rate, b.rate)])
    same = {n: {run.header_bytes for run in results[n].runs} for n in "abc"}
    fetched_bytes = "identical" if len(set().union(*same.values())) == 1 else f"DIFFER {same}"
    fetch_s, parse_s, d_s = c.seconds / ROUNDS, parsed.seconds, d.seconds / ROUNDS
    notes = [
        (f"target (issue 16.1): d >= {TARGET_A:.0%} of a: d/a = {d.rate / a.rate:.2f} "
         f"{verdict(d.rate / a.rate >= TARGET_A)}; c/a = {c.rate / a.rate:.2f}; "
         f"earlier target d >= {TARGET:.0%} of b: d/b = {d.rate / b.rate:.2f} {verdict(d.rate / b.rate >= TARGET)}; "
         f"c/b = {c.rate / b.rate:.2f}"),
        (f"CPU of this process per message: a {_us(a)} us, c {_us(c)} us, d {_us(d)} us, parse alone "
         f"{_us(parsed)} us (d runs fetch, parse and store of the batches overlapped: sync._Pipeline)"),
        (f"header bytes fetched by a, b, c: {fetched_bytes} ({next(iter(same['a']), 0):,} per pass); "
         f"d stored {d.runs[-1].messages:,} rows per round ({rows_stored:,} in raw_headers after the last)"),
        (f"split of one d ({d_s:.2f} s): fetch as in c {fetch_s:.2f} s, parse {parse_s:.2f} s, "
         f"d minus both (store, login, search; the store overlaps the next fetch and parse) "
         f"{d_s - fetch_s - parse_s:.2f} s"),
        ("a-c time the fetch commands only (after login and EXAMINE); d is timed whole; CPU s: this "
         "process's CPU time meanwhile (Dovecot's and PostgreSQL's are not in it)"),
    ]
    table(f"1. harvest rate: {SMALL:,} realistic messages in INBOX, warm Dovecot cache, "
          f"{len(HEADER_FIELDS)} header fields + UID INTERNALDATE FLAGS ({ROUNDS} alternating rounds)",
          ["path", "messages", "seconds", "CPU s", "msg/s", "per round", "vs a", "vs b"], rows, notes)


# -- 2. memory -----------------------------------------------------------------------------------

async def bench_memory(bench: Bench) -> None:
    mail = bench.mail
    results: dict[int, tuple[Box, dict[str, Any], Run]] = {}
    for count in (SMALL, LARGE):
        box = await bench.box(count)
        _, warm = await asyncio.to_thread(imaplib_fetch, mail.dovecot.port, box.user, await bench.token(box))
        results[count] = (box, await harvest_in_child(mail, box), warm)
    rows = []
    for count, (box, child, warm) in results.items():
        rows.append([f"{count:,}", child["stored"], child["seconds"], child["cpu"],
                     round(child["stored"] / child["seconds"]), round(warm.rate), child["ready_kb"], child["peak_kb"],
                     child["peak_kb"] - child["ready_kb"], child["rss_kb"]])
    small, large = results[SMALL][1], results[LARGE][1]
    peak_ratio = large["peak_kb"] / small["peak_kb"]
    growth_small, growth_large = small["peak_kb"] - small["ready_kb"], large["peak_kb"] - large["ready_kb"]
    notes = [
        (f"target (issue): peak flat in the number of messages: 100k/20k = {peak_ratio:.2f} "
         f"{verdict(peak_ratio <= FLAT)} (PASS at <= {FLAT:.2f}); growth during the harvest "
         f"{growth_small:,} kB -> {growth_large:,} kB"),
        ("VmHWM ready: after imports, before the harvest; VmHWM end: the peak, read after Scheduler.once; "
         "imaplib msg/s: one UID FETCH 1:* of the same mailbox just before (the ceiling at that size)"),
        *(f"{count:,}: maildir written in {box.written_s:.1f} s (generate + write); Dovecot's first fetch "
          f"(cold cache) {box.cold_fetch.seconds:.2f} s" for count, (box, _, _) in results.items()),
    ]
    table("2. peak memory of the end-to-end harvest (Scheduler.once in a child process, from empty harvest tables)",
          ["messages", "stored", "seconds", "CPU s", "msg/s", "imaplib msg/s", "VmHWM ready kB", "VmHWM end kB",
           "growth kB", "VmRSS end kB"], rows, notes)


async def harvest_in_child(mail: Mail, box: Box, pythonpath: Sequence[str] = ()) -> dict[str, Any]:
    """d in a child process; ``pythonpath``: more directories before the repository's (bench/loops.py)."""
    await empty_harvest_tables(mail.pool)
    process = await asyncio.create_subprocess_exec(
        *CHILD, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        cwd=REPO, env={**os.environ, "PYTHONPATH": os.pathsep.join([*pythonpath, str(REPO)])})
    assert process.stdin is not None and process.stdout is not None
    try:
        provider = dict(vars(mail.provider()))
        process.stdin.write(json.dumps({"dsn": mail.dsn, "socket": str(mail.vault.socket), "provider": provider,
                                        "account": box.account}).encode() + b"\n")
        await process.stdin.drain()
        await mail.vault.register(process.pid, "harvest")  # returns once the vault has logged it
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        line = await asyncio.wait_for(process.stdout.readline(), CHILD_TIMEOUT)
        if not line:
            raise RuntimeError(f"the harvest child exited {await process.wait()} without a result")
        result: dict[str, Any] = json.loads(line)
        await asyncio.wait_for(process.wait(), 10)
        return result
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- 3. event loop (issue 16.7; run by ``python -m bench loops harvest``) --------------------------

async def bench_loop(bench: Bench) -> None:
    from .loops import UVLOOP_SITE, loop_verdict

    box = await bench.box(SMALL)
    sides: dict[str, Sequence[str]] = {"asyncio": (), "uvloop": (str(UVLOOP_SITE),)}
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for round_ in range(LOOP_ROUNDS):
        for side in (list(sides) if round_ % 2 == 0 else list(reversed(sides))):
            results[side].append(await harvest_in_child(bench.mail, box, sides[side]))
    rows, rates = [], {}
    for side, runs in results.items():
        stored, seconds, cpu = (sum(r[key] for r in runs) for key in ("stored", "seconds", "cpu"))
        rates[side] = stored / seconds
        rows.append([side, " ".join(sorted({r["loop"] for r in runs})), stored, seconds, f"{cpu / stored * 1e6:.0f}",
                     round(rates[side]), " / ".join(f"{r['stored'] / r['seconds']:,.0f}" for r in runs),
                     ratio(rates[side], rates["asyncio"])])
    table(f"harvest: d (Scheduler.once, fetch + parse + store) of {SMALL:,} messages in a child process on each "
          f"loop, {LOOP_ROUNDS} alternating rounds (the order reversed every other round)",
          ["child on", "loop class", "stored", "seconds", "CPU us/msg", "msg/s", "per round", "vs asyncio"], rows,
          [loop_verdict("harvest", rates["uvloop"] / rates["asyncio"])])


# -- the child ------------------------------------------------------------------------------------

def _memory_kb() -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmHWM", "VmRSS")}


async def _child() -> None:
    """One harvest, as ``inboxlens.harvest`` runs it: JSON arguments on stdin, then "go"."""
    args = json.loads(sys.stdin.readline())
    ready = _memory_kb()
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")
    pool = await asyncpg.create_pool(args["dsn"], min_size=1, max_size=HarvestConfig().max_connections + 2)
    vault = VaultClient(args["socket"])
    provider = ProviderConfig(**cast(dict[str, Any], {k: tuple(v) if isinstance(v, list) else v
                                                      for k, v in args["provider"].items()}))
    settings = SyncSettings(batch_size=BATCH, first_sync_days=3650, lease=timedelta(seconds=60),
                            trusted_authserv_ids=frozenset(provider.trusted_authserv_ids), aggregate=False)
    scheduler = Scheduler(pool, vault, ImapSession.open, {"test": provider}, settings,
                          interval=timedelta(minutes=5), limits=Limits(8, 4), owner="bench-child")
    began, cpu = time.perf_counter(), time.process_time()
    stored = await scheduler.once(args["account"])
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    await vault.close()
    await pool.close()
    end = _memory_kb()
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over execve, so a child forked
    # from a parent that holds 100,000 generated messages would report the parent's size.
    loop = type(asyncio.get_running_loop())
    print(json.dumps({"stored": stored, "seconds": seconds, "cpu": cpu, "ready_kb": ready["VmHWM"],
                      "peak_kb": end["VmHWM"], "rss_kb": end["VmRSS"], "loop": f"{loop.__module__}.{loop.__name__}"}),
          flush=True)


# -- the suite -----------------------------------------------------------------------------------

CASES: dict[str, Callable[[Bench], Awaitable[None]]] = {"rate": bench_rate, "memory": bench_memory, "loop": bench_loop}
DEFAULT_CASES = ("rate", "memory")  # "loop" runs with the loops suite


async def run(names: Sequence[str] = ()) -> None:
    from tests.harvest.conftest import Mail

    began = time.perf_counter()
    async with AsyncExitStack() as stack:
        rig = await mail_stack(stack, "inboxlens-bench-harvest-", pool_size=10)
        pg_version, oauth, dovecot, vault, dsn, pool, client = (rig.pg_version, rig.oauth, rig.dovecot, rig.vault,
                                                                rig.dsn, rig.pool, rig.client)
        bench = Bench(Mail(oauth, dovecot, vault, dsn, pool, client))
        dovecot_version = await version("dovecot")
        print(f"stack: PostgreSQL {pg_version}, Dovecot {dovecot_version}, aioimaplib {metadata.version('aioimaplib')}, "
              f"asyncpg {metadata.version('asyncpg')}; started in {time.perf_counter() - began:.1f} s")
        for name in names or DEFAULT_CASES:
            async with asyncio.timeout(CASE_TIMEOUT[name]):
                await CASES[name](bench)
        stopping = time.perf_counter()
    print(f"\nharvest suite: {time.perf_counter() - began:.0f} s (stopping and cleaning up: "
          f"{time.perf_counter() - stopping:.1f} s)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        asyncio.run(_child())
    else:
        from . import __main__ as bench_main

        bench_main.main(["harvest", *sys.argv[1:]])
