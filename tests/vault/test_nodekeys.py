"""keys export reads web's cookie-signing key from a directory web owns: never through a link."""

from __future__ import annotations

from pathlib import Path

import pytest

from inboxlens.errors import KeysetError
from inboxlens.vault.nodekeys import SESSION_KEY_BYTES, _read_session_key


def test_the_key_is_read_from_a_regular_file_only(tmp_path: Path) -> None:
    key = tmp_path / "session.key"
    key.write_bytes(b"k" * SESSION_KEY_BYTES)
    assert _read_session_key(key) == b"k" * SESSION_KEY_BYTES
    secret = tmp_path / "roots-secret"  # what a compromised web would point the link at
    secret.write_bytes(b"s" * SESSION_KEY_BYTES)
    key.unlink()
    key.symlink_to(secret)
    with pytest.raises(KeysetError, match="link is refused"):
        _read_session_key(key)
    key.unlink()
    key.mkdir()
    with pytest.raises(KeysetError, match="not a regular file"):
        _read_session_key(key)
