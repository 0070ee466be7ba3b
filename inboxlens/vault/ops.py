"""Every operation the vault answers, in one table (OpenSSH's ``mon_dispatch`` with ``MON_PERMIT``).

A row names who may call the operation, how each argument is checked (strictly: a
missing, extra or ill-typed field is an error, Postfix's ``ATTR_FLAG_STRICT``), and
whether a client may send it again after a lost connection. The vault's handler is
``Vault.answer_<op>`` and the client's method ``VaultClient.<op>``; a test keeps the
three in step. Adding an operation is one row here, one handler, one client method.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Callable

from inboxlens.errors import BadRequest

WEB, HARVEST, ADMIN = "web", "harvest", "admin"
ROLES = (WEB, HARVEST, ADMIN)
MAX_SEALED_BYTES = 8192
MAX_REWRAP_BATCH = 1000

Validator = Callable[[Any], Any]
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
_PROVIDER = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


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


def bounded_int(low: int, high: int, name: str) -> Validator:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise BadRequest(f"{name}: a whole number from {low} to {high}")
        return value
    return check


@dataclass(frozen=True)
class Op:
    roles: frozenset[str]
    args: dict[str, Validator]
    # Safe to send again when the connection broke before the answer came (same effect twice).
    retry: bool = True


OPS: dict[str, Op] = {
    "public_key": Op(frozenset({WEB, HARVEST, ADMIN}), {}),
    "set": Op(frozenset({WEB}), {"account_id": account_id, "provider": provider, "sealed": sealed}),
    # Not retried: a second forget would answer "no_token" and hide what the first one did.
    "forget": Op(frozenset({WEB}), {"account_id": account_id, "revoke": boolean}, retry=False),
    "token_state": Op(frozenset({WEB}), {"account_id": account_id}),
    "get": Op(frozenset({HARVEST}), {"account_id": account_id, "rejected": rejected_token}),
    "status": Op(frozenset({ADMIN}), {}),
    "rotate": Op(frozenset({ADMIN}), {}, retry=False),
    "rewrap": Op(frozenset({ADMIN}), {"limit": bounded_int(1, MAX_REWRAP_BATCH, "limit")}),
    "revoke": Op(frozenset({ADMIN}), {"key_id": bounded_int(1, 2**31 - 1, "key_id")}, retry=False),
}


def permitted(role: str | None, op: Any) -> bool:
    """Whether ``role`` may call ``op``; an unknown op, or a value that is no op name at all, is not."""
    row = OPS.get(op) if isinstance(op, str) else None
    return row is not None and role in row.roles


def check_args(op: str, args: Any) -> dict[str, Any]:
    """The arguments of a permitted operation, checked and converted; BadRequest otherwise."""
    fields = OPS[op].args
    if not isinstance(args, dict) or set(args) != set(fields):
        raise BadRequest(f"{op} takes exactly: {', '.join(sorted(fields)) or 'no arguments'}")
    return {name: check(args[name]) for name, check in fields.items()}
