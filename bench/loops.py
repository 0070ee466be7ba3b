"""Event loop benchmarks (issue 16.7): each child's work on stock asyncio and on uvloop, side by side.

``python -m bench loops`` (``vault``, ``web``, ``card`` or ``harvest`` for some cases). The processes are
the ones the other suites start, unchanged; the uvloop side differs only in its environment:
``PYTHONPATH`` holds ``bench/uvloop_site``, whose ``sitecustomize`` installs uvloop's policy
before ``-m`` runs the module, so ``asyncio.run`` makes a uvloop loop. No line of the vault
(nor of its import closure) changes for it. Each case checks which loop every process runs
(``/proc/<pid>/maps`` has uvloop's extension, or the harvest child reports its loop's class),
and the asyncio and uvloop sides take turns, so a noisy neighbour hits both. The driver (this
process, the load generator) stays on asyncio for both sides.

- ``vault``: cached ``get`` at concurrency 8 and 32 through a real vault process on each
  loop, beside the bare echo (``bench.echo``) on each loop; 4 alternating rounds.
- ``web``: the bare aiohttp endpoint (``bench.bare_api``) at saturation (16 connections,
  closed loop, ``bench.loadgen``) on each loop; 2 alternating rounds.
- ``card``: the correspondent card (``bench.api``'s stack, mail and paths) at saturation, from
  two web processes on one stack, one per loop; 2 alternating rounds.
- ``harvest``: end to end (``Scheduler.once``, 20,000 messages) in a child process on each
  loop (``bench.harvest``'s stack and child); 3 alternating rounds.

Adopt uvloop for a child when uvloop/asyncio > ``GAIN`` in two runs.
"""

from __future__ import annotations

import asyncio
import copy
import os
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from inboxlens.metrics.model import AccountRef
from tests.support.oauth_provider import OAuthProvider
from tests.support.vaultproc import VaultProcess
from tests.support.webproc import WebProcess, free_port
from tests.vault.conftest import CLIENT_ID, CLIENT_SECRET
from tests.web.conftest import account_id, bearer, connect, new_token

from . import api, harvest
from .echo import EchoProcess
from .metrics import database
from .report import Sample, ratio, table, timed_workers
from .vault import ACCOUNT, GET_WARMUP, ROUNDS, alternate, clients, gets, new_vault, store_token

UVLOOP_SITE = Path(__file__).resolve().parent / "uvloop_site"
LOOPS = ("asyncio", "uvloop")
GAIN = 1.10  # uvloop is adopted for a child only above this ratio, in two runs
GET_PLAN = ((8, 40_000), (32, 40_960))  # (concurrency, timed requests per server)
WEB_SECONDS = 8.0
WEB_CONNECTIONS = 16
CASE_TIMEOUT = 60.0
# A JSON object about a card's size (0.9 kB; bench/api.py prints the real ones': median 1.8 kB).
CARD_LIKE = {"address": "someone@example.org", "display_name": "Someone Example", "messages": 1234,
             "reply_time": {"median_seconds": 5400, "p90_seconds": 86400, "samples": 321},
             "by_month": [{"month": f"2026-{m:02d}", "received": 40 + m, "sent": 10 + m} for m in range(1, 13)],
             "authentication": {"dkim": "pass", "spf": "pass", "dmarc": "pass"}, "first_seen": "2024-12-05T08:00:00Z"}


def uvloop_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``bench/uvloop_site`` first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(UVLOOP_SITE), env.get("PYTHONPATH", "")]))
    return env


def loop_of(pid: int) -> str:
    """Which loop a process runs: uvloop once its extension is mapped, else stock asyncio."""
    return "uvloop" if "/uvloop/loop." in Path(f"/proc/{pid}/maps").read_text() else "asyncio"


def loop_verdict(child: str, gain: float) -> str:
    helps = f"helps (> {GAIN:.2f})" if gain > GAIN else f"no gain above {GAIN - 1:.0%}"
    return f"{child}: uvloop/asyncio = {gain:.2f}: uvloop {helps}"


# -- the vault ---------------------------------------------------------------------------------

