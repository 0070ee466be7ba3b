"""``inboxlens keys …``: the keyset, online through the running vault or offline.

Online (the vault's socket answers): admin operations over the socket, checked by
the vault like any other request (root or ``vault.admin_uid``). Offline (the
service is stopped): the same handlers run in this process, after taking the
keyset lock the running vault would hold, on the same files and token store.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from inboxlens.config.schema import Config
from inboxlens.errors import InboxLensError, KeysetError, NotPermitted
from inboxlens.progress import ProgressBar
from inboxlens.service_errors import VaultUnavailable
from inboxlens.vault.client import VaultClient
from inboxlens.vault.keyset import KEYSET_FILE, Keyset, KeysetLock
from inboxlens.vault.ops import Callers
from inboxlens.vault.refresh import Refresher
from inboxlens.vault.server import Vault
from inboxlens.vault.store import open_store

VAULT_USER = "inboxlens-vault"
REWRAP_BATCH = 100


class Admin(Protocol):
    async def status(self) -> dict[str, Any]: ...
    async def rotate(self) -> dict[str, Any]: ...
    async def rewrap(self, limit: int) -> dict[str, Any]: ...
    async def revoke(self, key_id: int) -> dict[str, Any]: ...


class OfflineAdmin:
    """The vault's own handlers, run in this process while the service is stopped."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    async def status(self) -> dict[str, Any]:
        return await self.vault.answer_status()

    async def rotate(self) -> dict[str, Any]:
        return await self.vault.answer_rotate()

    async def rewrap(self, limit: int) -> dict[str, Any]:
        return await self.vault.answer_rewrap(limit)

    async def revoke(self, key_id: int) -> dict[str, Any]:
        return await self.vault.answer_revoke(key_id)


def prepare_directory(directory: Path, owner: tuple[int, int] | None) -> None:
    """Create the key directory 0700 (owned by the vault when we are root)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if owner is not None:
        os.chown(directory, *owner)
    os.chmod(directory, 0o700)


def create_keyset(directory: Path, owner: tuple[int, int] | None = None) -> Keyset:
    """A new keyset with one primary key; refuses if one exists. Only the CLI creates keysets."""
    if (directory / KEYSET_FILE).exists():
        raise KeysetError(f"a keyset already exists in {directory}")
    keyset = Keyset(directory, {}, {}, owner)
    keyset.rotate()
    return keyset


def vault_owner() -> tuple[int, int] | None:
    """Files we create as root belong to the vault's user, if the service created it."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(VAULT_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def init(config: Config, if_missing: bool) -> int:
    try:
        return _init(config, if_missing)
    except PermissionError as e:
        raise KeysetError(f"permission denied on {e.filename}: {who_may(config)}") from None


def _init(config: Config, if_missing: bool) -> int:
    if (config.vault_dir / KEYSET_FILE).exists():
        if if_missing:
            return 0
        raise KeysetError(f"a keyset already exists in {config.vault_dir}; use 'inboxlens keys rotate'")
    owner = vault_owner()
    prepare_directory(config.vault_dir, owner)
    lock = KeysetLock(config.vault_dir)
    if not lock.acquire():
        raise KeysetError("the vault is running; it already has a keyset")
    try:
        info = create_keyset(config.vault_dir, owner).primary
    finally:
        lock.release()
        _chown_tree(config.vault_dir, owner)  # the lock file too
    print(f"created keyset in {config.vault_dir} with primary key {info.id}")
    return 0


@asynccontextmanager
async def admin(config: Config) -> AsyncIterator[Admin]:
    """The running vault if it answers, else the offline handlers under the keyset lock."""
    client = VaultClient(config.vault_socket)
    try:
        await client.public_key()
    except VaultUnavailable:
        await client.close()
        async with _offline(config) as offline:
            yield offline
        return
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def _offline(config: Config) -> AsyncIterator[OfflineAdmin]:
    lock = KeysetLock(config.vault_dir)
    try:
        held = lock.acquire()
    except FileNotFoundError:
        raise KeysetError(f"no keyset in {config.vault_dir}: run 'inboxlens keys init'") from None
    if not held:
        raise VaultUnavailable(f"the vault holds the keyset but does not answer at {config.vault_socket}")
    store = None
    try:
        owner = vault_owner()
        keyset = Keyset.load(config.vault_dir, owner=owner)
        store = await open_store(config.vault, config.vault_dir)
        refresher = Refresher({}, attempts=1, backoff=0, timeout=1, default_expires_in=1)
        yield OfflineAdmin(Vault(keyset, store, refresher, Callers(), margin=0))
    finally:
        if store is not None:
            await store.close()
        _chown_tree(config.vault_dir, vault_owner())
        lock.release()


