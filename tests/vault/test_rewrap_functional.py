"""Rotation and rewrap against a running vault, including a SIGKILL in the middle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inboxlens.errors import Conflict
from inboxlens.service_errors import VaultUnavailable
from inboxlens.vault.client import VaultClient
from tests.support import tokens
from tests.support.vaultproc import make_vault

pytestmark = pytest.mark.slow
COUNT = 3000


async def test_sigkill_during_rewrap_loses_no_token(tmp_path: Path):
    vault = make_vault(tmp_path)
    expected = await tokens.fill(vault.vault_dir, COUNT)
    await vault.start()
    admin = VaultClient(vault.socket)
    assert (await admin.rotate())["id"] == 2
    first = await admin.rewrap(limit=500)
    assert first["rewrapped"] == 500 and first["remaining"] == COUNT - 500
    # Kill it while a batch is being written (100 tokens per transaction): as soon as a batch
    # has committed part of its work and is still running. If one finishes first, try the next.
    killed = False
    while not killed:
        before = (await tokens.counts(vault.vault_dir)).get(2, 0)
        in_flight = asyncio.create_task(admin.rewrap(limit=1000))
        while not in_flight.done():
            if (await tokens.counts(vault.vault_dir)).get(2, 0) > before:
                await vault.kill()
                killed = True
                break
            await asyncio.sleep(0.002)
        if not killed:
            assert in_flight.result()["remaining"] > 0, "every batch finished before a kill could land mid-batch"
    with pytest.raises(VaultUnavailable):
        await in_flight
    await admin.close()

    after_kill, counts = await tokens.opened(vault.vault_dir)
    assert after_kill == expected  # every token opens, under whichever key its record names
    assert 500 < counts[2] < COUNT and counts[1] + counts[2] == COUNT

    await vault.start()  # resumable: the next rewrap finishes the job
    admin = VaultClient(vault.socket)
    with pytest.raises(Conflict, match=r"key 1 still seals \d+ token"):
        await admin.revoke(1)
    while (step := await admin.rewrap(limit=1000))["remaining"]:
        assert step["rewrapped"] > 0
    assert (await admin.revoke(1))["state"] == "revoked"
    await admin.close()
    await vault.stop()
    final, counts = await tokens.opened(vault.vault_dir)
    assert final == expected and counts == {2: COUNT}
    assert not (vault.vault_dir / "key-1.secret").exists()
