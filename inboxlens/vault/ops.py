"""Who may call what: the vault's operations in one table, and each caller's role by SO_PEERCRED.

The table is OpenSSH's ``mon_dispatch`` with ``MON_PERMIT``. A row names the roles that
may call the operation, how each argument is checked (strictly: a missing, extra or
ill-typed field is an error, Postfix's ``ATTR_FLAG_STRICT``) and whether a client may send
it again after a lost connection. The handler is ``Vault.answer_<op>``, the client's
method ``VaultClient.<op>``; a test keeps the three in step.

Started as root, the supervisor runs web, harvest and the vault under their own uids,
and the uid names the role. Started by an ordinary user, all children share its uid;
the supervisor then registers the web and harvest PIDs with the vault on its control
pipe. Root and the configured admin uid are admins; anyone else has no role and is
refused at accept.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from inboxlens.errors import BadRequest

WEB, HARVEST, ADMIN = "web", "harvest", "admin"
MAX_SEALED_BYTES = 8192
MAX_REWRAP_BATCH = 1000

Validator = Callable[[Any], Any]
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
_PROVIDER = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_UCRED = struct.Struct("3i")


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
    "secret": Op(frozenset({HARVEST}), {"account_id": account_id}),  # only book:<digits> (answer_secret)
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


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(sock: Any) -> Peer:
    """The connected peer's credentials, as the kernel recorded them at connect time."""
    return Peer(*_UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)))


@dataclass
class Callers:
    web_uids: frozenset[int] = frozenset()
    harvest_uids: frozenset[int] = frozenset()
    admin_uids: frozenset[int] = frozenset({0})
    # Development mode only: the PIDs the supervisor registered, with their roles.
    pids: dict[int, str] = field(default_factory=dict)
    shared_uid: int | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Callers":
        def uids(name: str) -> frozenset[int]:
            values = raw.get(name, [])
            if not isinstance(values, list) or not all(isinstance(v, int) and v >= 0 for v in values):
                raise ValueError(f"callers.{name} must be a list of uids")
            return frozenset(values)
        shared = raw.get("shared_uid")
        if shared is not None and (not isinstance(shared, int) or shared < 0):
            raise ValueError("callers.shared_uid must be a uid")
        return cls(uids("web_uids"), uids("harvest_uids"), uids("admin_uids") | {0}, shared_uid=shared)

    def role_of(self, peer: Peer) -> str | None:
        if self.shared_uid is not None and peer.uid == self.shared_uid and peer.pid in self.pids:
            return self.pids[peer.pid]
        for role, uids in ((WEB, self.web_uids), (HARVEST, self.harvest_uids), (ADMIN, self.admin_uids)):
            if peer.uid in uids:
                return role
        return None

    def register(self, pid: int, role: str) -> None:
        if role not in (WEB, HARVEST) or pid <= 1:
            raise ValueError("only web and harvest PIDs can be registered")
        self.pids[pid] = role

    def unregister(self, pid: int) -> None:
        self.pids.pop(pid, None)
