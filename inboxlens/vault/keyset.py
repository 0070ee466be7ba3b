"""The vault's keyset: numbered X25519 keys, each primary, active or revoked.

Layout of the key directory (owned by the vault's uid, mode 0700)::

    keyset.json     ids, states, creation times and public keys (not secret), 0600
    key-<id>.secret the 32-byte private key, 0400, absent once the key is revoked
    .lock           held (flock) by whoever may change the keyset: the running
                    vault, or the offline ``inboxlens keys`` CLI when it is stopped

A private key may instead come from systemd credentials
(``$CREDENTIALS_DIRECTORY/inboxlens-key-<id>``), which win over the file. Only the unit's
main process (the root supervisor) can read that directory, so the supervisor reads
them (``supervisor.plan``) and hands them to the vault on its private pipe. Creating
a keyset is the CLI's job (``vault.admin``); the vault only loads, rotates and revokes.

Changes are crash-safe: a new private key is written and synced before the
keyset names it; a revoked key is marked revoked before its file is removed, and
a left-over file of a revoked key is removed at the next load.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Mapping

from nacl.public import PrivateKey, PublicKey

from inboxlens.errors import KeysetError

PRIMARY, ACTIVE, REVOKED = "primary", "active", "revoked"
KEYSET_FILE = "keyset.json"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class KeyInfo:
    id: int
    state: str
    created: float
    public_key: PublicKey

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "state": self.state, "created": self.created,
                "public_key": self.public_key.encode().hex()}


class Keyset:
    """Keys in one directory. Not thread-safe; one owner holds the lock."""

    def __init__(self, directory: Path, keys: dict[int, KeyInfo], private: dict[int, PrivateKey],
                 owner: tuple[int, int] | None) -> None:
        self.directory = directory
        self._keys = keys
        self._private = private
        self._owner = owner

    # -- reading ---------------------------------------------------------

    @classmethod
    def load(cls, directory: Path, credentials: Mapping[int, bytes] | None = None,
             owner: tuple[int, int] | None = None) -> "Keyset":
        """Load the keyset and every private key it still needs."""
        keys = _read_keyset(directory)
        private: dict[int, PrivateKey] = {}
        for info in keys.values():
            if info.state == REVOKED:
                _remove_if_present(directory / _secret_name(info.id))
                continue
            private[info.id] = _read_private(directory, credentials or {}, info)
        return cls(directory, keys, private, owner)

    @property
    def primary(self) -> KeyInfo:
        for info in self._keys.values():
            if info.state == PRIMARY:
                return info
        raise KeysetError(f"{self.directory / KEYSET_FILE} names no primary key")

    def keys(self) -> list[KeyInfo]:
        return sorted(self._keys.values(), key=lambda k: k.id)

    def private_key(self, key_id: int) -> PrivateKey | None:
        """The private key for an id, or None if unknown or revoked."""
        return self._private.get(key_id)

    # -- changing ----------------------------------------------------------

    def rotate(self) -> KeyInfo:
        """Add a new primary key; the old primary becomes active (decrypt only)."""
        new_id = self._next_id()
        key = PrivateKey.generate()
        _write_private(self.directory / _secret_name(new_id), bytes(key), self._owner)
        info = KeyInfo(new_id, PRIMARY, time.time(), key.public_key)
        keys = {i: dataclasses.replace(k, state=ACTIVE) if k.state == PRIMARY else k for i, k in self._keys.items()}
        keys[new_id] = info
        self._save(keys)
        self._private[new_id] = key
        return info

    def revoke(self, key_id: int) -> KeyInfo:
        """Mark a key revoked and destroy its private key. The caller checks no token needs it."""
        info = self._keys.get(key_id)
        if info is None:
            raise KeysetError(f"no key {key_id} in the keyset")
        if info.state == PRIMARY:
            raise KeysetError(f"key {key_id} is the primary key; rotate first")
        if info.state != REVOKED:
            self._save({**self._keys, key_id: dataclasses.replace(info, state=REVOKED)})
        self._private.pop(key_id, None)
        _remove_if_present(self.directory / _secret_name(key_id))
        return self._keys[key_id]

    def _next_id(self) -> int:
        # A crash between writing a key file and the keyset can leave an orphan file: skip its id.
        on_disk = [int(p.name[4:-7]) for p in self.directory.glob("key-*.secret") if p.name[4:-7].isdigit()]
        return max([0, *self._keys, *on_disk]) + 1

    def _save(self, keys: dict[int, KeyInfo]) -> None:
        data = {"version": 1, "keys": [k.as_dict() for k in sorted(keys.values(), key=lambda k: k.id)]}
        write_atomic(self.directory / KEYSET_FILE, json.dumps(data, indent=2).encode(), 0o600, self._owner)
        self._keys = keys


class KeysetLock:
    """An exclusive flock on the key directory; only one process changes keys at a time."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        file = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        self._file = file
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_atomic(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """Write a file so that a crash leaves the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    _remove_if_present(tmp)
    _write_new(tmp, data, mode, owner)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_private(path: Path, key: bytes, owner: tuple[int, int] | None) -> None:
    _write_new(path, key, 0o400, owner)  # never over an existing key
    _fsync_dir(path.parent)


def _write_new(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """Create ``path`` (it must not exist) with ``mode`` and ``owner``, and sync it to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_keyset(directory: Path) -> dict[int, KeyInfo]:
    path = directory / KEYSET_FILE
    try:
        data = json.loads(path.read_bytes())
        return {k.id: k for k in _parse_keys(data)}
    except FileNotFoundError:
        raise KeysetError(f"no keyset in {directory}: run 'inboxlens keys init'") from None
    except PermissionError:
        raise KeysetError(f"{path} is not readable by uid {os.getuid()}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise KeysetError(f"{path} is damaged ({type(e).__name__})") from None


def _parse_keys(data: dict[str, object]) -> Iterator[KeyInfo]:
    if data.get("version") != 1 or not isinstance(data.get("keys"), list):
        raise ValueError("unknown keyset version")
    for item in data["keys"]:  # type: ignore[attr-defined]
        state = item["state"]
        if state not in (PRIMARY, ACTIVE, REVOKED):
            raise ValueError(f"unknown key state {state!r}")
        yield KeyInfo(int(item["id"]), state, float(item["created"]), PublicKey(bytes.fromhex(item["public_key"])))


def _read_private(directory: Path, credentials: Mapping[int, bytes], info: KeyInfo) -> PrivateKey:
    path = directory / _secret_name(info.id)
    raw = credentials[info.id] if info.id in credentials else read_key_file(path, info.id)
    if len(raw) != 32:
        raise KeysetError(f"private key {info.id} is damaged")
    key = PrivateKey(raw)
    if key.public_key != info.public_key:
        raise KeysetError(f"private key {info.id} does not match its public key")
    return key


def read_key_file(path: Path, key_id: int) -> bytes:
    """A private key file's bytes, refused unless only its owner (the vault, or root) can read it."""
    try:
        with open(path, "rb", opener=_nofollow) as f:
            _check_private_mode(path, os.fstat(f.fileno()))
            return f.read(33)
    except FileNotFoundError:
        raise KeysetError(f"private key {key_id} ({path}) is missing") from None
    except PermissionError:
        raise KeysetError(f"private key {key_id} ({path}) is not readable by uid {os.getuid()}") from None


def _check_private_mode(path: Path, st: os.stat_result) -> None:
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise KeysetError(f"private key file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 0400 it")
    if os.geteuid() != 0 and st.st_uid not in (os.geteuid(), 0):
        raise KeysetError(f"private key file {path} is owned by uid {st.st_uid}, not the vault's")


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def _secret_name(key_id: int) -> str:
    return f"key-{key_id}.secret"


def _remove_if_present(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
