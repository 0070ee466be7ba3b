"""The vault's configuration slice: its own section and the providers' token endpoints.

The vault parses this slice and nothing else; it checks the slice again although the
supervisor checked the whole configuration, trusting no one's word for its own bounds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from inboxlens import paths
from inboxlens.config.build import build
from inboxlens.errors import ConfigError

MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the NUL


@dataclass(frozen=True)
class ProviderConfig:
    """An OAuth 2.0 provider: the vault refreshes tokens against it, web signs in with it, harvest reads mail."""

    token_url: str = ""
    client_id: str = ""
    # A list so a client secret can be rotated without downtime: tried in order.
    client_secrets: tuple[str, ...] = ()
    token_auth_method: str = "client_secret_post"
    revocation_url: str = ""
    authorization_url: str = ""
    userinfo_url: str = ""
    scopes: tuple[str, ...] = ()
    # With an issuer and no scopes, web asks for "openid email offline_access" plus this (IMAP access).
    mail_scope: str = ""
    # Sign-in only (no mailbox access): what "Log in with ..." asks for.
    login_scopes: tuple[str, ...] = ("openid", "email")
    # Extra authorization request parameters (Google: access_type=offline, prompt=consent).
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    # An OpenID Connect issuer: its discovery document fills the URLs left empty here.
    issuer: str = ""
    display_name: str = ""
    imap_host: str = ""
    imap_port: int = 993
    imap_tls: str = "tls"  # "tls", or "plain" for a server on loopback only
    # Authentication-Results count only when stamped by one of these (anyone can write that header).
    trusted_authserv_ids: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never show secrets, even in a traceback's locals
        return (f"ProviderConfig(token_url={self.token_url!r}, client_id={self.client_id!r}, "
                f"client_secrets=<{len(self.client_secrets)} hidden>)")


@dataclass(frozen=True)
class VaultConfig:
    token_store: str = "sqlite"  # or "postgres"
    token_store_dsn: str = ""  # only for token_store = "postgres"; only the vault reads it
    access_token_margin_seconds: int = 120
    default_expires_in_seconds: int = 3600
    refresh_attempts: int = 3
    refresh_backoff_seconds: float = 0.5
    refresh_timeout_seconds: float = 10.0
    max_frame_bytes: int = 65536
    frame_timeout_seconds: float = 5.0
    idle_timeout_seconds: float = 60.0
    # Open connections per caller role: one role flooding the vault cannot starve another.
    max_connections_web: int = 32
    max_connections_harvest: int = 32
    max_connections_admin: int = 4
    shutdown_seconds: float = 10.0  # on SIGTERM: answer what is in flight and store running refreshes
    # A non-root uid allowed to run admin operations (keys rotate/rewrap/revoke/status).
    admin_uid: int = -1

    @property
    def connection_limits(self) -> dict[str, int]:
        return {"web": self.max_connections_web, "harvest": self.max_connections_harvest,
                "admin": self.max_connections_admin}

    def __repr__(self) -> str:
        return f"VaultConfig(token_store={self.token_store!r}, dsn={'<hidden>' if self.token_store_dsn else '<none>'})"


@dataclass(frozen=True)
class VaultSlice:
    """What the supervisor hands the vault: nothing of web, harvest or metrics."""

    state_dir: Path = Path()
    runtime_dir: Path = Path()
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object per line
    vault: VaultConfig = VaultConfig()
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)

    @property
    def vault_dir(self) -> Path:
        return paths.vault_dir(self.state_dir)

    @property
    def vault_socket(self) -> Path:
        return paths.vault_socket(self.runtime_dir)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "VaultSlice":
        vault_slice: VaultSlice = build(cls, dict(raw))
        check_vault(vault_slice.vault, vault_slice.vault_socket)
        check_providers(vault_slice.providers)
        return vault_slice


def check_vault(vault: VaultConfig, socket: Path) -> None:
    if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
        raise ConfigError(f"runtime_dir: the vault socket path {socket} is longer than {MAX_SOCKET_PATH} bytes; "
                          "choose a shorter runtime_dir")
    if vault.token_store not in ("sqlite", "postgres"):
        raise ConfigError(f"vault.token_store: must be 'sqlite' or 'postgres', not {vault.token_store!r}")
    if vault.token_store == "postgres" and not vault.token_store_dsn:
        raise ConfigError("vault.token_store_dsn: required when vault.token_store = 'postgres'")
    for name in ("frame_timeout_seconds", "idle_timeout_seconds", "refresh_attempts", "refresh_timeout_seconds",
                 "default_expires_in_seconds", "shutdown_seconds"):
        if getattr(vault, name) <= 0:
            raise ConfigError(f"vault.{name}: must be greater than zero, not {getattr(vault, name)}")
    for role, limit in vault.connection_limits.items():
        if not 1 <= limit <= 1024:
            raise ConfigError(f"vault.max_connections_{role}: must be from 1 to 1024, not {limit}")
    if not 1024 <= vault.max_frame_bytes <= 16 * 1024 * 1024:
        raise ConfigError(f"vault.max_frame_bytes: must be from 1024 to 16777216, not {vault.max_frame_bytes}")


def check_providers(providers: Mapping[str, ProviderConfig]) -> None:
    for name, provider in providers.items():
        if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 32:
            raise ConfigError(f"providers.{name}: a provider name is 1-32 letters, digits, '-' or '_'")
        if provider.token_auth_method not in ("client_secret_post", "client_secret_basic"):
            raise ConfigError(f"providers.{name}.token_auth_method: must be client_secret_post or client_secret_basic")
