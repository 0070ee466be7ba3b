"""``inboxlens keys export DIR`` and ``inboxlens keys import DIR``: the keys every node must share.

Several nodes on one PostgreSQL (docs/scaling.md) need the same vault keyset, or a vault cannot
open a token another node's web or vault sealed, and the same cookie-signing key for web, or a
session made on one node is refused by the others. Neither may go into the shared database: its
dumps would then open every token and unmask the audit trail's hashed addresses. An admin carries
them from node to node in a directory instead::

    manifest.json      format, when, the key ids and states, SHA-256 of each file
    keyset.json        ids, states and public keys
    key-<id>.secret    each private key the keyset still needs (revoked ones are gone)
    session.key        web's cookie-signing key

The directory is 0700 and every file 0400. Export reads the keyset while the service runs (before
and after, until both reads agree); import checks the checksums and that every private key
matches its public key, refuses a keyset or a cookie key that is not this node's without
``--force`` (a newer copy of the node's own keyset, after a rotation elsewhere, is no conflict),
and writes under the keyset lock, so only while this node's vault is stopped: a running vault
reads its keys only when it starts. Privilege: root, or the owner of a development state.
Nothing here prints a key.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inboxlens import paths
from inboxlens.config.schema import Config
from inboxlens.errors import KeysetError
from inboxlens.vault.keyset import KEYSET_FILE, REVOKED, SECRET_FILE, Keyset, KeysetLock, write_atomic

FORMAT = 1
MANIFEST = "manifest.json"
SESSION_KEY = "session.key"
SESSION_KEY_BYTES = 32
EX_NOPERM = 77
WEB_USER = "inboxlens-web"
VAULT_USER = "inboxlens-vault"
STABLE_READS = 5  # export: reads of a keyset being rotated meanwhile before giving up


@dataclass(frozen=True)
class Bundle:
    """What an export holds, read and checked: the keyset (private keys loaded) and web's key."""

    keyset: Keyset
    keyset_json: bytes
    session_key: bytes


# -- who may ----------------------------------------------------------------------------------

def permitted(config: Config) -> bool:
    """Root, or in development mode the owner of the state directory: the files are read directly.

    ``vault.admin_uid`` is not enough: the vault never hands out a private key over its socket.
    """
    if os.geteuid() == 0:
        return True
    existing = next(p for p in (config.state_dir, *config.state_dir.parents) if p.exists())
    return existing.stat().st_uid == os.geteuid() and existing != Path("/")


def refuse(verb: str) -> int:
    print(f"inboxlens keys {verb}: not permitted for uid {os.geteuid()}: run it as root (the private keys belong to "
          "the vault's user and web's key to web's; the vault never hands a private key over its socket)",
          file=sys.stderr)
    return EX_NOPERM


# -- export -----------------------------------------------------------------------------------

