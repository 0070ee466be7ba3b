"""Every path the processes share, built in one place.

State (kept across restarts) and runtime (sockets, gone at reboot) directories
default to ``/var/lib/inboxlens`` and ``/run/inboxlens`` for root, and to folders
under the user's home for anyone else. Everything below them is named here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

TOKEN_DB = "tokens.sqlite3"


def default_dirs(uid: int | None = None, environ: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """System paths for root; for anyone else, folders under the user's home."""
    uid = os.getuid() if uid is None else uid
    env = os.environ if environ is None else environ
    if uid == 0:
        return Path("/var/lib/inboxlens"), Path("/run/inboxlens")
    home = Path(env.get("HOME") or Path.home())
    state = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state") / "inboxlens"
    runtime_base = env.get("XDG_RUNTIME_DIR")
    runtime = Path(runtime_base) / "inboxlens" if runtime_base else state / "run"
    return state, runtime


def vault_dir(state_dir: Path) -> Path:
    """The keyset and the SQLite token store; the vault's uid alone, 0700."""
    return state_dir / "vault"


def vault_socket(runtime_dir: Path) -> Path:
    return runtime_dir / "vault" / "vault.sock"


def web_dir(state_dir: Path) -> Path:
    """Web's cookie-signing key."""
    return state_dir / "web"


def pg_data_dir(state_dir: Path) -> Path:
    return state_dir / "pg"


def pg_socket_dir(runtime_dir: Path) -> Path:
    return runtime_dir / "pg"
