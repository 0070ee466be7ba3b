"""The vault's wire protocol, shared by the vault and its client.

A frame is a 4-byte big-endian length (over the limit: refused before it is read) and
one UTF-8 JSON object. A request is exactly ``{"id": n, "op": <name>, "args": {...},
"timeout": seconds}``: the answer echoes ``id``, so a client never takes one call's answer
for another's; the vault answers within ``timeout``; ``ops`` checks the args. An answer
is ``{"id": n, "ok": true, "result": {...}}`` or ``{"id": n, "ok": false, "error": <code>,
"message": <text>}``, the codes those of ``errors``.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from inboxlens.errors import BadRequest, ProtocolError

LENGTH = struct.Struct(">I")
DEFAULT_MAX_FRAME = 65536
MAX_ID = 2**53  # JSON numbers stay exact up to here in any reader
MAX_TIMEOUT = 600.0
_FIELDS = frozenset({"id", "op", "args", "timeout"})


def request(request_id: int, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    return {"id": request_id, "op": op, "args": args, "timeout": timeout}


def request_id(message: dict[str, Any]) -> int | None:
    """The id to echo: the request's, if it is one, else None (the answer then names no call)."""
    value = message.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID else None


def check_envelope(message: dict[str, Any]) -> float:
    """Check a request's fields (not its args, which ``ops`` checks); return its timeout."""
    timeout = message.get("timeout")
    if set(message) != _FIELDS or request_id(message) is None:
        raise BadRequest('a request is exactly {"id": n, "op": ..., "args": {...}, "timeout": seconds}')
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:
        raise BadRequest(f"timeout: seconds, more than 0 and at most {MAX_TIMEOUT:g}")
    return float(timeout)


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
    """Read one frame; None on a clean end of stream between frames, or an idle timeout.

    ``frame_timeout`` bounds a begun frame: a slow sender ties up its own connection, briefly.
    """
    loop = asyncio.get_running_loop()
    first = b""
    try:
        # One timeout (wait_for would make a task per call): idle, then, once a byte came, the frame's.
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


def ok(request_id: int | None, result: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error(request_id: int | None, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": code, "message": message}