def export(config: Config, target: Path) -> int:
    if not permitted(config):
        return refuse("export")
    target = target.absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise KeysetError(f"{target} exists and is not an empty directory; name a new one")
    if not target.parent.is_dir():
        raise KeysetError(f"{target.parent} does not exist")
    keyset, keyset_json = _stable_keyset(config.vault_dir)
    session_key = _read_session_key(paths.web_dir(config.state_dir) / SESSION_KEY)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))  # 0700
    try:
        _write_bundle(staged, Bundle(keyset, keyset_json, session_key))
        if target.exists():
            target.rmdir()
        os.rename(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    ids = ", ".join(f"{k.id} ({k.state})" for k in keyset.keys() if k.state != REVOKED)
    print(f"exported keys {ids} and web's cookie-signing key to {target}")
    print(f"*** {target} OPENS EVERY STORED TOKEN: carry it to the other nodes over a channel only admins read, "
          "run 'inboxlens keys import' there, then delete it everywhere")
    return 0


def _stable_keyset(directory: Path) -> tuple[Keyset, bytes]:
    """The keyset and its file as one consistent pair, though a running vault may rotate meanwhile."""
    for _ in range(STABLE_READS):
        before = _read_bytes(directory / KEYSET_FILE)
        keyset = Keyset.load(directory)
        if _read_bytes(directory / KEYSET_FILE) == before:
            return keyset, before
    raise KeysetError(f"the keyset in {directory} kept changing while it was read; try again")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeysetError(f"no keyset in {path.parent}: run 'inboxlens keys init'") from None


def _read_session_key(path: Path) -> bytes:
    """The key, read without following a link and only from a regular file: web owns its
    directory, so a compromised web could otherwise point root's export at any file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeysetError(f"web has no cookie-signing key yet ({path}): it makes one when it first starts; "
                          "start 'inboxlens serve' on this node once, then export") from None
    except OSError as e:
        raise KeysetError(f"{path} cannot be read as web's key ({e.strerror}; a link is refused)") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise KeysetError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        key = f.read(SESSION_KEY_BYTES + 1)
    if len(key) != SESSION_KEY_BYTES:
        raise KeysetError(f"{path} is damaged (not {SESSION_KEY_BYTES} bytes)")
    return key


def _write_bundle(directory: Path, bundle: Bundle) -> None:
    files = {KEYSET_FILE: bundle.keyset_json, SESSION_KEY: bundle.session_key}
    for info in bundle.keyset.keys():
        key = bundle.keyset.private_key(info.id)
        if key is not None:
            files[SECRET_FILE.format(info.id)] = bytes(key)
    for name, data in files.items():
        write_atomic(directory / name, data, 0o400, None)
    manifest = {"format": FORMAT, "made_by": "inboxlens keys export", "created": time.time(),
                "keys": [{"id": k.id, "state": k.state} for k in bundle.keyset.keys()],
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}}
    write_atomic(directory / MANIFEST, json.dumps(manifest, indent=2).encode(), 0o400, None)  # last: complete


# -- import -----------------------------------------------------------------------------------

def import_(config: Config, source: Path, force: bool) -> int:
    if not permitted(config):
        return refuse("import")
    bundle = read_bundle(source.absolute())
    web_owner = _owner(WEB_USER, required=True)
    conflicts = _conflicts(config, bundle)
    if conflicts and not force:
        raise KeysetError("; ".join(conflicts) + ". Nothing was changed; --force replaces them")
    config.vault_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = KeysetLock(config.vault_dir)
    if not lock.acquire():
        raise KeysetError("the vault is running on this node and reads its keys only when it starts: stop the "
                          "service here, import, then start it")
    try:
        _install_keyset(config.vault_dir, bundle, _owner(VAULT_USER, required=False))
    finally:
        lock.release()
    _install_session_key(paths.web_dir(config.state_dir), bundle.session_key, web_owner)
    ids = ", ".join(str(k.id) for k in bundle.keyset.keys() if k.state != REVOKED)
    replaced = " (replacing this node's)" if conflicts else ""
    print(f"imported keys {ids} (primary {bundle.keyset.primary.id}) and web's cookie-signing key{replaced}")
    return 0


def read_bundle(source: Path) -> Bundle:
    """An export directory, checked: manifest, checksums, sizes, each private key against its public key."""
    try:
        manifest: Any = json.loads((source / MANIFEST).read_bytes())
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
    except FileNotFoundError:
        raise KeysetError(f"{source} holds no {MANIFEST}: not a directory 'inboxlens keys export' wrote") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeysetError(f"{source / MANIFEST} is damaged or of another format") from None
    for name, digest in files.items():
        if not name or "/" in name or "\0" in name or name.startswith("."):
            raise KeysetError(f"{source / MANIFEST} names a file outside the export ({name!r})")
        if not isinstance(digest, str):
            raise KeysetError(f"{source / MANIFEST} is damaged or of another format")
        try:
            data = (source / name).read_bytes()
        except FileNotFoundError:
            raise KeysetError(f"{source / name} is missing") from None
        except OSError as e:
            raise KeysetError(f"{source / name} cannot be read: {e.strerror}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise KeysetError(f"{source / name} does not match its checksum in the manifest: damaged in transit?")
    if KEYSET_FILE not in files or SESSION_KEY not in files:
        raise KeysetError(f"{source / MANIFEST} lists no {KEYSET_FILE if KEYSET_FILE not in files else SESSION_KEY}")
    session_key = (source / SESSION_KEY).read_bytes()
    if len(session_key) != SESSION_KEY_BYTES:
        raise KeysetError(f"{source / SESSION_KEY} is damaged (not {SESSION_KEY_BYTES} bytes)")
    keyset = Keyset.load(source)  # every private key it needs, each checked against its public key
    return Bundle(keyset, (source / KEYSET_FILE).read_bytes(), session_key)


def _conflicts(config: Config, bundle: Bundle) -> list[str]:
    """What importing would replace that is not merely an older copy of the same keys."""
    found = []
    mine = _public_keys(config.vault_dir / KEYSET_FILE)
    if mine is None:
        found.append(f"this node's {config.vault_dir / KEYSET_FILE} is damaged")
        mine = {}
    theirs = {k.id: k for k in bundle.keyset.keys()}
    differ = sorted(i for i, (state, public) in mine.items()
                    if i not in theirs or theirs[i].public_key.encode().hex() != public)
    if differ:
        found.append(f"this node's keyset has key(s) {', '.join(map(str, differ))} that the export does not: "
                     "another keyset (tokens sealed under them could no longer be opened)")
    older = sorted(i for i, (state, _) in mine.items()
                   if state == REVOKED and i in theirs and theirs[i].state != REVOKED)
    if older:
        found.append(f"key(s) {', '.join(map(str, older))} are revoked on this node but not in the export: "
                     "the export is older than this node's keyset")
    web_key = paths.web_dir(config.state_dir) / SESSION_KEY
    if web_key.exists() and web_key.read_bytes() != bundle.session_key:
        found.append(f"web's cookie-signing key on this node ({web_key}) is another one (sessions made on this "
                     "node would end)")
    return found


def _public_keys(path: Path) -> dict[int, tuple[str, str]] | None:
    """This node's keyset as {id: (state, public key hex)}, None if damaged; no private key is needed."""
    try:
        data: Any = json.loads(path.read_bytes())
        return {int(k["id"]): (str(k["state"]), str(k["public_key"])) for k in data["keys"]}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError):
        return None