async def bench_vault(tmp: Path) -> None:
    oauth = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]}, access_token_ttl=3600)
    echoes = {"asyncio": EchoProcess(tmp / "echo-asyncio.sock"),
              "uvloop": EchoProcess(tmp / "echo-uvloop.sock", env=uvloop_env())}
    async with AsyncExitStack() as stack:
        await oauth.start()
        stack.push_async_callback(oauth.stop)
        vaults = {loop: new_vault(tmp, f"vault-{loop}", oauth) for loop in LOOPS}  # the provider's URL is known now
        for loop, vault in vaults.items():
            stack.push_async_callback(vault.stop)
            await vault.start(extra_env={"PYTHONPATH": str(UVLOOP_SITE)} if loop == "uvloop" else None)
            await cache_token(vault, oauth)
        for echo in echoes.values():
            stack.push_async_callback(echo.stop)
            await echo.start()
        servers = {f"{kind} {loop}": server for kind, group in (("echo", echoes), ("vault", vaults))
                   for loop, server in group.items()}
        pids = {name: server.process.pid for name, server in servers.items() if server.process}
        running_on = {name: loop_of(pid) for name, pid in pids.items()}
        sockets = {name: server.socket for name, server in servers.items()}
        results = [(c, await compare(sockets, pids, c, n)) for c, n in GET_PLAN]
    report_vault(results, running_on)


async def cache_token(vault: VaultProcess, oauth: OAuthProvider) -> None:
    async with clients(vault.socket, 1) as (first,):
        await store_token(vault, first, oauth, ACCOUNT)
        await first.get(ACCOUNT)  # the one refresh; every timed get is served from the cache


@dataclass
class Served(Sample):
    """A server's timed requests, and the CPU seconds its process spent on them."""

    cpu: float = 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.count * 1e6 if self.count else 0.0


