"""The vault's wire protocol, shared by the vault and its client.

A frame is a 4-byte big-endian length and that many bytes of one UTF-8 JSON
object; a frame larger than the limit is refused before it is read. A request is
exactly ``{"op": <name>, "args": {...}}`` and each operation's arguments are
checked strictly: a missing, extra or ill-typed field is an error (Postfix's
``ATTR_FLAG_STRICT``). An answer is ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": <code>, "message": <text>}``; codes are in ``errors``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import struct
from typing import Any, Callable

from inboxlens.errors import BadRequest, ProtocolError

LENGTH = struct.Struct(">I")
DEFAULT_MAX_FRAME = 65536
MAX_SEALED_BYTES = 8192
MAX_REWRAP_BATCH = 1000

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
_PROVIDER = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

Validator = Callable[[Any], Any]


def account_id(value: Any) -> str:
    if not isinstance(value, str) or not _ACCOUNT_ID.fullmatch(value):
        raise BadRequest("account_id: 1-128 characters of letters, digits and ._:@+-")
    return value


def provider(value: Any) -> str:
    if not isinstance(value, str) or not _PROVIDER.fullmatch(value):
        raise BadRequest("provider: 1-32 lower-case letters, digits, '_' or '-'")
    return value


def sealed(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_SEALED_BYTES * 4 // 3 + 4:
        raise BadRequest(f"sealed: base64 of at most {MAX_SEALED_BYTES} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("sealed: not valid base64") from None


def rejected_token(value: Any) -> str:
    """An access token the server refused ("" for none): the vault drops it from its cache."""
    if not isinstance(value, str) or len(value) > 8192:
        raise BadRequest("rejected: a string of at most 8192 characters")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadRequest("expected true or false")
    return value


def _bounded_int(low: int, high: int, name: str) -> Validator:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise BadRequest(f"{name}: a whole number from {low} to {high}")
        return value
    return check


# Each operation's argument names and how each is checked.
REQUESTS: dict[str, dict[str, Validator]] = {
    "public_key": {},
    "set": {"account_id": account_id, "provider": provider, "sealed": sealed},
    "forget": {"account_id": account_id, "revoke": boolean},
    "token_state": {"account_id": account_id},
    "get": {"account_id": account_id, "rejected": rejected_token},
    "status": {},
    "rotate": {},
    "rewrap": {"limit": _bounded_int(1, MAX_REWRAP_BATCH, "limit")},
    "revoke": {"key_id": _bounded_int(1, 2**31 - 1, "key_id")},
}


def parse_request(message: Any) -> tuple[str, dict[str, Any]]:
    """Check a decoded frame is a well-formed request; return its op and checked args."""
    if not isinstance(message, dict) or set(message) != {"op", "args"}:
        raise BadRequest("a request is exactly {\"op\": ..., \"args\": {...}}")
    op, args = message["op"], message["args"]
    if not isinstance(op, str) or op not in REQUESTS:
        raise BadRequest("unknown operation")
    fields = REQUESTS[op]
    if not isinstance(args, dict) or set(args) != set(fields):
        raise BadRequest(f"{op} takes exactly: {', '.join(sorted(fields)) or 'no arguments'}")
    return op, {name: check(args[name]) for name, check in fields.items()}


def encode(message: dict[str, Any], max_bytes: int = DEFAULT_MAX_FRAME) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > max_bytes:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds the {max_bytes}-byte limit")
    return LENGTH.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object in a frame's body; ProtocolError for anything else."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("frame is not UTF-8 JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def check_length(header: bytes, max_bytes: int) -> int:
    (length,) = LENGTH.unpack(header)
    if not 0 < length <= max_bytes:
        raise ProtocolError(f"frame length {length} is outside 1..{max_bytes}")
    return int(length)


async def read_frame(reader: asyncio.StreamReader, max_bytes: int,
                     idle_timeout: float, frame_timeout: float) -> dict[str, Any] | None:
    """Read one frame; None on a clean end of stream between frames.

    ``idle_timeout`` bounds the wait for a frame to begin, ``frame_timeout`` the time a
    begun frame may take, so a slow sender ties up only its own connection, briefly.
    """
    loop = asyncio.get_running_loop()
    first = b""
    try:
        # One timeout for the whole frame (cheaper than wait_for, which makes a task per call):
        # first the idle wait, then, once a byte has come, the frame's own deadline.
        async with asyncio.timeout(idle_timeout) as deadline:
            first = await reader.read(1)
            if not first:
                return None
            deadline.reschedule(loop.time() + frame_timeout)
            header = first + await reader.readexactly(LENGTH.size - 1)
            body = await reader.readexactly(check_length(header, max_bytes))
    except asyncio.IncompleteReadError:
        raise ProtocolError("truncated frame") from None
    except TimeoutError:
        if not first:
            return None  # an idle client: close quietly, it reconnects when it needs us
        raise ProtocolError("frame timed out") from None
    return decode_body(body)


def ok(result: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message}
