"""The vault's keyset: numbered X25519 keys, each primary, active or revoked.

The key directory (the vault's uid, 0700) holds ``keyset.json`` (ids, states, creation
times, public keys; 0600), ``key-<id>.secret`` (a 32-byte private key, 0400, removed
when the key is revoked) and ``.lock``, flocked by whoever may change the keyset: the
running vault, or ``inboxlens keys`` while it is stopped. A private key may instead
come as a systemd credential, which wins; only the root supervisor can read those,
so it hands them to the vault on its pipe. The CLI creates keysets; the vault only
loads, rotates and revokes.

Crash-safe: a new private key is synced before the keyset names it; a key is marked
revoked before its file is removed, and a revoked key's left-over file goes at load.
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
from typing import IO, Any, Mapping

from nacl.public import PrivateKey, PublicKey

from inboxlens.errors import KeysetError

PRIMARY, ACTIVE, REVOKED = "primary", "active", "revoked"
KEYSET_FILE = "keyset.json"
LOCK_FILE = ".lock"
SECRET_FILE = "key-{}.secret"
Owner = tuple[int, int] | None  # (uid, gid) for files written as root for the vault; None: ours


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
                 owner: Owner) -> None:
        self.directory = directory
        self._keys = keys
        self._private = private
        self._owner = owner

    @classmethod
    def load(cls, directory: Path, credentials: Mapping[int, bytes] | None = None, owner: Owner = None) -> "Keyset":
        """Load the keyset and every private key it still needs."""
        keys = _read_keyset(directory / KEYSET_FILE)
        private: dict[int, PrivateKey] = {}
        for info in keys.values():
            if info.state == REVOKED:
                (directory / SECRET_FILE.format(info.id)).unlink(missing_ok=True)
            else:
                private[info.id] = _private_key(directory, credentials or {}, info)
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

    def rotate(self) -> KeyInfo:
        """Add a new primary key; the old primary becomes active (decrypt only)."""
        # A crash between writing a key file and the keyset can leave an orphan file: skip its id.
        on_disk = [int(p.name[4:-7]) for p in self.directory.glob("key-*.secret") if p.name[4:-7].isdigit()]
        new_id = max([0, *self._keys, *on_disk]) + 1
        key = PrivateKey.generate()
        _write_new(self.directory / SECRET_FILE.format(new_id), bytes(key), 0o400, self._owner)  # never over a key
        info = KeyInfo(new_id, PRIMARY, time.time(), key.public_key)
        keys = {i: dataclasses.replace(k, state=ACTIVE) if k.state == PRIMARY else k for i, k in self._keys.items()}
        self._save({**keys, new_id: info})
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
        (self.directory / SECRET_FILE.format(key_id)).unlink(missing_ok=True)
        return self._keys[key_id]

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
        file = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600), "r+b")
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


def write_atomic(path: Path, data: bytes, mode: int, owner: Owner) -> None:
    """Write a file so that a crash leaves the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    _write_new(tmp, data, mode, owner)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _write_new(path: Path, data: bytes, mode: int, owner: Owner) -> None:
    """Create ``path`` (it must not exist) with ``mode`` and ``owner``; sync it and its directory."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_keyset(path: Path) -> dict[int, KeyInfo]:
    try:
        data: Any = json.loads(path.read_bytes())
        if data.get("version") != 1 or not isinstance(data.get("keys"), list):
            raise ValueError("unknown keyset version")
        keys = [KeyInfo(int(k["id"]), k["state"], float(k["created"]), PublicKey(bytes.fromhex(k["public_key"])))
                for k in data["keys"]]
        if any(k.state not in (PRIMARY, ACTIVE, REVOKED) for k in keys):
            raise ValueError("unknown key state")
        return {k.id: k for k in keys}
    except FileNotFoundError:
        raise KeysetError(f"no keyset in {path.parent}: run 'inboxlens keys init'") from None
    except PermissionError:
        raise KeysetError(f"{path} is not readable by uid {os.getuid()}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise KeysetError(f"{path} is damaged ({type(e).__name__})") from None


def _private_key(directory: Path, credentials: Mapping[int, bytes], info: KeyInfo) -> PrivateKey:
    path = directory / SECRET_FILE.format(info.id)
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
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise KeysetError(f"private key file {path} is readable by others (mode "
                                  f"{stat.S_IMODE(st.st_mode):o}); chmod 0400 it")
            if os.geteuid() != 0 and st.st_uid not in (os.geteuid(), 0):
                raise KeysetError(f"private key file {path} is owned by uid {st.st_uid}, not the vault's")
            return f.read(33)
    except FileNotFoundError:
        raise KeysetError(f"private key {key_id} ({path}) is missing") from None
    except PermissionError:
        raise KeysetError(f"private key {key_id} ({path}) is not readable by uid {os.getuid()}") from None
