"""inboxlens-vault: the only process that can turn a stored refresh token into an access token.

Privilege: its own uid (``inboxlens-vault``) when the supervisor starts as root;
non-dumpable (PR_SET_DUMPABLE=0, no core files) before it reads a key; umask 077.
Untrusted input: frames on its Unix socket (``<runtime_dir>/vault/vault.sock``, 0660,
group ``inboxlens``) from web, harvest and admins: a peer with no role (SO_PEERCRED) is
closed at accept, and every request checked against the table in ``ops`` first.
Answers from OAuth providers' token endpoints.
Trusted input: its configuration slice (with private keys passed as systemd credentials)
and PID registrations on stdin from the supervisor; the keyset and token store under
``<state_dir>/vault`` (0700).
Writes: the token store (sealed tokens, refresh events), the keyset (on rotate/revoke);
log lines on stderr that never hold a token, key or secret.
Config keys: ``state_dir``, ``runtime_dir``, ``log_level``, ``log_format``, ``vault.*``, ``providers.*``.
Stopping: SIGTERM or the end of stdin: stop accepting, close idle connections, answer
those in flight and let running refreshes store their tokens within
``vault.shutdown_seconds``; exit 0, or 75 if that deadline passed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

from inboxlens import child
from inboxlens.config.vault import VaultSlice
from inboxlens.errors import DrainExpired, InboxLensError, StartError
from inboxlens.vault.keyset import Keyset, KeysetLock
from inboxlens.vault.ops import Callers
from inboxlens.vault.refresh import Refresher
from inboxlens.vault.server import Listener, Vault
from inboxlens.vault.store import open_store

log = logging.getLogger("inboxlens.vault")


async def listen(path: Path, listener: Listener) -> asyncio.AbstractServer:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()  # left by a vault that died; we hold the keyset lock, so it is not live
    except FileNotFoundError:
        pass
    server = await asyncio.start_unix_server(listener.handle, path=path, limit=64 * 1024)
    os.chmod(path, 0o660)
    return server


async def main(channel: child.Channel) -> None:
    os.umask(0o077)  # child.run made us non-dumpable and core-less already
    try:
        config = VaultSlice.from_dict(channel.config["config"])
        callers = Callers.from_dict(channel.config.get("callers", {}))
        credentials = {int(k): bytes.fromhex(v) for k, v in channel.config.get("credentials", {}).items()}
    except (KeyError, ValueError, InboxLensError) as e:
        raise StartError(f"bad configuration slice: {e}") from None
    lock = KeysetLock(config.vault_dir)
    try:
        if not lock.acquire():
            raise StartError(f"another vault or 'inboxlens keys' holds {lock.path}")
        await serve(channel, config, callers, credentials)
    except (DrainExpired, StartError):
        raise
    except (InboxLensError, OSError) as e:
        raise StartError(str(e)) from None
    finally:
        lock.release()


async def serve(channel: child.Channel, config: VaultSlice, callers: Callers, credentials: dict[int, bytes]) -> None:
    keyset = Keyset.load(config.vault_dir, credentials)
    store = await open_store(config.vault, config.vault_dir)
    v = config.vault
    refresher = Refresher(config.providers, attempts=v.refresh_attempts, backoff=v.refresh_backoff_seconds,
                          timeout=v.refresh_timeout_seconds, default_expires_in=v.default_expires_in_seconds)
    vault = Vault(keyset, store, refresher, callers, margin=v.access_token_margin_seconds)
    listener = Listener(vault, v)
    server = await listen(config.vault_socket, listener)
    log.info("serving on %s with primary key %d (%s callers)", config.vault_socket, keyset.primary.id,
             "uid-separated" if callers.shared_uid is None else "PID-registered")
    channel.ready()
    control = asyncio.create_task(_control(channel, callers))
    try:
        await channel.stopping.wait()
        log.info("stopping")
        await child.drain(server, v.shutdown_seconds, vault.refreshes_in_flight(), cut_idle=listener.stop_idle)
    finally:
        control.cancel()
        server.close()
        await refresher.close()
        await store.close()
        config.vault_socket.unlink(missing_ok=True)
        log.info("stopped")


async def _control(channel: child.Channel, callers: Callers) -> None:
    async for message in channel.messages():
        try:
            if message.get("register"):
                callers.register(int(message["register"]), str(message["role"]))
                log.info("registered pid %d as %s", int(message["register"]), message["role"])
            elif message.get("unregister"):
                callers.unregister(int(message["unregister"]))
                log.info("unregistered pid %d", int(message["unregister"]))
            else:
                raise ValueError("unknown control message")
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            log.error("control message refused: %s", e)


if __name__ == "__main__":
    child.run("inboxlens-vault", main)
