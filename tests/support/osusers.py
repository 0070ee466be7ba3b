"""System users and groups the tests run processes as (created once, kept: they are harmless)."""

from __future__ import annotations

import grp
import pwd
import subprocess


def ensure_user(name: str) -> pwd.struct_passwd:
    """A no-login system user with its own group, created if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        # check=False: a concurrent test session may create it meanwhile; getpwnam decides.
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=False, capture_output=True, timeout=30)
        return pwd.getpwnam(name)


def ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=False, capture_output=True, timeout=30)
        return grp.getgrnam(name).gr_gid
