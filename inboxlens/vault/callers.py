"""Who is calling: a role (web, harvest, admin) named by the peer's SO_PEERCRED.

Started as root, the supervisor runs web, harvest and the vault under their own
uids, and the uid alone names the caller's role. Started by an ordinary user all
children share that uid; then the supervisor registers the web and harvest PIDs
with the vault over its control pipe, and a registered PID names the role.
Root and the configured admin uid are admins. Anyone else has no role and is
refused at accept; what each role may ask is the table in ``ops``.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from inboxlens.vault.ops import ADMIN, HARVEST, WEB

_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(sock: Any) -> Peer:
    """The connected peer's credentials, as the kernel recorded them at connect time."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return Peer(*_UCRED.unpack(data))


@dataclass
class Callers:
    web_uids: frozenset[int] = frozenset()
    harvest_uids: frozenset[int] = frozenset()
    admin_uids: frozenset[int] = frozenset({0})
    # Development mode only: PIDs the supervisor registered, with the uid they run as.
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
        if peer.uid in self.web_uids:
            return WEB
        if peer.uid in self.harvest_uids:
            return HARVEST
        if peer.uid in self.admin_uids:
            return ADMIN
        return None

    def register(self, pid: int, role: str) -> None:
        if role not in (WEB, HARVEST) or pid <= 1:
            raise ValueError("only web and harvest PIDs can be registered")
        self.pids[pid] = role

    def unregister(self, pid: int) -> None:
        self.pids.pop(pid, None)

