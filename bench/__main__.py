"""``python -m bench [suite [case ...]]``: run the benchmarks and print their tables.

With no suite, every suite runs (``make bench``); ``python -m bench vault`` runs the vault's,
``python -m bench vault get set`` only those cases. Run from the repository root: the
benchmarks start real processes with the test suite's helpers (``tests.support``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import time
from typing import Any

from .report import machine

SUITES = {"vault": "bench.vault", "parse": "bench.parse", "harvest": "bench.harvest", "metrics": "bench.metrics",
          "api": "bench.api", "loops": "bench.loops",
          "capacity": "bench.capacity"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="InboxLens benchmarks, as ratios to baselines.")
    parser.add_argument("suite", nargs="?", choices=sorted(SUITES), help="one suite (default: all)")
    parser.add_argument("cases", nargs="*", help="cases of that suite (default: all)")
    args = parser.parse_args(argv)
    suites = {name: importlib.import_module(SUITES[name]) for name in ([args.suite] if args.suite else SUITES)}
    for name, module in suites.items():
        unknown = set(args.cases) - set(module.CASES)
        if unknown:
            parser.error(f"{name} has no case {', '.join(sorted(unknown))}; it has {', '.join(module.CASES)}")
    print(f"InboxLens benchmarks: {machine()}")
    began = time.perf_counter()
    for name, module in suites.items():
        run_suite(name, module, args.cases)
    print(f"\ntotal wall time {time.perf_counter() - began:.0f} s; load average now {os.getloadavg()[0]:.2f}")


def run_suite(name: str, module: Any, cases: list[str]) -> None:
    print(f"\n== {name} ==")
    asyncio.run(module.run(cases))


if __name__ == "__main__":
    main()
