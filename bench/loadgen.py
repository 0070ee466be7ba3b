"""The load generator: HTTP GETs from a process of its own, like wrk, in one of two modes.

- ``rate``: open loop at a fixed rate (as wrk2 does). Request ``i`` is due at ``start + i /
  rate`` whatever became of the ones before; its latency runs from when it was due, not from
  when it went out, so a server (or client) that falls behind pays for every request that
  waited (no coordinated omission).
- ``closed``: ``connections`` workers, each sending its next request when the last answered,
  for ``seconds``: the saturation rate and the latencies at it.

Child: ``python -m bench.loadgen`` reads one job as a JSON line on stdin (the bearer token
travels there, never on the command line that ``ps`` shows)::

    {"base": "http://127.0.0.1:8080", "paths": ["/api/v1/..."], "headers": {...} or [{...}, ...],
     "mode": "rate" | "closed", "rate": 500, "connections": 32, "seconds": 10, "warmup": 300}

With a list of header sets (several API tokens, say), request ``i`` sends set ``i mod n``.

prints ``warm`` once its untimed warm-up requests are answered, then one JSON line: ``latencies_us`` (every timed request, in order of sending),
``statuses`` (status code, or ``error`` with the exception's class, and counts), ``wall``
seconds and ``cpu`` seconds of this process (both without the warm-up). Paths are taken round-robin. Every
request is bounded by ``REQUEST_TIMEOUT``, the warm-up by ``GRACE`` and the timed part by
its ``seconds`` plus ``GRACE``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

REQUEST_TIMEOUT = 10.0
GRACE = 30.0
MAX_SECONDS = 120.0
MAX_RATE = 20_000
MAX_CONNECTIONS = 256
MAX_WARMUP = 10_000
MAX_HEADER_SETS = 256


@dataclass
class Job:
    base: str
    paths: list[str]
    headers: list[dict[str, str]]
    mode: str
    seconds: float
    connections: int
    rate: float = 0.0
    warmup: int = 0
    latencies_us: list[int] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    @classmethod
    def parse(cls, line: bytes) -> Job:
        raw = json.loads(line)
        sets = raw["headers"] if isinstance(raw["headers"], list) else [raw["headers"]]
        job = cls(str(raw["base"]), [str(p) for p in raw["paths"]],
                  [{str(k): str(v) for k, v in headers.items()} for headers in sets[:MAX_HEADER_SETS + 1]],
                  str(raw["mode"]), float(raw["seconds"]), int(raw["connections"]), float(raw.get("rate", 0)),
                  int(raw.get("warmup", 0)))
        if not 0 < len(job.headers) <= MAX_HEADER_SETS:
            raise ValueError(f"a job needs 1-{MAX_HEADER_SETS} header sets")
        if job.mode not in ("rate", "closed") or not job.paths or not 0 < job.seconds <= MAX_SECONDS \
                or not 0 < job.connections <= MAX_CONNECTIONS or (job.mode == "rate" and not 0 < job.rate <= MAX_RATE) \
                or not 0 <= job.warmup <= MAX_WARMUP:
            raise ValueError("a job needs mode rate|closed, paths, 0 < seconds <= 120, 1-256 connections, "
                             "0-10000 warm-up requests and, for rate, 0 < rate <= 20000")
        return job


async def send(session: aiohttp.ClientSession, job: Job, i: int) -> None:
    try:
        async with session.get(job.paths[i % len(job.paths)], headers=job.headers[i % len(job.headers)]) as response:
            await response.read()
            job.statuses[str(response.status)] += 1
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        job.statuses[f"error {type(e).__name__}"] += 1


async def at_rate(session: aiohttp.ClientSession, job: Job) -> None:
    loop = asyncio.get_running_loop()
    total = round(job.rate * job.seconds)
    latencies = [0] * total

    async def due(i: int, at: float) -> None:
        await send(session, job, i)
        latencies[i] = round((loop.time() - at) * 1e6)

    start = loop.time() + 0.01
    tasks = []
    for i in range(total):
        at = start + i / job.rate
        if at > loop.time():
            await asyncio.sleep(at - loop.time())
        tasks.append(asyncio.create_task(due(i, at)))
    await asyncio.gather(*tasks)
    job.latencies_us = latencies


async def closed(session: aiohttp.ClientSession, job: Job) -> None:
    deadline = time.perf_counter() + job.seconds
    per_worker: list[list[int]] = [[] for _ in range(job.connections)]

    async def worker(w: int, out: list[int]) -> None:
        i = w
        while time.perf_counter() < deadline:
            began = time.perf_counter_ns()
            await send(session, job, i)
            out.append((time.perf_counter_ns() - began) // 1000)
            i += job.connections

    await asyncio.gather(*(worker(w, out) for w, out in enumerate(per_worker)))
    job.latencies_us = [us for out in per_worker for us in out]


async def main() -> None:
    job = Job.parse(sys.stdin.buffer.readline())
    connector = aiohttp.TCPConnector(limit=job.connections, force_close=False)
    async with aiohttp.ClientSession(job.base, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as session:
        warm = Job(job.base, job.paths, job.headers, "closed", job.seconds, job.connections)
        async with asyncio.timeout(GRACE):
            await asyncio.gather(*(send(session, warm, i) for i in range(job.warmup)))
        sys.stdout.write("warm\n")  # the parent starts its own clocks (server CPU) here
        sys.stdout.flush()
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        began = time.perf_counter()
        async with asyncio.timeout(job.seconds + GRACE):
            await (at_rate if job.mode == "rate" else closed)(session, job)
        wall = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_SELF)
    used = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    report: dict[str, Any] = {"latencies_us": job.latencies_us, "statuses": dict(job.statuses),
                              "warmup_statuses": dict(warm.statuses), "wall": wall, "cpu": used}
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
