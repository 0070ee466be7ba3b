"""Readiness: whether this web process can do its work, part by part.

``GET /readyz`` asks the vault (its public key), PostgreSQL (``SELECT 1``) and the
metrics store (an empty read) at once, each within ``CHECK_SECONDS``, and answers
``{"status": "ready"|"unready", "checks": {part: "ok" | "down (<cause>)"}}``: 200
when all are up, 503 when any is down (a load balancer stops sending traffic).
``/healthz`` stays what it was (the process answers, and whether the vault does).
The causes are exception class names: never a DSN, host or secret.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Awaitable, Callable

from aiohttp import web

from inboxlens.web.state import DB, METRICS, VAULT

CHECK_SECONDS = 2.0


async def _vault(app: web.Application) -> None:
    await app[VAULT].public_key()


async def _database(app: web.Application) -> None:
    await app[DB].fetchval("SELECT 1")


async def _metrics(app: web.Application) -> None:
    today = date.today()
    await app[METRICS].daily(0, today, today)  # account 0 never exists: the cheapest real read


CHECKS: dict[str, Callable[[web.Application], Awaitable[None]]] = {
    "vault": _vault, "database": _database, "metrics": _metrics}


async def _state(check: Callable[[web.Application], Awaitable[None]], app: web.Application) -> str:
    try:
        await asyncio.wait_for(check(app), CHECK_SECONDS)
    except TimeoutError:
        return "down (no answer in time)"
    except Exception as e:  # any failure means "not ready"; the class name is enough to act on
        return f"down ({type(e).__name__})"
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    states = await asyncio.gather(*(_state(check, request.app) for check in CHECKS.values()))
    checks = dict(zip(CHECKS, states))
    ready = all(state == "ok" for state in states)
    return web.json_response({"status": "ready" if ready else "unready", "checks": checks},
                             status=200 if ready else 503)
