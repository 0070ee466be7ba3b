"""keys export reads web's cookie-signing key from a directory web owns, never through a link; keys import
refuses a hand-edited manifest with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inboxlens.errors import KeysetError
from inboxlens.vault.nodekeys import FORMAT, MANIFEST, SESSION_KEY_BYTES, _read_session_key, read_bundle


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


@pytest.mark.parametrize("name, digest, why", [
    ("key\x00.secret", "00", "names a file outside the export"),
    ("../keyset.json", "00", "names a file outside the export"),
    ("", "00", "names a file outside the export"),
    ("key-1.secret", 7, "is damaged or of another format"),
    ("adirectory", "00", "cannot be read"),
])
def test_a_hand_edited_manifest_is_refused_with_a_reason_not_a_traceback(tmp_path: Path, name: str, digest: object,
                                                                         why: str) -> None:
    (tmp_path / "adirectory").mkdir()
    (tmp_path / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": {name: digest}}))
    with pytest.raises(KeysetError, match=why):
        read_bundle(tmp_path)
