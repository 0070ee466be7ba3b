"""Every path the processes share below the state directory (kept across restarts) and the
runtime directory (sockets, gone at reboot); the loader picks those two (``config.loader``).
"""

from __future__ import annotations

from pathlib import Path

TOKEN_DB = "tokens.sqlite3"


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
