from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from inboxlens.errors import KeysetError
from inboxlens.supervisor.plan import read_credentials
from inboxlens.vault.admin import create_keyset, prepare_directory
from inboxlens.vault.keyset import ACTIVE, PRIMARY, REVOKED, Keyset, KeysetLock


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    prepare_directory(tmp_path / "vault", None)
    return tmp_path / "vault"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_writes_private_keys_0400_in_a_0700_directory(keydir: Path):
    keyset = create_keyset(keydir)
    assert keyset.primary.id == 1
    assert mode(keydir) == 0o700
    assert mode(keydir / "key-1.secret") == 0o400
    assert mode(keydir / "keyset.json") == 0o600
    assert "secret" not in (keydir / "keyset.json").read_text()
    with pytest.raises(KeysetError, match="already exists"):
        create_keyset(keydir)


def test_rotate_and_revoke_states_survive_a_reload(keydir: Path):
    keyset = create_keyset(keydir)
    keyset.rotate()
    keyset.rotate()
    assert [(k.id, k.state) for k in keyset.keys()] == [(1, ACTIVE), (2, ACTIVE), (3, PRIMARY)]
    keyset.revoke(1)
    assert not (keydir / "key-1.secret").exists()
    reloaded = Keyset.load(keydir)
    assert [(k.id, k.state) for k in reloaded.keys()] == [(1, REVOKED), (2, ACTIVE), (3, PRIMARY)]
    assert reloaded.private_key(1) is None
    assert reloaded.private_key(3).public_key == reloaded.primary.public_key


def test_primary_cannot_be_revoked_and_unknown_ids_are_named(keydir: Path):
    keyset = create_keyset(keydir)
    with pytest.raises(KeysetError, match="primary"):
        keyset.revoke(1)
    with pytest.raises(KeysetError, match="no key 9"):
        keyset.revoke(9)


def test_load_refuses_a_private_key_readable_by_others(keydir: Path):
    create_keyset(keydir)
    os.chmod(keydir / "key-1.secret", 0o440)
    with pytest.raises(KeysetError, match="readable by others"):
        Keyset.load(keydir)


def test_load_refuses_a_key_that_does_not_match_its_public_key(keydir: Path):
    create_keyset(keydir)
    path = keydir / "key-1.secret"
    os.chmod(path, 0o600)
    path.write_bytes(bytes(PrivateKey.generate()))
    os.chmod(path, 0o400)
    with pytest.raises(KeysetError, match="does not match"):
        Keyset.load(keydir)


@pytest.mark.parametrize("damage", ["{", '{"version": 2, "keys": []}', '{"version": 1, "keys": [{"id": 1}]}'])
def test_damaged_keyset_file_is_a_clear_error(keydir: Path, damage: str):
    create_keyset(keydir)
    (keydir / "keyset.json").write_text(damage)
    with pytest.raises(KeysetError, match="damaged"):
        Keyset.load(keydir)


def test_missing_keyset_says_how_to_create_one(keydir: Path):
    with pytest.raises(KeysetError, match="inboxlens keys init"):
        Keyset.load(keydir)


def test_crash_leftovers_are_handled(keydir: Path):
    keyset = create_keyset(keydir)
    # A crash after writing a new key file but before the keyset named it: its id is skipped.
    fd = os.open(keydir / "key-2.secret", os.O_WRONLY | os.O_CREAT, 0o400)
    os.write(fd, bytes(PrivateKey.generate()))
    os.close(fd)
    assert keyset.rotate().id == 3
    # A crash after marking a key revoked but before removing its file: removed at load.
    data = json.loads((keydir / "keyset.json").read_text())
    data["keys"][0]["state"] = REVOKED
    (keydir / "keyset.json").write_text(json.dumps(data))
    Keyset.load(keydir)
    assert not (keydir / "key-1.secret").exists()


def test_systemd_credential_wins_over_the_file(keydir: Path, tmp_path: Path):
    create_keyset(keydir)
    credentials = tmp_path / "creds"
    credentials.mkdir()
    raw = (keydir / "key-1.secret").read_bytes()
    os.remove(keydir / "key-1.secret")
    fd = os.open(credentials / "inboxlens-key-1", os.O_WRONLY | os.O_CREAT, 0o400)
    os.write(fd, raw)
    os.close(fd)
    assert Keyset.load(keydir, read_credentials(credentials)).private_key(1) is not None
    with pytest.raises(KeysetError, match="missing"):
        Keyset.load(keydir)


def test_lock_is_exclusive(keydir: Path):
    first, second = KeysetLock(keydir), KeysetLock(keydir)
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()
