"""The API benchmark's load generator (bench/loadgen.py) measures what it claims: a fixed
rate open loop, latency counted from when a request was due, and bad jobs refused."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from bench.loadgen import Job

DELAY = 0.02  # seconds the test server takes per request
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def slow_server() -> AsyncIterator[tuple[str, list[float]]]:
    """A server that answers after DELAY, one request at a time; the times it began each."""
    began: list[float] = []
    lock = asyncio.Lock()

    async def answer(request: web.Request) -> web.Response:
        async with lock:
            began.append(asyncio.get_running_loop().time())
            await asyncio.sleep(DELAY)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", began
    await runner.cleanup()


async def run(job: dict[str, Any]) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.loadgen", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=ROOT)
    out, err = await asyncio.wait_for(process.communicate(json.dumps(job).encode() + b"\n"), 60)
    assert process.returncode == 0, err.decode()
    warm, report = out.splitlines()
    assert warm == b"warm"  # said before the timed part, so the parent can start its clocks
    return dict(json.loads(report))


async def test_an_overloaded_server_shows_in_the_open_loops_latencies(slow_server: tuple[str, list[float]]):
    """100 requests/s for 0.5 s at a server that manages 50/s: each request waits for all
    before it, so the last is due at 0.5 s and answered near 1.0 s. A closed loop (or a
    latency timed from sending) would report ~DELAY for every one of them."""
    base, began = slow_server
    report = await run({"base": base, "paths": ["/a", "/b"], "headers": {"X-Test": "1"}, "mode": "rate",
                        "rate": 100, "seconds": 0.5, "connections": 8})
    latencies = report["latencies_us"]
    assert report["statuses"] == {"200": 50} and len(latencies) == 50
    assert len(began) == 50
    assert max(latencies) > 0.3e6  # the backlog: ~50 x 20 ms of work for 0.5 s of sending
    assert latencies[0] < 0.15e6
    assert latencies[-1] > latencies[0] + 0.2e6


async def test_the_closed_loop_keeps_one_request_per_connection(slow_server: tuple[str, list[float]]):
    base, began = slow_server
    report = await run({"base": base, "paths": ["/"], "headers": {}, "mode": "closed", "seconds": 0.4,
                        "connections": 1, "warmup": 3})
    count = len(report["latencies_us"])
    assert report["warmup_statuses"] == {"200": 3}
    assert 8 <= count <= 0.4 / DELAY + 2  # one at a time: at most one per DELAY
    assert min(report["latencies_us"]) >= DELAY * 1e6 * 0.9


@pytest.mark.parametrize("change", [{"mode": "burst"}, {"paths": []}, {"seconds": 0}, {"seconds": 121},
                                    {"connections": 0}, {"connections": 257}, {"rate": 0}, {"rate": 20_001},
                                    {"warmup": -1}, {"warmup": 10_001}])
def test_a_bad_job_is_refused(change: dict[str, Any]):
    job = {"base": "http://127.0.0.1:1", "paths": ["/"], "headers": {}, "mode": "rate", "rate": 10, "seconds": 1,
           "connections": 1, **change}
    with pytest.raises(ValueError):
        Job.parse(json.dumps(job).encode())
