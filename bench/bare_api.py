"""The API baseline: a bare aiohttp JSON endpoint in a process of its own.

Every GET under ``/api/v1/`` answers 200 with one JSON object, serialised per request by
``web.json_response`` as a real handler's answer would be. The object is the one the card
benchmark's web server gave for a real correspondent, so both sides send the same bytes. No
authentication, no database, no middleware, no access log: the ceiling an endpoint on stock
aiohttp could reach on this machine.

Child: ``python -m bench.bare_api``; reads ``{"port": N, "body": {...}}`` as one JSON line on
stdin, prints ``ready`` once listening, and serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from aiohttp import web

START_TIMEOUT = 20.0


def app(body: dict[str, Any]) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(body)

    application = web.Application()
    application.router.add_get("/api/v1/{tail:.*}", answer)
    return application


async def serve() -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    job = json.loads(await stdin.readline())
    runner = web.AppRunner(app(job["body"]), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", int(job["port"])).start()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await stdin.read()  # until the parent closes stdin
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve())
