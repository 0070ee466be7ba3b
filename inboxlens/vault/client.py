"""The vault's client, for web, harvest and the admin CLI.

Methods carry the vault's handler names (``answer_get`` / ``get``), so callers read
like local calls. A small pool of connections (``pool_size``) serves concurrent
callers, one request per connection at a time. Every request carries an id, which
the answer must echo, and the time left of the call's timeout, which the vault
answers within. A connection is closed on any failure after its request was
written, cancellation included, so no answer is ever left for the next call to
read. A pooled connection found broken is replaced, and a call whose ``ops`` row
allows it is sent once more; otherwise the call fails with ``VaultUnavailable``.
An error answer raises the matching ``VaultRefused`` subclass.

Each client counts its own calls by operation and answer (``outcomes``), and the ``get``
answers whose token it had not had yet (``refreshes``): the vault's answer does not say
whether it refreshed, but a refreshed token has a new expiry. Web and harvest export
these (``inboxlens/observability.py``); no token, account or address is in them.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.public import PublicKey

from inboxlens.errors import ProtocolError, VaultError, VaultRefused
from inboxlens.service_errors import VAULT_ERRORS, VaultUnavailable
from inboxlens.vault import ops, protocol
from inboxlens.vault.sealed import seal as seal_token

DEFAULT_TIMEOUT = 15.0
DEFAULT_POOL_SIZE = 8  # harvest runs up to 8 syncs at once (harvest.max_connections)
# These may close the connection on the vault's side; do not reuse it after them.
_CLOSING = frozenset({"bad_request", "not_permitted", "internal"})
MAX_EXPIRIES = 100_000  # accounts whose last token expiry a client remembers (a float each)


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: float

    def __repr__(self) -> str:
        return f"AccessToken(expires_at={self.expires_at:.0f})"


@dataclass(frozen=True)
class SealingKey:
    key_id: int
    public_key: PublicKey

    def seal(self, account_id: str, provider: str, refresh_token: str) -> bytes:
        return seal_token(self.public_key, self.key_id, account_id, provider, refresh_token)


class VaultClient:
    def __init__(self, path: Path, *, timeout: float = DEFAULT_TIMEOUT,
                 max_frame: int = protocol.DEFAULT_MAX_FRAME, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.path = path
        self.timeout = timeout
        self.max_frame = max_frame
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._ids = itertools.count(1)
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (op, ok | error code | unavailable | ...)
        self.refreshes = 0
        self._expiries: dict[str, float] = {}

    async def __aenter__(self) -> "VaultClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- operations ----------------------------------------------------------

    async def public_key(self) -> SealingKey:
        result = await self.call("public_key")
        return SealingKey(int(result["key_id"]), PublicKey(bytes.fromhex(result["public_key"])))

    async def set(self, account_id: str, provider: str, sealed: bytes) -> dict[str, Any]:
        return await self.call("set", account_id=account_id, provider=provider,
                               sealed=base64.b64encode(sealed).decode())

    async def forget(self, account_id: str, revoke: bool = False) -> dict[str, Any]:
        """``{"forgotten": bool, "revocation": revoked|not_supported|failed|not_requested|no_token}``."""
        return await self.call("forget", account_id=account_id, revoke=revoke)

    async def token_state(self, account_id: str) -> str:
        """``ok``, ``reauth_required`` or ``missing``."""
        return str((await self.call("token_state", account_id=account_id))["state"])

    async def get(self, account_id: str, rejected: str = "") -> AccessToken:
        """An access token; pass ``rejected`` (the token a server just refused) to get a new one."""
        result = await self.call("get", account_id=account_id, rejected=rejected)
        token = AccessToken(str(result["access_token"]), float(result["expires_at"]))
        if self._expiries.get(account_id) != token.expires_at:
            self.refreshes += 1
            if len(self._expiries) >= MAX_EXPIRIES:
                self._expiries.clear()
            self._expiries[account_id] = token.expires_at
        return token

    async def secret(self, account_id: str) -> str:
        """The CardDAV password web stored under ``book:<id>``; harvest only."""
        return str((await self.call("secret", account_id=account_id))["secret"])

    async def status(self) -> dict[str, Any]:
        return await self.call("status")

    async def rotate(self) -> dict[str, Any]:
        return await self.call("rotate")

    async def rewrap(self, limit: int = 100) -> dict[str, Any]:
        return await self.call("rewrap", limit=limit)

    async def revoke(self, key_id: int) -> dict[str, Any]:
        return await self.call("revoke", key_id=key_id)

    # -- transport -------------------------------------------------------------

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        name = op if op in ops.OPS else "unknown"  # a bounded label, whatever a caller passes
        try:
            result = await self._call(op, args)
        except VaultError as e:
            self.outcomes[name, _outcome(e)] += 1
            raise
        self.outcomes[name, "ok"] += 1
        return result

    async def _call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        row = ops.OPS.get(op)
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                async with self._slots:
                    answer = await self._round_trip(op, args, deadline, retry=row is not None and row.retry)
        except TimeoutError:
            raise VaultUnavailable(f"the vault at {self.path} did not answer within {self.timeout:g} s") from None
        result = answer.get("result")
        if answer.get("ok") is True and isinstance(result, dict):
            return result
        code, message = str(answer.get("error", "")), str(answer.get("message", ""))
        raise VAULT_ERRORS.get(code, VaultRefused)(message or code)

    async def _round_trip(self, op: str, args: dict[str, Any], deadline: float, retry: bool) -> dict[str, Any]:
        connection, reused = self._pooled() or (await self._connect(), False)
        request_id = next(self._ids)
        left = max(deadline - asyncio.get_running_loop().time(), 0.001)  # what the vault has to answer in
        frame = protocol.encode(protocol.request(request_id, op, args, round(left, 3)), self.max_frame)
        try:
            answer = await connection.exchange(frame, request_id, self.max_frame)
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            connection.close()
            if retry and reused:  # the vault restarted, or dropped an idle connection: one fresh try
                return await self._round_trip(op, args, deadline, retry=False)
            raise VaultUnavailable(f"connection to the vault at {self.path} lost ({type(e).__name__})") from None
        except BaseException:
            connection.close()  # cancelled or failed mid-call: its answer must never reach another call
            raise
        if answer.get("ok") is True or answer.get("error") not in _CLOSING:
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    def _pooled(self) -> tuple["_Connection", bool] | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable():
                return connection, True
            connection.close()
        return None

    async def _connect(self) -> "_Connection":
        try:
            return _Connection(*await asyncio.open_unix_connection(self.path))
        except FileNotFoundError:
            raise VaultUnavailable(f"no vault socket at {self.path}: is 'inboxlens serve' running?") from None
        except PermissionError:
            raise VaultUnavailable(f"no permission to connect to {self.path}") from None
        except OSError as e:
            raise VaultUnavailable(f"cannot connect to the vault at {self.path} ({e.strerror})") from None

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            await connection.closed()


def _outcome(error: VaultError) -> str:
    if isinstance(error, VaultRefused):
        return error.code if error.code in VAULT_ERRORS else "error"
    return "protocol_error" if isinstance(error, ProtocolError) else "unavailable"


class _Connection:
    """One connection to the vault, used by one call at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        """Still open: the vault closes idle connections, and a call must not be written into one."""
        return not self.writer.is_closing() and not self.reader.at_eof()

    async def exchange(self, frame: bytes, request_id: int, max_frame: int) -> dict[str, Any]:
        self.writer.write(frame)
        await self.writer.drain()
        header = await self.reader.readexactly(protocol.LENGTH.size)
        answer = protocol.decode_body(await self.reader.readexactly(protocol.check_length(header, max_frame)))
        if answer.get("id") != request_id:
            raise ProtocolError(f"the vault answered request {answer.get('id')!r}, not {request_id}")
        return answer

    def close(self) -> None:
        self.writer.close()

    async def closed(self) -> None:
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