def _chown_tree(directory: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    for path in [directory, *directory.iterdir()]:
        os.chown(path, *owner, follow_symlinks=False)


async def list_keys(admin: Admin) -> int:
    status = await admin.status()
    print(f"{'ID':>4}  {'STATE':<8}  {'CREATED':<20}  {'TOKENS':>7}")
    for key in status["keys"]:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(key["created"]))
        print(f"{key['id']:>4}  {key['state']:<8}  {created:<20}  {key['tokens']:>7}")
    return 0


async def show_status(admin: Admin) -> int:
    """Tokens by state, refresh counters (online only) and the latest refresh events."""
    status = await admin.status()
    tokens = ", ".join(f"{n} {state}" for state, n in sorted(status["tokens"].items())) or "none"
    print(f"tokens: {tokens}")
    refresh = status["refresh"]
    print(f"since the vault started: {refresh['refreshes']} refresh(es), {refresh['transient_failures']} transient "
          f"failure(s), {refresh['failing']} account(s) failing now, {refresh['cached']} access token(s) cached")
    for event in status["events"][:20]:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event["at"]))
        print(f"{at}  account {event['account_id']}  {event['kind']}  {event['detail']}")
    return 0


async def rotate(admin: Admin) -> int:
    info = await admin.rotate()
    print(f"key {info['id']} is now primary; run 'inboxlens keys rewrap' to re-seal existing tokens under it")
    return 0


async def rewrap(admin: Admin, batch: int = REWRAP_BATCH,
                 progress: Callable[[int, int], None] | None = None) -> int:
    """Re-seal every token under the primary key, a batch at a time; safe to interrupt and rerun.

    Another node may rewrap the same store at once (each swap is a compare-and-set, so a token
    is re-sealed once): a step that swapped nothing goes on while the count left still falls.
    """
    first = await admin.rewrap(batch)
    done, failed = first["rewrapped"], list(first["failed"])
    total = done + len(failed) + first["remaining"]
    bar = ProgressBar()
    report = progress or (lambda done, total: bar.show("rewrap", done, total))
    report(done, total)
    remaining = first["remaining"]
    while remaining > len(failed):
        step = await admin.rewrap(batch)
        if not step["rewrapped"] and step["remaining"] >= remaining and set(step["failed"]) <= set(failed):
            break  # no progress, here or elsewhere: only tokens that cannot be opened are left, or new ones keep coming
        done += step["rewrapped"]
        failed = sorted(set(failed) | set(step["failed"]))
        remaining = step["remaining"]
        report(total - remaining + len(failed), total)
    bar.finish()
    return _rewrapped(done, failed, remaining, first["primary"])


def _rewrapped(done: int, failed: list[str], remaining: int, primary: int) -> int:
    if failed:
        print(f"rewrap: {done} re-sealed; {len(failed)} cannot be opened and were left: {', '.join(failed[:10])}")
        return 1
    if remaining:
        print(f"rewrap: {done} re-sealed; {remaining} are sealed under older keys again: a node that does not have "
              f"key {primary} yet seals under its old primary ('inboxlens keys import' there), then run rewrap again")
        return 1
    print(f"rewrap: {done} token(s) re-sealed under key {primary}; none left under older keys")
    return 0


async def revoke(admin: Admin, key_id: int) -> int:
    info = await admin.revoke(key_id)
    print(f"key {info['id']} revoked; its private key is destroyed")
    return 0


def run(config: Config, action: Callable[[Admin], Awaitable[int]]) -> int:
    async def go() -> int:
        async with admin(config) as a:
            return await action(a)
    try:
        return asyncio.run(go())
    except PermissionError as e:  # offline, on files that belong to root or the vault's user
        raise KeysetError(f"permission denied on {e.filename}: {who_may(config)}") from None
    except NotPermitted:  # online: the vault checked our uid
        raise KeysetError(f"the vault refused this uid: {who_may(config)}") from None


def who_may(config: Config) -> str:
    """One line naming who may run ``inboxlens keys``."""
    admin_uid = config.vault.admin_uid
    if admin_uid >= 0:
        return f"run 'inboxlens keys' as root, or as uid {admin_uid} (vault.admin_uid) while the service runs"
    return "run 'inboxlens keys' as root (or set vault.admin_uid to let one other user run it while the service runs)"


__all__ = ["init", "run", "list_keys", "rotate", "rewrap", "revoke", "InboxLensError"]
