"""sd_notify(3): tell systemd we are ready or stopping (``Type=notify``); nothing when not under systemd."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("inboxlens.supervisor")


def sd_notify(state: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as e:
            log.warning("cannot notify systemd (%s)", e.strerror)
