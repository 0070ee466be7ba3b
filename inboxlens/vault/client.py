"""The vault's client, for web, harvest and the admin CLI.

Methods carry the vault's handler names (``answer_get`` / ``get``), so callers read
like local calls. One connection, one request at a time (a lock orders
concurrent callers; open several clients for parallelism). Every call has a
timeout; a broken connection is reopened once before the call fails with
``VaultUnavailable``. An error answer raises the matching ``VaultRefused``
subclass; after a refusal that closes the connection the next call reconnects.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.public import PublicKey

from inboxlens.errors import VAULT_ERRORS, ProtocolError, VaultRefused, VaultUnavailable
from inboxlens.vault import protocol
from inboxlens.vault.sealed import seal as seal_token

DEFAULT_TIMEOUT = 15.0
# These may close the connection on the vault's side; do not reuse it after them.
_CLOSING = frozenset({"bad_request", "not_permitted", "internal"})


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
                 max_frame: int = protocol.DEFAULT_MAX_FRAME) -> None:
        self.path = path
        self.timeout = timeout
        self.max_frame = max_frame
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

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
        return AccessToken(str(result["access_token"]), float(result["expires_at"]))

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
        frame = protocol.encode({"op": op, "args": args}, self.max_frame)
        async with self._lock:
            answer = await self._exchange(frame, retry=op != "rotate")
        result = answer.get("result")
        if answer.get("ok") is True and isinstance(result, dict):
            return result
        code, message = str(answer.get("error", "")), str(answer.get("message", ""))
        if code in _CLOSING:
            await self.close()
        raise VAULT_ERRORS.get(code, VaultRefused)(message or code)

    async def _exchange(self, frame: bytes, retry: bool) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._connection()
                writer.write(frame)
                await writer.drain()
                header = await reader.readexactly(protocol.LENGTH.size)
                body = await reader.readexactly(protocol.check_length(header, self.max_frame))
            return protocol.decode_body(body)
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            await self.close()
            if retry:  # the vault restarted or closed an idle connection: one fresh try
                return await self._exchange(frame, retry=False)
            raise VaultUnavailable(f"connection to the vault at {self.path} lost ({type(e).__name__})") from None
        except TimeoutError:
            await self.close()
            raise VaultUnavailable(f"the vault at {self.path} did not answer within {self.timeout:g} s") from None
        except ProtocolError:
            await self.close()
            raise

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(self.path)
            except FileNotFoundError:
                raise VaultUnavailable(f"no vault socket at {self.path}: is 'inboxlens serve' running?") from None
            except PermissionError:
                raise VaultUnavailable(f"no permission to connect to {self.path}") from None
            except OSError as e:
                raise VaultUnavailable(f"cannot connect to the vault at {self.path} ({e.strerror})") from None
        return self._reader, self._writer

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
