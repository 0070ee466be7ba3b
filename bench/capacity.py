"""Capacity (issue 16.6): how many accounts one node syncs every 5 minutes, and what bounds it.

``python -m bench capacity``. One run starts, on this machine only: an embedded PostgreSQL (as
``bench harvest`` does), the test OAuth provider, Dovecot with XOAUTH2 on loopback and a vault
process. It adds ``ACCOUNTS`` accounts (default 1,000; ``INBOXLENS_BENCH_CAPACITY_ACCOUNTS``),
each with its refresh token sealed in the vault, and writes ``realistic_messages`` straight
into each Dovecot user's Maildir (in /dev/shm): ``MESSAGES`` (default 200;
``INBOXLENS_BENCH_CAPACITY_MESSAGES``) in INBOX and Sent (Archive's go to INBOX, since harvest
reads INBOX and Sent), keeping the user's next ``ROUNDS * NEW`` messages for later.

The harvest runs in a child process (``bench/capacity_child.py``), registered with
the vault as harvest, built as ``inboxlens.harvest`` builds it: the product's ``Scheduler``,
``HarvestConfig`` defaults (8 connections, 4 per host, batches of 250, folding after each
sync), IMAP over TLS as with every real provider (the process's one default SSL context,
``imap.default_tls``, which reads ``SSL_CERT_FILE``: the system's CA bundle plus the test CA).
The child syncs every due account with ``Scheduler.once`` until none is left, 8 at a time.

1. First syncs of every account (untimed; first-sync window 3,650 days, so every message
   is stored and folded and the database holds a few hundred rows an account).
2. ``ROUNDS`` steady-state rounds: ``NEW`` new messages into every mailbox, every account
   made due, every account synced once. The run reads the CPU time of each process from
   /proc around each round: the harvest child, the vault, PostgreSQL (the postmaster and
   its children), Dovecot (its process group; exited imap processes are in their parent's
   cutime) and this process (the OAuth provider, answering Dovecot's token introspection).
   Rounds take turns (``MODES``): in instrumented ones ``bench.phases.PhaseClock``
   splits the harvest's CPU into phases (login, token, fetch, parse, store, fold, lease; the
   rest is sync code and the event loop), right though eight syncs interleave; plain rounds
   give the harvest's CPU without the clock, for the capacity. Then ``Scheduler.run`` itself
   runs for ``RUN_SECONDS`` with every account due (``TICK`` s ticks; a slot that frees takes
   the next due account at once): the syncs a second it starts, the rate its 8 slots allow.
3. The baseline, after each plain round: a bare ``imaplib`` session per account over
   TLS (login, EXAMINE and FETCH of that round's new messages in INBOX and Sent, logout), one
   after another in a thread, for ``BASELINE_SAMPLE`` accounts: the least CPU any client
   spends to pick up the same mail.

Accounts per node at the 300 s interval on 2 cores: the harvest is one asyncio process (one
core); PostgreSQL and the vault share the other. Dovecot and the provider stand in for the
mail provider (Gmail's machines in production), so they are printed and counted in a second,
loopback-only figure. The run also prints what the rounds achieved with everything on these 2
cores, and what the product's scheduler loop keeps up with at the default configuration.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from inboxlens.config.vault import ProviderConfig
from inboxlens.vault.client import VaultClient

from .capacity_child import HARVEST, INTERVAL, LIMITS, TICK
from .stack import mail_stack, version
from .phases import EVENT_LOOP, UNTAGGED
from .report import ratio, table

if TYPE_CHECKING:  # the test helpers are imported where the parent uses them: never in the child
    from tests.support.dovecot import Dovecot
    from tests.support.maildir import Message
    from tests.support.oauth_provider import OAuthProvider
    from tests.support.vaultproc import VaultProcess

REPO = Path(__file__).resolve().parents[1]
ACCOUNTS = int(os.environ.get("INBOXLENS_BENCH_CAPACITY_ACCOUNTS", "1000"))
MESSAGES = int(os.environ.get("INBOXLENS_BENCH_CAPACITY_MESSAGES", "200"))
NEW = 3  # new messages per account per round
ROUNDS = int(os.environ.get("INBOXLENS_BENCH_CAPACITY_ROUNDS", "2"))  # taking MODES in turn
INSTRUMENTED, PLAIN = "instrumented", "plain"
MODES = (INSTRUMENTED, PLAIN)
BASELINE_SAMPLE = 200  # bare imaplib sessions per baseline pass
CORES = 2
SYSTEM_CAS = Path("/etc/ssl/certs/ca-certificates.crt")
# Dovecot's 200,000 files in memory: on a shared disk writing and removing them took 20-115 s and
# 20-40 s; Dovecot stands in for the mail provider, so its disk is no part of the node.
MAIL_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None
FIRST_TIMEOUT, ROUND_TIMEOUT, SUITE_TIMEOUT = 420.0, 150.0, 900.0
RUN_SECONDS = 2.5  # of Scheduler.run, with every account due
CHILD = (sys.executable, "-m", "bench.capacity_child")
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
PROCESSES = ("harvest", "vault", "postgresql", "dovecot", "provider")
PHASES = ("login", "tls context", "token", "fetch", "parse", "store", "fold", "lease", UNTAGGED, EVENT_LOOP)
PHASE_NOTES = {
    "login": "connect, TLS handshake, XOAUTH2, ID, LOGOUT",
    "tls context": "ssl.create_default_context(): the CA bundle read (imap.default_tls: once a process)",
    "token": "VaultClient.get (a cached access token)",
    "fetch": "LIST, EXAMINE, UID SEARCH, UID FETCH (send and receive)",
    "parse": "AccountSync.parse: the header fields into a HeaderRecord",
    "store": "checkpoint, raw rows (COPY + INSERT), checkpoint update under the lease",
    "fold": "PgMetricsStore.aggregate: raw rows into index, rollups, insights",
    "lease": "schedule_new_accounts, claim_due, release",
    UNTAGGED: "sync and scheduler code between them (pipeline, telemetry, logging)",
    EVENT_LOOP: "asyncio itself: select, scheduling callbacks",
}


# -- CPU time from /proc ---------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after "pid (comm) ": state ppid pgrp ...; None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _seconds(fields: list[str], children: bool = True) -> float:
    """utime + stime (+ cutime + cstime: the children it has waited for)."""
    ticks = sum(int(f) for f in fields[11:15 if children else 13])
    return ticks / CLOCK_TICK


def _processes() -> dict[int, list[str]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            found[int(entry)] = fields
    return found


def tree_cpu(table_: dict[int, list[str]], root: int) -> float:
    """CPU seconds of ``root`` and its descendants, living or waited for."""
    total, level = 0.0, {root}
    while level:
        total += sum(_seconds(table_[pid]) for pid in level if pid in table_)
        level = {pid for pid, fields in table_.items() if int(fields[1]) in level}
    return total


def group_cpu(table_: dict[int, list[str]], pgid: int) -> float:
    return sum(_seconds(fields) for fields in table_.values() if int(fields[2]) == pgid)


# -- the stack --------------------------------------------------------------------------------------

@dataclass
class Account:
    id: int
    address: str
    pending: list[Message]  # its next messages, NEW a round


@dataclass
class Rig:
    pool: asyncpg.Pool
    oauth: OAuthProvider
    dovecot: Dovecot
    vault: VaultProcess
    dsn: str
    postmaster: int
    provider: ProviderConfig
    ca_bundle: Path
    log: Path
    accounts: list[Account] = field(default_factory=list)
    child: asyncio.subprocess.Process | None = None

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each process of the stack."""
        now = _processes()
        assert self.child is not None and self.vault.process is not None and self.dovecot.pid is not None
        return {"harvest": _seconds(now[self.child.pid], children=False),
                "vault": tree_cpu(now, self.vault.process.pid), "postgresql": tree_cpu(now, self.postmaster),
                "dovecot": group_cpu(now, self.dovecot.pid),
                "provider": _seconds(now[os.getpid()], children=False)}

    async def command(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        child = self.child
        assert child is not None and child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps(command).encode() + b"\n")
        await child.stdin.drain()
        line = await asyncio.wait_for(child.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the harvest child exited {await child.wait()}; its log: {self.log}")
        answer: dict[str, Any] = json.loads(line)
        return answer


@dataclass
class Measured:
    """One command to the child, with every process's CPU meanwhile."""

    what: str
    wall: float
    cpu: dict[str, float]
    answer: dict[str, Any]

    @property
    def syncs(self) -> int:
        return int(self.answer.get("syncs", self.answer.get("sessions", 0)))

    def ms(self, process: str) -> float:
        return self.cpu[process] / self.syncs * 1000 if self.syncs else 0.0


async def measured(rig: Rig, what: str, command: dict[str, Any], timeout: float) -> Measured:
    before, began = rig.cpu(), time.perf_counter()
    answer = await rig.command(command, timeout)
    wall, after = time.perf_counter() - began, rig.cpu()
    return Measured(what, wall, {p: after[p] - before[p] for p in PROCESSES}, answer)


def fill_mailboxes(dovecot: Dovecot, addresses: Sequence[str]) -> list[list[Message]]:
    """Each user's first MESSAGES messages into their Maildir; returns the rest of each (blocking)."""
    from tests.support.maildir import realistic_messages

    pending = []
    for seed, address in enumerate(addresses):
        messages = [m if m.folder != "Archive" else m.copy_to("INBOX")
                    for m in realistic_messages(address, MESSAGES + ROUNDS * NEW, seed)]
        dovecot.deliver(address, messages[:MESSAGES])
        pending.append(messages[MESSAGES:])
    return pending


def deliver_new(dovecot: Dovecot, accounts: Sequence[Account], round_: int) -> dict[str, dict[str, int]]:
    """NEW more messages for every account; returns how many went into each mailbox (blocking)."""
    counts: dict[str, dict[str, int]] = {}
    for account in accounts:
        batch = account.pending[round_ * NEW:(round_ + 1) * NEW]
        dovecot.deliver(account.address, batch)
        counts[account.address] = {box: sum(m.folder == box for m in batch) for box in ("INBOX", "Sent")}
    return counts


async def add_accounts(rig: Rig, client: VaultClient, count: int) -> None:
    """Users, accounts and sealed refresh tokens in the vault, as web would make them."""
    from tests.harvest.conftest import CLIENT_ID

    addresses = [f"cap{n:05d}@example.test" for n in range(count)]
    ids = await rig.pool.fetch(
        "WITH u AS (INSERT INTO users (email) SELECT unnest($1::text[]) RETURNING id, email) "
        "INSERT INTO mail_accounts (user_id, address, provider) SELECT id, email, 'test' FROM u "
        "RETURNING id, address", addresses)
    key = await client.public_key()
    await rig.vault.register(os.getpid(), "web")
    for row in ids:  # no openid scope: no RS256 id_token signed by the provider on every refresh
        refresh = rig.oauth.issue_refresh_token(row["address"], CLIENT_ID, scope="email offline_access")
        await client.set(str(row["id"]), "test", key.seal(str(row["id"]), "test", refresh))
    pending = await asyncio.to_thread(fill_mailboxes, rig.dovecot, [row["address"] for row in ids])
    rig.accounts = [Account(row["id"], row["address"], rest) for row, rest in zip(ids, pending)]


async def start_child(rig: Rig) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SSL_CERT_FILE": str(rig.ca_bundle)}
    rig.child = await asyncio.create_subprocess_exec(*CHILD, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                     cwd=REPO, env=env)
    assert rig.child.stdin is not None
    rig.child.stdin.write(json.dumps({"dsn": rig.dsn, "socket": str(rig.vault.socket), "log": str(rig.log),
                                      "provider": dict(vars(rig.provider))}).encode() + b"\n")
    await rig.child.stdin.drain()
    await rig.vault.register(rig.child.pid, "harvest")
    await rig.command({"do": "ready"}, 30)


# -- the steady state ---------------------------------------------------------------------------------

async def bench_steady(rig: Rig) -> None:
    n = len(rig.accounts)
    first = await measured(rig, "first", {"do": "sync", "instrumented": False}, FIRST_TIMEOUT)
    check(first, n, None)
    print(f"\nfirst syncs: {n:,} accounts, {first.answer['stored']:,} messages stored and folded in {first.wall:.1f} s "
          f"(harvest {first.cpu['harvest']:.1f} s CPU, PostgreSQL {first.cpu['postgresql']:.1f} s, "
          f"Dovecot {first.cpu['dovecot']:.1f} s)")
    rounds: list[Measured] = []
    baselines: list[Measured] = []
    for round_ in range(ROUNDS):
        counts = await asyncio.to_thread(deliver_new, rig.dovecot, rig.accounts, round_)
        await rig.pool.execute("UPDATE harvest_state SET next_run_at = now()")
        mode = MODES[round_ % len(MODES)]
        done = await measured(rig, mode, {"do": "sync", "instrumented": mode == INSTRUMENTED}, ROUND_TIMEOUT)
        check(done, n, sum(sum(c.values()) for c in counts.values()))
        rounds.append(done)
        if mode == PLAIN:
            sample = [[a.address, counts[a.address]["INBOX"], counts[a.address]["Sent"], a.id]
                      for a in rig.accounts[:BASELINE_SAMPLE]]
            baselines.append(await measured(rig, "baseline", {"do": "baseline", "sessions": sample}, ROUND_TIMEOUT))
    await rig.pool.execute("UPDATE harvest_state SET next_run_at = now()")
    ticks = await rig.command({"do": "ticks", "tick": TICK, "seconds": RUN_SECONDS}, ROUND_TIMEOUT)
    report(rounds, baselines, n, ticks)


def check(done: Measured, accounts: int, new: int | None) -> None:
    outcomes = done.answer["outcomes"]
    if done.syncs != accounts or set(outcomes) != {"ok"} or (new is not None and done.answer["stored"] != new):
        raise RuntimeError(f"{done.what} round: {done.syncs} syncs of {accounts}, outcomes {outcomes}, "
                           f"stored {done.answer['stored']} of {new}")


def _range(values: Sequence[float], digits: int = 2) -> str:
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if f"{low:.{digits}f}" == f"{high:.{digits}f}" else f"{low:.{digits}f}-{high:.{digits}f}"


def report(rounds: list[Measured], baselines: list[Measured], n: int, ticks: dict[str, Any]) -> None:
    rows = [[f"{i + 1}. {r.what}", r.syncs, r.answer["stored"], r.wall, round(r.syncs / r.wall),
             *(f"{r.ms(p):.2f}" for p in PROCESSES)] for i, r in enumerate(rounds)]
    rows += [[f"baseline: bare imaplib session ({b.syncs})", b.syncs, b.answer["fetched"], b.wall,
              round(b.syncs / b.wall), f"{b.answer['client_cpu'] / b.syncs * 1000:.2f} (thread)",
              *(f"{b.ms(p):.2f}" for p in PROCESSES[1:])] for b in baselines]
    table(f"steady state: {n:,} accounts, {NEW} new messages each per round, every account synced once "
          f"(Scheduler.once, {LIMITS.total} at a time), IMAP over TLS; CPU ms per account-sync by process",
          ["round", "syncs", "stored", "wall s", "syncs/s", *PROCESSES], rows,
          ["harvest: the harvest child's CPU (/proc); in instrumented rounds it includes the phase clock; "
           "the baseline's client CPU is its thread's (thread_time)",
           "provider: this process, which serves Dovecot's token introspection (the mail provider's side)"])
    report_phases([r for r in rounds if r.what == INSTRUMENTED], [r for r in rounds if r.what == PLAIN])
    report_capacity(rounds, baselines, ticks)


def report_phases(split: list[Measured], plain: list[Measured]) -> None:
    per_sync = {p: [r.answer["phases"].get(p, 0.0) / r.syncs * 1000 for r in split] for p in PHASES}
    thread = [sum(r.answer["phases"].values()) / r.syncs * 1000 for r in split]
    rows = [[phase, _range(per_sync[phase]), f"{statistics.mean(per_sync[phase]) / statistics.mean(thread):.0%}",
             PHASE_NOTES[phase]] for phase in PHASES]
    rows.append(["sum (the loop's thread)", _range(thread), "100%", "PhaseClock, instrumented rounds"])
    rows.append(["harvest process, instrumented rounds", _range([r.ms("harvest") for r in split]), "",
                 "/proc utime + stime"])
    rows.append(["harvest process, plain rounds", _range([r.ms("harvest") for r in plain]), "",
                 "no clock: the figure the capacity uses"])
    table("harvest CPU per account-sync, by phase (ms; range over the instrumented rounds)",
          ["phase", "ms / sync", "share", "what"], rows)


def report_capacity(rounds: list[Measured], baselines: list[Measured], ticks: dict[str, Any]) -> None:
    def mean(process: str, of: Sequence[Measured]) -> float:
        return statistics.mean(r.ms(process) for r in of)

    plain = [r for r in rounds if r.what == PLAIN]
    harvest = mean("harvest", plain)
    node_other = mean("vault", rounds) + mean("postgresql", rounds)
    mail_side = mean("dovecot", rounds) + mean("provider", rounds)
    tls_context = statistics.mean(r.answer["phases"].get("tls context", 0.0) / r.syncs * 1000
                                  for r in rounds if r.what == INSTRUMENTED)
    bare = statistics.mean(b.answer["client_cpu"] / b.syncs * 1000 for b in baselines)
    bounds = [("harvest core (one asyncio process)", harvest, INTERVAL / harvest * 1000),
              ("other core: PostgreSQL + vault", node_other, INTERVAL / node_other * 1000),
              ("other core on this loopback rig: + Dovecot + provider", node_other + mail_side,
               INTERVAL / (node_other + mail_side) * 1000)]
    node = min(bounds[:2], key=lambda b: b[2])
    rig = min(bounds, key=lambda b: b[2])
    achieved = statistics.mean(r.syncs / r.wall for r in rounds) * INTERVAL
    per_second = ticks["syncs"] / RUN_SECONDS
    scheduler_cap = per_second * INTERVAL
    rows = [[name, f"{ms:.2f}", round(accounts), ratio(accounts, node[2])] for name, ms, accounts in bounds]
    rows += [["measured: rounds here, everything on the 2 cores", "", round(achieved), ratio(achieved, node[2])],
             [f"Scheduler.run, default config ({per_second:.0f} syncs a second, everything on the 2 cores)", "",
              round(scheduler_cap), ratio(scheduler_cap, node[2])],
             ["baseline: harvest core if a sync cost a bare imaplib session", f"{bare:.2f}",
              round(INTERVAL / bare * 1000), ratio(INTERVAL / bare * 1000, node[2])]]
    table(f"accounts per node at the {INTERVAL:.0f} s interval on {CORES} cores (CPU ms per account-sync; "
          f"accounts = {INTERVAL:.0f} s / CPU per sync)", ["bound", "ms / sync", "accounts", "vs node"], rows,
          [f"accounts per node: {round(node[2]):,}; bottleneck: {node[0]} (on this rig, with Dovecot and the provider "
           f"on the other core: {round(rig[2]):,}, bound by {rig[0]})",
           f"harvest CPU per sync / bare imaplib session: {ratio(harvest, bare)} ({harvest:.2f} / {bare:.2f} ms)",
           f"the product's loop: Scheduler.run started {ticks['syncs']} syncs in {RUN_SECONDS:g} s "
           f"(outcomes {ticks['outcomes']}; {LIMITS.total} slots refilled as syncs end): "
           f"{round(scheduler_cap):,} accounts per interval on this rig",
           f"TLS context: {tls_context:.2f} ms a sync (one per process; it was ~19 ms, one per session)",
           "full CPU is no operating point: keep headroom (a node at 70% carries 0.7x these)"])


# -- the suite ----------------------------------------------------------------------------------------

CASES: dict[str, Callable[[Rig], Awaitable[None]]] = {"steady": bench_steady}


async def run(names: Sequence[str] = ()) -> None:
    from tests.harvest.conftest import CLIENT_ID
    from tests.support.maildir import AUTHSERV_ID

    began = time.perf_counter()
    async with AsyncExitStack() as stack, asyncio.timeout(SUITE_TIMEOUT):
        mail_root = Path(tempfile.mkdtemp(prefix="inboxlens-bench-capacity-mail-", dir=MAIL_DIR))
        up = await mail_stack(stack, "inboxlens-bench-capacity-", pool_size=4, mail_root=mail_root)
        tmp, pg, pg_version, oauth, dovecot, vault, dsn, pool, client = (
            up.tmp, up.pg, up.pg_version, up.oauth, up.dovecot, up.vault, up.dsn, up.pool, up.client)
        bundle = tmp / "ca-bundle.pem"  # what every TLS client here trusts: the system's CAs and the test CA
        bundle.write_bytes(SYSTEM_CAS.read_bytes() + dovecot.ca_path.read_bytes())
        provider = ProviderConfig(token_url=oauth.token_url, client_id=CLIENT_ID, imap_host="127.0.0.1",
                                  imap_port=dovecot.imaps_port, imap_tls="tls", trusted_authserv_ids=(AUTHSERV_ID,))
        assert pg.pid is not None
        rig = Rig(pool, oauth, dovecot, vault, dsn, pg.pid, provider, bundle, tmp / "harvest.log")
        print(f"stack: PostgreSQL {pg_version}, {await version('dovecot')}; started in "
              f"{time.perf_counter() - began:.1f} s")
        filling = time.perf_counter()
        await add_accounts(rig, client, ACCOUNTS)
        print(f"{ACCOUNTS:,} accounts, {ACCOUNTS * MESSAGES:,} messages written in {time.perf_counter() - filling:.1f} s")
        await start_child(rig)
        stack.push_async_callback(stop_child, rig)
        for name in names or CASES:
            await CASES[name](rig)
        stopping = time.perf_counter()
    print(f"\ncapacity suite: {time.perf_counter() - began:.0f} s (stopping and cleaning up: "
          f"{time.perf_counter() - stopping:.1f} s)")


async def stop_child(rig: Rig) -> None:
    child = rig.child
    if child is None or child.returncode is not None:
        return
    assert child.stdin is not None
    child.stdin.close()
    try:
        await asyncio.wait_for(child.wait(), 10)
    except TimeoutError:
        child.kill()
        await child.wait()


if __name__ == "__main__":
    from . import __main__ as bench_main

    bench_main.main(["capacity", *sys.argv[1:]])
