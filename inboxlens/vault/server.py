"""The vault's request handlers (``answer_<op>``) and its connection loop.

Every request: read the peer's credentials, name its role, check the operation
against ``callers.PERMITS``. Unknown, unpermitted or malformed input is logged and
the connection closed. Answers that could leak why a token failed to open carry
one opaque code (``cannot_open``). Nothing here logs or returns a refresh token,
a key or a client secret; ``answer_get`` returns an access token to harvest only.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import weakref
from typing import Any, Awaitable, Callable

from inboxlens.errors import (BadRequest, CannotOpen, Conflict, KeysetError, ProtocolError, ProviderRejected, ProviderUnavailable, ReauthRequired, SealedTokenError, UnknownAccount, VaultRefused)
from inboxlens.vault import protocol, sealed
from inboxlens.vault.callers import Callers, Peer, peer_of, permitted
from inboxlens.vault.keyset import Keyset
from inboxlens.vault.refresh import Refresher
from inboxlens.vault.store import OK, REAUTH_REQUIRED, TokenRecord, TokenStore

log = logging.getLogger("inboxlens.vault")
STATUS_EVENTS = 50
REWRAP_CHUNK = 100  # tokens per transaction: one synced write each, not one per token


class Vault:
    def __init__(self, keyset: Keyset, store: TokenStore, refresher: Refresher, callers: Callers, *,
                 margin: float, clock: Callable[[], float] = time.time) -> None:
        self.keyset = keyset
        self.store = store
        self.refresher = refresher
        self.callers = callers
        self.margin = margin
        self.clock = clock
        self._cache: dict[str, tuple[str, float]] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._failing: set[str] = set()
        self.refreshes = 0
        self.handlers: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
            op: getattr(self, f"answer_{op}") for op in protocol.REQUESTS}

    # -- handlers ------------------------------------------------------------

    async def answer_public_key(self) -> dict[str, Any]:
        primary = self.keyset.primary
        return {"key_id": primary.id, "public_key": primary.public_key.encode().hex()}

    async def answer_set(self, account_id: str, provider: str, sealed: bytes) -> dict[str, Any]:
        async with self._lock(account_id):
            key_id = self._check_opens(sealed, account_id, provider)
            await self.store.put(account_id, provider, key_id, sealed, event=f"token_set: sealed under key {key_id}")
            self._cache.pop(account_id, None)
            self._failing.discard(account_id)
        log.info("stored token for account %s (%s)", account_id, provider)
        return {"account_id": account_id, "key_id": key_id}

    async def answer_forget(self, account_id: str, revoke: bool) -> dict[str, Any]:
        """Delete an account's token; with ``revoke``, first revoke the grant at the provider."""
        async with self._lock(account_id):
            record = await self.store.get(account_id)
            revoked = "no_token" if record is None else "not_requested"
            if record is not None and revoke:
                try:
                    revoked = await self.refresher.revoke(record.provider, self._open(record))
                except CannotOpen:
                    revoked = "failed"
            forgotten = await self.store.delete(account_id)
            self._cache.pop(account_id, None)
            self._failing.discard(account_id)
            if forgotten:
                await self.store.add_event(account_id, "token_forgotten", f"revocation: {revoked}")
        log.info("forgot account %s (revocation: %s)", account_id, revoked)
        return {"forgotten": forgotten, "revocation": revoked}

    async def answer_token_state(self, account_id: str) -> dict[str, Any]:
        """What web shows: is a token stored, and does it need the user to reconnect?"""
        record = await self.store.get(account_id)
        return {"state": "missing" if record is None else record.status}

    async def answer_get(self, account_id: str, rejected: str) -> dict[str, Any]:
        """An access token for harvest. ``rejected``: the one the mail server just refused, if any.

        Only that very token is dropped from the cache, so many callers reporting the same
        refusal still cause one refresh.
        """
        current = self._cache.get(account_id)
        if rejected and current is not None and hmac.compare_digest(current[0], rejected):
            del self._cache[account_id]
        cached = self._fresh(account_id)
        if cached is None:
            async with self._lock(account_id):
                # Single flight: whoever waited for the lock finds the token the first caller fetched.
                cached = self._fresh(account_id) or await self._refresh(account_id)
        return {"access_token": cached[0], "expires_at": cached[1]}

    async def answer_status(self) -> dict[str, Any]:
        counts = await self.store.count_by_key()
        keys = [{**k.as_dict(), "tokens": counts.get(k.id, 0)} for k in self.keyset.keys()]
        return {"keys": keys, "tokens": await self.store.count_by_status(),
                "events": await self.store.events(STATUS_EVENTS),
                "refresh": {"refreshes": self.refreshes, "transient_failures": self.refresher.transient_failures,
                            "cached": len(self._cache), "failing": len(self._failing)}}

    async def answer_rotate(self) -> dict[str, Any]:
        info = self.keyset.rotate()
        log.info("rotated: key %d is now primary", info.id)
        return info.as_dict()

    async def answer_rewrap(self, limit: int) -> dict[str, Any]:
        """Re-seal up to ``limit`` tokens under the primary key, committing every REWRAP_CHUNK.

        Each swap is a compare-and-set: a token that changed meanwhile (a refresh rotated
        it, sealing it under the primary anyway) is simply left for the next call.
        """
        primary = self.keyset.primary
        done, failed = 0, []
        records = await self.store.not_under(primary.id, limit)
        for start in range(0, len(records), REWRAP_CHUNK):
            swaps = []
            for record in records[start:start + REWRAP_CHUNK]:
                try:
                    token = self._open(record)
                except CannotOpen:
                    log.error("rewrap: the token of account %s cannot be opened; left as it is", record.account_id)
                    failed.append(record.account_id)
                    continue
                blob = sealed.seal(primary.public_key, primary.id, record.account_id, record.provider, token)
                swaps.append((record.account_id, record.sealed, primary.id, blob))
            done += sum(await self.store.replace_many(swaps))
        counts = await self.store.count_by_key()
        remaining = sum(n for key_id, n in counts.items() if key_id != primary.id)
        log.info("rewrap: %d re-sealed, %d failed, %d remaining", done, len(failed), remaining)
        return {"rewrapped": done, "failed": failed, "remaining": remaining, "primary": primary.id}

    async def answer_revoke(self, key_id: int) -> dict[str, Any]:
        in_use = (await self.store.count_by_key()).get(key_id, 0)
        if in_use:
            raise Conflict(f"key {key_id} still seals {in_use} token(s); run 'inboxlens keys rewrap' first")
        try:
            info = self.keyset.revoke(key_id)
        except KeysetError as e:
            raise Conflict(str(e)) from None
        log.info("revoked key %d; its private key is destroyed", key_id)
        return info.as_dict()

    # -- helpers ---------------------------------------------------------------

    def _lock(self, account_id: str) -> asyncio.Lock:
        lock = self._locks.get(account_id)
        if lock is None:
            lock = self._locks[account_id] = asyncio.Lock()
        return lock

    def _fresh(self, account_id: str) -> tuple[str, float] | None:
        cached = self._cache.get(account_id)
        if cached is not None and cached[1] - self.clock() > self.margin:
            return cached
        return None

    def _open(self, record: TokenRecord) -> str:
        key = self.keyset.private_key(record.key_id)
        try:
            if key is None or sealed.key_id_of(record.sealed) != record.key_id:
                raise SealedTokenError()
            return sealed.open_sealed(key, record.sealed, record.account_id, record.provider)
        except SealedTokenError:
            raise CannotOpen("the stored token cannot be opened") from None

    def _check_opens(self, blob: bytes, account_id: str, provider: str) -> int:
        try:
            key_id = sealed.key_id_of(blob)
        except SealedTokenError:
            raise CannotOpen("the sealed token cannot be opened") from None
        self._open(TokenRecord(account_id, provider, key_id, blob, OK, 0.0))
        return key_id

    async def _refresh(self, account_id: str) -> tuple[str, float]:
        record = await self.store.get(account_id)
        if record is None:
            raise UnknownAccount("no token is stored for this account")
        if record.status == REAUTH_REQUIRED:
            raise ReauthRequired("the account must be reconnected")
        try:
            refresh_token = self._open(record)
        except CannotOpen:
            await self._note_failure(account_id, "cannot_open")
            raise
        self.refreshes += 1
        try:
            grant = await self.refresher.refresh(record.provider, refresh_token)
        except ReauthRequired:
            await self.store.set_status(account_id, REAUTH_REQUIRED)
            await self.store.add_event(account_id, "reauth_required", "provider answered invalid_grant")
            self._cache.pop(account_id, None)
            log.warning("account %s needs reconnecting: the provider refused its refresh token", account_id)
            raise
        except (ProviderUnavailable, ProviderRejected) as e:
            await self._note_failure(account_id, e.code)
            raise
        if grant.refresh_token is not None:
            await self._store_rotated(record, grant.refresh_token)
        if account_id in self._failing:
            self._failing.discard(account_id)
            await self.store.add_event(account_id, "refresh_recovered", "")
        self._cache[account_id] = (grant.access_token, grant.expires_at)
        return grant.access_token, grant.expires_at

    async def _note_failure(self, account_id: str, code: str) -> None:
        """One event when an account starts failing; ``refresh_recovered`` closes it."""
        if account_id not in self._failing:
            self._failing.add(account_id)
            await self.store.add_event(account_id, "refresh_failed", code)

    async def _store_rotated(self, record: TokenRecord, refresh_token: str) -> None:
        # The old token is already spent at the provider: the new one must be kept, whatever else.
        primary = self.keyset.primary
        blob = sealed.seal(primary.public_key, primary.id, record.account_id, record.provider, refresh_token)
        if not await self.store.replace(record.account_id, record.sealed, primary.id, blob):
            await self.store.put(record.account_id, record.provider, primary.id, blob)

    # -- connections -----------------------------------------------------------

    async def dispatch(self, peer: Peer, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one decoded frame. Raises BadRequest or PermissionError to close the connection."""
        role = self.callers.role_of(peer)
        op, args = protocol.parse_request(message)
        if not permitted(role, op):
            raise PermissionError(f"{op} refused for pid {peer.pid} uid {peer.uid} (role {role or 'none'})")
        try:
            return protocol.ok(await self.handlers[op](**args))
        except VaultRefused as e:
            return protocol.error(e.code, e.message)


class Listener:
    """Accepts connections on the vault socket, one task each, within the configured bounds."""

    def __init__(self, vault: Vault, *, max_frame: int, frame_timeout: float, idle_timeout: float,
                 max_connections: int) -> None:
        self.vault = vault
        self.max_frame = max_frame
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.max_connections:
            log.warning("refusing a connection: %d already open", self.connections)
            writer.close()
            return
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.connections -= 1
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        while True:
            peer = peer_of(sock)
            try:
                message = await protocol.read_frame(reader, self.max_frame, self.idle_timeout, self.frame_timeout)
                if message is None:
                    return
                answer = await self.vault.dispatch(peer, message)
            except ProtocolError as e:
                log.warning("closing connection from pid %d uid %d: %s", peer.pid, peer.uid, e)
                return
            except BadRequest as e:
                log.warning("bad request from pid %d uid %d: %s", peer.pid, peer.uid, e.message)
                await self._send(writer, protocol.error(e.code, e.message))
                return
            except PermissionError as e:
                log.warning("unpermitted request: %s", e)
                await self._send(writer, protocol.error("not_permitted", "operation not permitted for this caller"))
                return
            except Exception as e:  # noqa: BLE001 - one bad request must not take the vault down
                # The type only: an exception's text could quote data we were handling.
                log.error("internal error answering pid %d: %s", peer.pid, type(e).__name__)
                await self._send(writer, protocol.error("internal", "internal error; see the vault's log"))
                return
            await self._send(writer, answer)

    async def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(protocol.encode(message, self.max_frame))
        if writer.transport.get_write_buffer_size():  # drain only a client that reads slowly
            async with asyncio.timeout(self.frame_timeout):
                await writer.drain()
