from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.radicale import Radicale

# The app password is random per run, so finding it in a log or message means we leaked it.
PASSWORD = "app-pw-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def radicale() -> Iterator[Radicale]:
    """One Radicale for the module (0.3 s to start); each test makes address books of its own."""
    server = Radicale({"alice": PASSWORD, "bob": "bob-" + secrets.token_hex(8)}).start()
    try:
        yield server
    finally:
        server.stop()
