"""Web's cookie-signing key: made once, then kept; a damaged one stops web instead of being replaced
(several nodes share one key, docs/scaling.md: a new one would end every session)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from inboxlens.errors import StartError
from inboxlens.web.sessions import KEY_BYTES, load_key


def test_the_key_is_made_on_first_use_and_then_kept(tmp_path: Path):
    path = tmp_path / "web" / "session.key"
    key = load_key(path)
    assert len(key) == KEY_BYTES and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_key(path) == key


@pytest.mark.parametrize("content", [b"", b"x" * (KEY_BYTES - 1), b"x" * (KEY_BYTES + 1)])
def test_a_damaged_key_stops_web_and_stays_as_it_is(tmp_path: Path, content: bytes):
    path = tmp_path / "session.key"
    path.write_bytes(content)
    with pytest.raises(StartError, match="is damaged .*keys import"):
        load_key(path)
    assert path.read_bytes() == content
