"""An authenticated API call's latency under a flood of anonymous sign-in starts (issue 12.7).

``python -m bench.unauth_flood`` starts what the tests start (an embedded PostgreSQL, the local
OAuth provider, a vault and the web process at the product's defaults, anonymous limit included;
the per-token API limit raised out of the way),
connects a mailbox and makes an API token. Then, in one run:

1. unflooded: ``CALLS`` sequential ``GET /api/v1/me`` with the token; their latencies;
2. flooded: the same calls while a second process (``--flood``) keeps ``CONCURRENCY``
   connections sending ``GET /login/test`` with no cookie (each a new visitor), for at most
   ``FLOOD_SECONDS`` or ``FLOOD_REQUESTS`` requests, whichever comes first.

It prints p50/p99 of both, their ratio (flooded / unflooded), what the flood got back
(303 or 429) and the sessions it left (how many, the longest lifetime). Loopback only; every
wait is bounded and the flood process stops by itself (``TIMEOUT`` bounds the whole run).
Before issue 12.7, 50 such concurrent requests took /api/v1/me from 8.5 ms to 2.3-6.6 s and
each left a 14-day session row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg

from bench.metrics import database
from tests.support.oauth_provider import OAuthProvider
from tests.support.vaultproc import make_vault
from tests.support.webproc import make_web
from tests.web.conftest import CLIENT_ID, CLIENT_SECRET, Stack, bearer, connect, new_token, providers

CALLS = 200
CONCURRENCY = 50
FLOOD_SECONDS = 10.0
FLOOD_REQUESTS = 20_000
TIMEOUT = 180.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def timed_calls(url: str, token: str, stop: asyncio.Event | None = None) -> list[float]:
    """CALLS sequential authenticated calls (fewer if ``stop`` is set first); latencies in ms."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(url, headers=bearer(token)) as client:
        for _ in range(CALLS):
            if stop is not None and stop.is_set():
                break
            began = time.perf_counter()
            async with client.get("/api/v1/me") as response:
                await response.read()
                assert response.status == 200, response.status
            latencies.append((time.perf_counter() - began) * 1000)
    return latencies


async def flood(url: str, seconds: float, limit: int) -> None:
    """The flood itself (in its own process): anonymous sign-in starts; prints status counts."""
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    sent = 0

    async def one_connection() -> None:
        nonlocal sent
        async with aiohttp.ClientSession(url, cookie_jar=aiohttp.DummyCookieJar()) as client:
            while time.monotonic() < deadline and sent < limit:
                sent += 1
                async with client.get("/login/test", allow_redirects=False) as response:
                    statuses[response.status] += 1

    await asyncio.gather(*(one_connection() for _ in range(CONCURRENCY)))
    print(" ".join(f"{status}:{count}" for status, count in sorted(statuses.items())), flush=True)


async def flooded_calls(stack: Stack, token: str) -> tuple[list[float], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.unauth_flood", "--flood", stack.web.url, str(FLOOD_SECONDS), str(FLOOD_REQUESTS),
        stdout=asyncio.subprocess.PIPE)
    await asyncio.sleep(0.5)  # let the flood reach full concurrency before measuring
    stop = asyncio.Event()
    calls = asyncio.create_task(timed_calls(stack.web.url, token, stop))
    out, _ = await process.communicate()
    stop.set()
    return await calls, out.decode().strip()


async def sessions_left(dsn: str) -> str:
    db = await asyncpg.connect(dsn)
    try:
        row = await db.fetchrow("SELECT count(*) AS n, max(expires_at - created_at) AS longest FROM web_sessions "
                                "WHERE user_id IS NULL")
    finally:
        await db.close()
    return f"{row['n']} anonymous session rows, the longest living {row['longest']}"


async def run() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="inboxlens-bench-flood-"))
    os.chmod(tmp, 0o711)  # PostgreSQL's and the vault's OS users traverse it
    oauth = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]})
    try:
        async with asyncio.timeout(TIMEOUT), database(tmp) as dsn:
            await oauth.start()
            vault = make_vault(tmp, providers=providers(oauth))
            # The API's per-token limit out of the way (as bench.api does); the anonymous limit at its default.
            web = make_web(tmp, vault.state_dir, vault.runtime_dir, dsn, providers(oauth),
                           {"api_requests_per_minute": 100_000, "api_burst": 10_000})
            web.slice["config"]["log_level"] = vault.slice["config"]["log_level"] = "INFO"
            await vault.start()
            await web.start()
            assert web.process is not None
            await vault.register(web.process.pid, "web")
            try:
                await measure(Stack(oauth, vault, web, dsn))
            finally:
                await web.stop()
                await vault.stop()
    finally:
        await oauth.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def measure(stack: Stack) -> None:
    async with stack.browser() as browser:
        await connect(stack, browser, "flood@example.test")
        token = await new_token(browser, "bench")
    await timed_calls(stack.web.url, token)  # warm-up
    calm = await timed_calls(stack.web.url, token)
    stormy, flood_said = await flooded_calls(stack, token)
    left = await sessions_left(stack.dsn)
    print(f"GET /api/v1/me, {len(calm)} calls unflooded: p50 {percentile(calm, 50):.2f} ms, "
          f"p99 {percentile(calm, 99):.2f} ms")
    print(f"GET /api/v1/me, {len(stormy)} calls under a flood of anonymous GET /login/test from {CONCURRENCY} "
          f"connections: p50 {percentile(stormy, 50):.2f} ms, p99 {percentile(stormy, 99):.2f} ms")
    print(f"ratio flooded/unflooded: p50 {percentile(stormy, 50) / percentile(calm, 50):.2f}x, "
          f"p99 {percentile(stormy, 99) / percentile(calm, 99):.2f}x")
    print(f"the flood got (status:count) {flood_said}; it left {left}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.unauth_flood", description=__doc__.split("\n")[0])
    parser.add_argument("--flood", nargs=3, metavar=("URL", "SECONDS", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        url, seconds, limit = args.flood
        asyncio.run(flood(url, min(float(seconds), FLOOD_SECONDS), min(int(limit), FLOOD_REQUESTS)))
    else:
        asyncio.run(run())


if __name__ == "__main__":
    main()
