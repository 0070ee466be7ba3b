"""``inboxlens keys rewrap``'s loop (vault/admin.py) when another node rewraps the same store at once.

Each step asks the vault for one batch; a fake vault here plays the store with another node's
rewrap taking some batches first (compare-and-set: then this node's swaps of them do nothing).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inboxlens.vault import admin


class Store:
    """``left`` tokens under old keys. Before a step, another node may swap the very tokens this
    step read (``others``: how many; this step's swaps then all lose). ``churned`` are re-sealed
    under the old key by a node without the new one between each read and swap: theirs never win."""

    def __init__(self, left: int, others: list[int], churned: int = 0) -> None:
        self.left, self.others, self.churned = left, others, churned

    async def rewrap(self, limit: int) -> dict[str, Any]:
        taken = self.others.pop(0) if self.others else 0
        done = 0 if taken else min(self.left - self.churned, limit)
        self.left -= taken + done
        return {"rewrapped": done, "failed": [], "remaining": self.left, "primary": 2}


def test_a_step_another_node_won_does_not_end_the_rewrap(capsys: pytest.CaptureFixture[str]):
    # Steps 2 and 3: the other node swapped everything this one read, so this one swapped nothing.
    store = Store(1000, [0, 300, 300])
    code = asyncio.run(admin.rewrap(store, batch=300, progress=lambda done, total: None))  # type: ignore[arg-type]
    assert code == 0 and store.left == 0
    assert "none left under older keys" in capsys.readouterr().out


def test_tokens_sealed_under_an_old_key_again_are_reported(capsys: pytest.CaptureFixture[str]):
    store = Store(10, [], churned=3)
    code = asyncio.run(admin.rewrap(store, batch=5, progress=lambda done, total: None))  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert code == 1 and "sealed under older keys again" in out and "keys import" in out