async def compare(sockets: dict[str, Path], pids: dict[str, int], concurrency: int, total: int) -> dict[str, Served]:
    async with AsyncExitStack() as stack:
        sides = {name: gets(await stack.enter_async_context(clients(path, concurrency)))
                 for name, path in sockets.items()}
        for calls in sides.values():
            await timed_workers(calls, max(1, GET_WARMUP // concurrency))
        served = {name: Served() for name in sides}

        async def measure(side: str, n: int) -> Sample:
            cpu = api.cpu_seconds(pids[side])
            sample = await timed_workers(sides[side], n // concurrency)
            served[side].cpu += api.cpu_seconds(pids[side]) - cpu
            return sample

        for side, sample in (await alternate(measure, list(sides), total)).items():
            served[side].add(sample)
        return served


def report_vault(results: list[tuple[int, dict[str, Served]]], running_on: dict[str, str]) -> None:
    rows, notes = [], []
    for concurrency, s in results:
        for name, sample in s.items():
            kind, loop = name.split()
            base = s[f"{kind} asyncio"]
            to_echo = ratio(sample.rate, s[f"echo {loop}"].rate) if kind == "vault" else ""
            rows.append([concurrency, kind, loop, running_on.get(name, "?"), sample.count, round(sample.rate),
                         sample.ms(50), sample.ms(99), ratio(sample.rate, base.rate), f"{sample.cpu_us:.1f}",
                         ratio(base.cpu_us, sample.cpu_us), to_echo])
        v, e = (s["vault uvloop"], s["vault asyncio"]), (s["echo uvloop"], s["echo asyncio"])
        notes.append(f"at {concurrency}: " + loop_verdict("vault", v[0].rate / v[1].rate)
                     + f"; server CPU per request asyncio/uvloop: vault {ratio(v[1].cpu_us, v[0].cpu_us)}, "
                     f"echo {ratio(e[1].cpu_us, e[0].cpu_us)}; the echo's req/s uvloop/asyncio = "
                     f"{ratio(e[0].rate, e[1].rate)}")
    table(f"vault: cached get from VaultClient workers in this process (on asyncio), one connection per worker "
          f"({GET_WARMUP:,} warm-up gets per server, {ROUNDS} alternating rounds over the four servers)",
          ["conc", "server", "loop", "runs on", "requests", "req/s", "p50 ms", "p99 ms", "req/s vs asyncio",
           "server CPU us/req", "CPU asyncio/this", "vault/echo"], rows,
          [*notes, "server CPU: utime + stime of the server process during its timed turns (/proc/<pid>/stat, "
           "10 ms ticks); this process drives all four servers from one core, so req/s is capped by the driver"])


# -- web ---------------------------------------------------------------------------------------

async def bench_web(tmp: Path) -> None:
    servers = {loop: api.Bare(CARD_LIKE, env=uvloop_env() if loop == "uvloop" else None) for loop in LOOPS}
    async with AsyncExitStack() as stack:
        for server in servers.values():
            await stack.enter_async_context(api.running(server))
        targets = [api.Target(f"bare {loop}", s.url, ["/api/v1/card"], [{}], s.process.pid)
                   for loop, s in servers.items() if s.process]
        running_on = {t.name: loop_of(t.pid) for t in targets}
        results = await api.alternate(targets, "closed", seconds=WEB_SECONDS, connections=WEB_CONNECTIONS)
    report_web("bare aiohttp endpoint", results, running_on)


async def bench_card(tmp: Path) -> None:
    """The card endpoint at saturation: two web processes on one stack (bench/api.py's), one per loop."""
    os.chmod(tmp, 0o711)  # PostgreSQL's and the vault's OS users traverse it
    async with database(tmp) as dsn, api.web_stack(tmp, dsn) as stack:
        async with stack.browser() as browser:
            await connect(stack, browser, api.USER, api.ZONE)
            tokens = [await new_token(browser, f"bench {i}") for i in range(api.TOKENS)]  # a rate limit each
        account = AccountRef(await account_id(stack, api.USER), api.USER, api.ZONE)
        box, mail = await api.fill(stack, account)
        paths, _, cards = await api.card_paths(stack, box, account.id, tokens[0])
        print(f"mail: {mail}\ncards: {cards}")
        uv = WebProcess(copy.deepcopy(stack.web.slice), tmp / "web-uvloop.log")
        uv.slice["config"]["web"]["port"] = free_port()
        try:
            await uv.start(extra_env={"PYTHONPATH": str(UVLOOP_SITE)})
            assert stack.web.process is not None and uv.process is not None
            await stack.vault.register(uv.process.pid, "web")
            targets = [api.Target(f"card {loop}", web.url, paths, [bearer(token) for token in tokens], pid)
                       for loop, web, pid in (("asyncio", stack.web, stack.web.process.pid),
                                              ("uvloop", uv, uv.process.pid))]
            running_on = {t.name: loop_of(t.pid) for t in targets}
            results = await api.alternate(targets, "closed", seconds=WEB_SECONDS, connections=WEB_CONNECTIONS)
        finally:
            await uv.stop()
    report_web("card endpoint", results, running_on)


def report_web(what: str, results: dict[str, api.Result], running_on: dict[str, str]) -> None:
    a, u = results[f"{what.split()[0]} asyncio"], results[f"{what.split()[0]} uvloop"]
    table(f"web: {what} at saturation, {WEB_CONNECTIONS} connections, closed loop, {WEB_SECONDS:.0f} s, "
          f"{api.ROUNDS} alternating rounds (load generator on asyncio)", api.HEADER, api.rows_of(results),
          [f"running on: {running_on}",
           loop_verdict(f"web ({what})", u.rate / a.rate) + "; server CPU per request asyncio/uvloop = "
           f"{ratio(a.per_thousand(a.server_cpu), u.per_thousand(u.server_cpu))}"])


# -- harvest -----------------------------------------------------------------------------------

async def bench_harvest(tmp: Path) -> None:
    await harvest.run(["loop"])  # its own stack (PostgreSQL, Dovecot, vault) and its own time limit


CASES: dict[str, Callable[[Path], Awaitable[None]]] = {"vault": bench_vault, "web": bench_web, "card": bench_card,
                                                       "harvest": bench_harvest}


async def run(names: Sequence[str] = ()) -> None:
    with tempfile.TemporaryDirectory(prefix="inboxlens-bench-loops-") as tmp:
        for name in names or CASES:
            # harvest bounds its own case; its stack's set-up is bounded by its parts' timeouts
            async with asyncio.timeout(None if name == "harvest" else CASE_TIMEOUT):
                await CASES[name](Path(tmp))
