"""The step between the supervisor and each child: confine, drop to the child's user, exec it.

``python -m inboxlens.confine UID GID GROUPS MODULE`` (UID -1: stay who we are,
development mode; GROUPS comma-separated) runs as the supervisor's user and, before it
becomes the child's:

- drops every capability from the bounding set (``PR_CAPBSET_DROP`` up to
  ``/proc/sys/kernel/cap_last_cap``; needs CAP_SETPCAP, so only while still root), so that
  nothing the child runs can ever hold a capability again;
- sets ``no_new_privs``: no setuid binary or file capability gives the child more than it has.

Whatever starts the supervisor (systemd, a shell, the tests), every child is confined the
same way. Here, not in a ``preexec_fn``: the supervisor has threads, and Python code between
fork and exec in a threaded process can deadlock. The child makes itself non-dumpable
after exec (``child.run``): exec resets the dumpable flag.
Untrusted input: none (its arguments come from the supervisor).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

CAP_CHOWN = 0
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CAP_LAST_CAP = Path("/proc/sys/kernel/cap_last_cap")
_libc = ctypes.CDLL(None, use_errno=True)


class ConfineError(OSError):
    """A prctl the confinement needs failed."""


def prctl(option: int, value: int) -> int:
    result: int = _libc.prctl(option, value, 0, 0, 0)
    if result < 0:
        errno = ctypes.get_errno()
        raise ConfineError(errno, f"prctl({option}, {value}) failed: {os.strerror(errno)}")
    return result


def in_bounding_set(capability: int) -> bool:
    """Whether this process may still hold ``capability`` (the systemd unit's CapabilityBoundingSet= removes some)."""
    return prctl(PR_CAPBSET_READ, capability) == 1


def drop_bounding_set() -> None:
    """Empty the capability bounding set (root only: it takes CAP_SETPCAP)."""
    for capability in range(int(CAP_LAST_CAP.read_text()) + 1):
        prctl(PR_CAPBSET_DROP, capability)


def confine(uid: int, gid: int, groups: list[int]) -> None:
    """Drop the bounding set (when root), forbid new privileges, become uid/gid (uid -1: stay)."""
    if os.geteuid() == 0:
        drop_bounding_set()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if uid >= 0:
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)


def command(module: str, uid: int, gid: int, groups: tuple[int, ...]) -> list[str]:
    """The argv that starts ``python -m module`` confined, as uid/gid with groups."""
    return [sys.executable, "-m", __name__, str(uid), str(gid), ",".join(map(str, groups)), module]


def main(argv: list[str]) -> None:
    uid, gid, groups, module = argv
    try:
        confine(int(uid), int(gid), [int(g) for g in groups.split(",") if g])
    except OSError as e:
        print(f"inboxlens: cannot confine {module}: {e.strerror}", file=sys.stderr)
        sys.exit(71)  # EX_OSERR
    os.execv(sys.executable, [sys.executable, "-m", module])


if __name__ == "__main__":
    main(sys.argv[1:])
