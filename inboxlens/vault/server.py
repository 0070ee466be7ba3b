"""The vault's request handlers (``answer_<op>``) and its connection loop.

A peer without a role (``ops.Callers``), or whose role is at its connection limit, is
closed at accept. Per frame, the role is checked against the operation's row first: an
unknown or unpermitted request gets one opaque answer, whatever its arguments, and is
closed, as is a malformed frame. A token that cannot be opened answers ``cannot_open``,
whatever the cause. The vault answers within the caller's timeout (a refresh it started
goes on, and is kept). Nothing here logs or returns a refresh token, a key or a client
secret; ``answer_get`` returns an access token, ``answer_secret`` a CardDAV password, to harvest only.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
import math
import time
import weakref
from typing import Any, Awaitable, Callable

from inboxlens.config.vault import VaultConfig
from inboxlens.errors import (BadRequest, CannotOpen, Conflict, KeysetError, ProtocolError, ProviderRejected,
                              ProviderUnavailable, ReauthRequired, SealedTokenError, UnknownAccount, VaultRefused)
from inboxlens.vault import ops, protocol, sealed
from inboxlens.vault.ops import Callers, Peer, peer_of
from inboxlens.vault.keyset import Keyset
from inboxlens.vault.refresh import Refresher
from inboxlens.vault.store import REAUTH_REQUIRED, TokenRecord, TokenStore

log = logging.getLogger("inboxlens.vault")
STATUS_EVENTS = 50
REWRAP_CHUNK = 100  # tokens per transaction: one synced write each, not one per token
REPLY_MARGIN = 0.25  # seconds kept back from a caller's timeout for the answer to reach it
STORE_RESERVE = 1.0  # of a forget's time, kept for deleting the token after revoking it
REFUSAL_LOG_SECONDS = 10.0
# The time (loop clock) by which the request being handled must be answered.
DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("deadline", default=math.inf)


class Vault:
    def __init__(self, keyset: Keyset, store: TokenStore, refresher: Refresher, callers: Callers, *,
                 margin: float) -> None:
        self.keyset = keyset
        self.store = store
        self.refresher = refresher
        self.callers = callers
        self.margin = margin
        self._cache: dict[str, tuple[str, float]] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._refreshing: dict[str, asyncio.Task[tuple[str, float]]] = {}
        self._failing: set[str] = set()
        self.refreshes = 0
        self.handlers: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
            op: getattr(self, f"answer_{op}") for op in ops.OPS}

    async def answer_public_key(self) -> dict[str, Any]:
        primary = self.keyset.primary
        return {"key_id": primary.id, "public_key": primary.public_key.encode().hex()}

    async def answer_set(self, account_id: str, provider: str, sealed: bytes) -> dict[str, Any]:
        async with self._lock(account_id):
            key_id = self._check_opens(sealed, account_id, provider)
            await self.store.put(account_id, provider, key_id, sealed, event=f"token_set: sealed under key {key_id}")
            self._forget_cached(account_id)
        log.info("stored token for account %s (%s)", account_id, provider)
        return {"account_id": account_id, "key_id": key_id}

    async def answer_forget(self, account_id: str, revoke: bool) -> dict[str, Any]:
        """Delete an account's token; with ``revoke``, first revoke the grant at the provider.

        The revocation gets the caller's time less STORE_RESERVE, so the answer (web shows it
        to the user) says what happened: cut short, it is ``failed``, and the token is deleted.
        """
        async with self._lock(account_id):
            record = await self.store.get(account_id)
            revoked = "no_token" if record is None else "not_requested"
            if record is not None and revoke:
                revoked = await self._revoke(record)
            forgotten = await self.store.delete(account_id)
            self._forget_cached(account_id)
            if forgotten:
                await self.store.add_event(account_id, "token_forgotten", f"revocation: {revoked}")
        log.info("forgot account %s (revocation: %s)", account_id, revoked)
        return {"forgotten": forgotten, "revocation": revoked}

    async def answer_token_state(self, account_id: str) -> dict[str, Any]:
        record = await self.store.get(account_id)
        return {"state": "missing" if record is None else record.status}

    async def answer_get(self, account_id: str, rejected: str) -> dict[str, Any]:
        """An access token for harvest. ``rejected``: one the mail server just refused, if any.

        Only that very token leaves the cache, so many callers reporting the same refusal
        wait for one refresh.
        """
        current = self._cache.get(account_id)
        if rejected and current is not None and hmac.compare_digest(current[0], rejected):
            del self._cache[account_id]
        cached = self._fresh(account_id) or await self._refreshed(account_id)
        return {"access_token": cached[0], "expires_at": cached[1]}

    async def answer_secret(self, account_id: str) -> dict[str, Any]:
        """The CardDAV password web stored as book:<digits>; anything else answers as a missing entry."""
        record = await self.store.get(account_id) if account_id[:5] == "book:" and account_id[5:].isdigit() else None
        if record is None or record.provider != "carddav":
            raise UnknownAccount("no token is stored for this account")
        return {"secret": self._open(record)}

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
        """Re-seal up to ``limit`` tokens under the primary key, a transaction per REWRAP_CHUNK.

        Each swap is a compare-and-set: a token a refresh changed meanwhile (sealing it
        under the primary anyway) is left as it is.
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

    def _lock(self, account_id: str) -> asyncio.Lock:
        return self._locks.setdefault(account_id, asyncio.Lock())

    def _forget_cached(self, account_id: str) -> None:
        self._cache.pop(account_id, None)
        self._failing.discard(account_id)

    def _fresh(self, account_id: str) -> tuple[str, float] | None:
        cached = self._cache.get(account_id)
        return cached if cached is not None and cached[1] - time.time() > self.margin else None

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
        self._open(TokenRecord(account_id, provider, key_id, blob, "", 0.0))
        return key_id

    async def _revoke(self, record: TokenRecord) -> str:
        left = DEADLINE.get() - asyncio.get_running_loop().time() - STORE_RESERVE
        try:
            async with asyncio.timeout(max(left, 0.0)):
                return await self.refresher.revoke(record.provider, self._open(record))
        except CannotOpen:
            return "failed"
        except TimeoutError:
            log.warning("revocation for account %s cut short by its caller's deadline", record.account_id)
            return "failed"

    async def _refreshed(self, account_id: str) -> tuple[str, float]:
        """Single flight: one refresh task per account; callers wait for it until their deadline.

        The task is shielded: cut off half-way, it could lose a rotated refresh token the
        provider already spent the old one for. It ends within its own bounds (attempts x
        timeout + backoff) and leaves its token in the cache.
        """
        task = self._refreshing.get(account_id)
        if task is None:
            task = self._refreshing[account_id] = asyncio.create_task(self._refresh_locked(account_id))
            task.add_done_callback(lambda t: self._refresh_done(account_id, t))
        try:
            async with asyncio.timeout_at(DEADLINE.get()):  # no wait_for: it costs a task per call
                return await asyncio.shield(task)
        except TimeoutError:
            raise ProviderUnavailable("the provider is slow; the refresh goes on, ask again shortly") from None

    def _refresh_done(self, account_id: str, task: asyncio.Task[tuple[str, float]]) -> None:
        if self._refreshing.get(account_id) is task:
            del self._refreshing[account_id]
        if not task.cancelled():
            task.exception()  # answered to whoever waited; marking it retrieved keeps asyncio quiet

    async def refreshes_in_flight(self) -> None:
        """Wait for running refreshes, so a rotated refresh token is stored before the vault exits."""
        if self._refreshing:
            await asyncio.wait(list(self._refreshing.values()))

    async def _refresh_locked(self, account_id: str) -> tuple[str, float]:
        # One refresh per account in this process, then across every vault sharing the store
        # (a replayed refresh token kills the grant); the record is read only after both.
        async with self._lock(account_id), self.store.refresh_lock(account_id):
            return self._fresh(account_id) or await self._refresh(account_id)

    async def _refresh(self, account_id: str) -> tuple[str, float]:
        record = await self.store.get(account_id)
        if record is None:
            raise UnknownAccount("no token is stored for this account")
        if record.status == REAUTH_REQUIRED:
            raise ReauthRequired("the account must be reconnected")
        try:
            refresh_token = self._open(record)
            self.refreshes += 1
            grant = await self.refresher.refresh(record.provider, refresh_token, self._keeper(record))
        except ReauthRequired:
            await self.store.set_status(account_id, REAUTH_REQUIRED)
            await self.store.add_event(account_id, "reauth_required", "provider answered invalid_grant")
            self._cache.pop(account_id, None)
            log.warning("account %s needs reconnecting: the provider refused its refresh token", account_id)
            raise
        except (CannotOpen, ProviderUnavailable, ProviderRejected) as e:
            if account_id not in self._failing:  # one event when an account starts failing
                self._failing.add(account_id)
                await self.store.add_event(account_id, "refresh_failed", e.code)
            raise
        if account_id in self._failing:
            self._failing.discard(account_id)
            await self.store.add_event(account_id, "refresh_recovered", "")
        self._cache[account_id] = (grant.access_token, grant.expires_at)
        return grant.access_token, grant.expires_at

    def _keeper(self, record: TokenRecord) -> Callable[[str], Awaitable[None]]:
        """Seal and store a rotated refresh token (compare-and-set on the blob it replaces)."""
        stored = [record.sealed]

        async def keep(refresh_token: str) -> None:
            primary = self.keyset.primary
            blob = sealed.seal(primary.public_key, primary.id, record.account_id, record.provider, refresh_token)
            if not await self.store.replace(record.account_id, stored[0], primary.id, blob):
                await self.store.put(record.account_id, record.provider, primary.id, blob)
            stored[0] = blob
        return keep

    async def dispatch(self, peer: Peer, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one decoded frame; PermissionError or BadRequest close the connection.

        Permission comes first: nothing of an unpermitted request (its args, its shape)
        is looked at, so every such request gets the same answer.
        """
        role, op = self.callers.role_of(peer), message.get("op")
        if not isinstance(op, str) or not ops.permitted(role, op):
            name = op if isinstance(op, str) and op in ops.OPS else "an unknown operation"  # never echo raw input
            raise PermissionError(f"{name} refused for pid {peer.pid} uid {peer.uid} (role {role or 'none'})")
        timeout = protocol.check_envelope(message)
        args = ops.check_args(op, message["args"])
        DEADLINE.set(asyncio.get_running_loop().time() + max(timeout - REPLY_MARGIN, timeout / 2))
        try:
            return protocol.ok(message["id"], await self.handlers[op](**args))
        except VaultRefused as e:
            return protocol.error(message["id"], e.code, e.message)


class Listener:
    """Accepts connections on the vault socket, one task each, within per-role bounds."""

    def __init__(self, vault: Vault, config: VaultConfig) -> None:
        self.vault = vault
        self.config = config
        self.limits = config.connection_limits
        self.open = dict.fromkeys(self.limits, 0)
        self._idle: set[asyncio.Task[Any]] = set()  # waiting for a frame: closed at once on stop
        self._refusals_logged_at = -math.inf
        self._refusals_skipped = 0
        self.stopping = False

    def stop_idle(self) -> None:
        """Stopping: close connections waiting for a request; busy ones close after their answer."""
        self.stopping = True
        for task in list(self._idle):
            task.cancel()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer.get_extra_info("socket"))
        role = self.vault.callers.role_of(peer)
        if role is None or self.open[role] >= self.limits[role]:
            self._log_refusal(peer, "no role" if role is None else f"{role} already has {self.open[role]} connections")
            writer.close()
            return
        self.open[role] += 1
        try:
            await self._serve(peer, reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the caller went away, or stopped reading its answer: nothing more to do for it
        finally:
            self.open[role] -= 1
            writer.close()

    def _log_refusal(self, peer: Peer, why: str) -> None:
        """At most one line per REFUSAL_LOG_SECONDS; the next says how many were left out."""
        now = time.monotonic()
        if now < self._refusals_logged_at + REFUSAL_LOG_SECONDS:
            self._refusals_skipped += 1
            return
        more = f" ({self._refusals_skipped} more like it not logged)" if self._refusals_skipped else ""
        log.warning("refused a connection from pid %d uid %d: %s%s", peer.pid, peer.uid, why, more)
        self._refusals_logged_at, self._refusals_skipped = now, 0

    async def _serve(self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        c = self.config
        while not self.stopping:
            self._idle.add(task)
            try:
                message = await protocol.read_frame(reader, c.max_frame_bytes, c.idle_timeout_seconds,
                                                    c.frame_timeout_seconds)
            except ProtocolError as e:
                log.warning("closing connection from pid %d uid %d: %s", peer.pid, peer.uid, e)
                return
            finally:
                self._idle.discard(task)
            if message is None:
                return
            answer, keep_open = await self._answer(peer, message)
            writer.write(protocol.encode(answer, c.max_frame_bytes))
            if writer.transport.get_write_buffer_size():  # drain only a client that reads slowly
                async with asyncio.timeout(c.frame_timeout_seconds):
                    await writer.drain()
            if not keep_open:
                return

    async def _answer(self, peer: Peer, message: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The answer to one frame, and whether the connection may stay open after it."""
        request_id = protocol.request_id(message)
        try:
            return await self.vault.dispatch(peer, message), True
        except PermissionError as e:
            log.warning("unpermitted request: %s", e)
            return protocol.error(request_id, "not_permitted", "operation not permitted for this caller"), False
        except BadRequest as e:
            log.warning("bad request from pid %d uid %d: %s", peer.pid, peer.uid, e.message)
            return protocol.error(request_id, e.code, e.message), False
        except Exception as e:  # noqa: BLE001 - one bad request must not take the vault down
            # The type only: an exception's text could quote data we were handling.
            log.error("internal error answering pid %d: %s", peer.pid, type(e).__name__)
            return protocol.error(request_id, "internal", "internal error; see the vault's log"), False
