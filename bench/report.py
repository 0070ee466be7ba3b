"""Measuring and printing: latency samples, percentiles, ratios, compact tables."""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import sqlite3
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Awaitable, Callable, Sequence

Call = Callable[[], Awaitable[Any]]


@dataclass
class Sample:
    """Requests timed one by one, and the wall time they took together."""

    latencies_ns: list[int] = field(default_factory=list)
    wall: float = 0.0

    def add(self, other: "Sample") -> None:
        self.latencies_ns += other.latencies_ns
        self.wall += other.wall

    @property
    def count(self) -> int:
        return len(self.latencies_ns)

    @property
    def rate(self) -> float:
        return self.count / self.wall if self.wall else 0.0

    def ms(self, pct: float) -> float:
        return percentile(self.latencies_ns, pct) / 1e6

    @property
    def mean_ms(self) -> float:
        return sum(self.latencies_ns) / self.count / 1e6 if self.count else 0.0


def percentile(values: Sequence[int], pct: float) -> float:
    """Nearest-rank percentile: the smallest value with ``pct`` % of the values at or below it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return float(ordered[int(rank) - 1])


async def timed_workers(calls: Sequence[Call], each: int) -> Sample:
    """Run ``each`` sequential calls in every worker, all workers at once; time each call."""
    async def worker(call: Call, out: list[int]) -> None:
        for _ in range(each):
            start = time.perf_counter_ns()
            await call()
            out.append(time.perf_counter_ns() - start)

    per_worker: list[list[int]] = [[] for _ in calls]
    start = time.perf_counter()
    await asyncio.gather(*(worker(call, out) for call, out in zip(calls, per_worker)))
    return Sample([ns for out in per_worker for ns in out], time.perf_counter() - start)


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}" if baseline else "n/a"


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]], notes: Sequence[str] = ()) -> None:
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    for note in notes:
        print(f"  {note}")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 1000 else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def machine() -> str:
    versions = ", ".join(f"{name} {_version(name)}" for name in ("pynacl", "authlib", "httpx2"))
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"{now}; {os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), load {os.getloadavg()[0]:.2f}; "
            f"Python {platform.python_version()} ({asyncio.get_event_loop_policy().__class__.__name__}); "
            f"SQLite {sqlite3.sqlite_version}; {versions}")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"