def _install_keyset(directory: Path, bundle: Bundle, owner: tuple[int, int] | None) -> None:
    """Private keys first, then the keyset naming them (a crash leaves the old keyset working);
    then the files of keys the new keyset no longer needs go."""
    needed = set()
    for info in bundle.keyset.keys():
        key = bundle.keyset.private_key(info.id)
        if key is not None:
            needed.add(SECRET_FILE.format(info.id))
            write_atomic(directory / SECRET_FILE.format(info.id), bytes(key), 0o400, owner)
    write_atomic(directory / KEYSET_FILE, bundle.keyset_json, 0o600, owner)
    for path in directory.glob(SECRET_FILE.format("*")):
        if path.name not in needed:
            path.unlink()


def _install_session_key(directory: Path, key: bytes, owner: tuple[int, int] | None) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if owner is not None:
        os.chown(directory, *owner)
    write_atomic(directory / SESSION_KEY, key, 0o600, owner)


def _owner(user: str, required: bool) -> tuple[int, int] | None:
    """As root, files we write belong to the service's user for them. Serve hands the key directory
    over to the vault's user when it starts; web's directory it does not, so web's user must exist."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        if not required:
            return None
        raise KeysetError(f"the service's user {user} does not exist yet: create the service's users "
                          "('systemd-sysusers config/inboxlens.sysusers'), then import") from None
    return entry.pw_uid, entry.pw_gid
