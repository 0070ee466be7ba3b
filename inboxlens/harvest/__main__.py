"""inboxlens-harvest: fetches header metadata over IMAP and turns it into insights.

Privilege: its own uid (``inboxlens-harvest``) with the shared ``inboxlens`` group
(the vault's socket). It holds no key: it asks the vault for short-lived access
tokens (``get``), which only it may do.
Untrusted input: IMAP responses, token answers from the vault.
Writes: PostgreSQL (accounts' sync state, raw metadata, rollups); log lines on stderr.
Config keys: ``harvest.*``, ``database.dsn``, ``runtime_dir``.
Today it runs its scheduler loop with nothing to schedule; retrieval builds on it.
"""

from __future__ import annotations

import asyncio
import logging

from .. import child
from ..config import from_dict

log = logging.getLogger("inboxlens.harvest")


async def scheduler(interval: float, stopping: asyncio.Event) -> int:
    """Wake every ``interval`` seconds until told to stop; returns how many rounds ran."""
    rounds = 0
    while not stopping.is_set():
        rounds += 1
        log.debug("scheduler round %d: no accounts are due", rounds)
        try:
            await asyncio.wait_for(stopping.wait(), interval)
        except TimeoutError:
            pass
    return rounds


async def main(channel: child.Channel) -> None:
    config = from_dict(channel.config["config"])
    channel.ready()
    control = asyncio.create_task(_drain(channel))
    rounds = await scheduler(config.harvest.interval_seconds, channel.stopping)
    control.cancel()
    log.info("stopped after %d scheduler round(s)", rounds)


async def _drain(channel: child.Channel) -> None:
    async for _ in channel.messages():
        pass


if __name__ == "__main__":
    child.run("inboxlens-harvest", main)
