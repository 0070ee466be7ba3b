"""The whole configuration, section by section, as frozen dataclasses with named defaults.

Parsed once, at start (``loader``); the supervisor hands each child only its own
slice. The vault's section and the providers live in ``config.vault``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from inboxlens import paths
from inboxlens.config.vault import ProviderConfig, VaultConfig
from inboxlens.errors import ConfigError

DEFAULT_PROVIDERS: Mapping[str, ProviderConfig] = {
    "google": ProviderConfig(
        token_url="https://oauth2.googleapis.com/token",
        revocation_url="https://oauth2.googleapis.com/revoke",
        authorization_url="https://accounts.google.com/o/oauth2/v2/auth",
        userinfo_url="https://openidconnect.googleapis.com/v1/userinfo",
        scopes=("https://mail.google.com/", "openid", "email"),
        # A refresh token comes only with offline access, and reliably only right after consent.
        authorize_params={"access_type": "offline", "prompt": "consent"},
        issuer="https://accounts.google.com",
        display_name="Google (Gmail)",
        imap_host="imap.gmail.com",
        trusted_authserv_ids=("mx.google.com",),
    ),
    "microsoft": ProviderConfig(
        token_url="https://login.microsoftonline.com/common/oauth2/v2.0/token",
        authorization_url="https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        userinfo_url="https://graph.microsoft.com/oidc/userinfo",
        scopes=("https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access", "openid", "email"),
        display_name="Microsoft 365 / Outlook",
        imap_host="outlook.office365.com",
        trusted_authserv_ids=("spf.protection.outlook.com",),
    ),
}


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # The address browsers use (redirect URIs are built from it); default http://host:port.
    public_url: str = ""
    session_days: int = 14
    # Browser origins allowed to call /api/v1 cross-origin (say "chrome-extension://<id>"); never "*".
    cors_origins: tuple[str, ...] = ()
    api_requests_per_minute: int = 600  # per API token (or session): the steady rate ...
    api_burst: int = 60  # ... and how many may come at once before 429
    # Requests without a logged-in session or API token, per client address (starting a
    # sign-in costs a row and a redirect): the steady rate, and how many at once before 429.
    anonymous_requests_per_minute: int = 60
    anonymous_burst: int = 30
    # Reverse proxies whose X-Forwarded-For names the client (IP addresses); others' is ignored.
    trusted_proxies: tuple[str, ...] = ()
    # On SIGTERM: stop accepting, give in-flight requests this long, then cut them off.
    shutdown_seconds: float = 8.0
    # Prometheus metrics on a listener of their own, "127.0.0.1:9464" say; empty: off. No credential is
    # asked, so a loopback address only, unless metrics_allow_remote (docs/observability.md).
    metrics_listen: str = ""
    metrics_allow_remote: bool = False

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def metrics_address(self) -> tuple[str, int] | None:
        """``metrics_listen`` as (IP address, port); None when off; ConfigError when malformed or not allowed."""
        if not self.metrics_listen:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        try:
            ip = ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
        except ValueError:
            ip = None
        if ip is None or not port.isdigit() or not 1 <= int(port) <= 65535 or (ip.version == 6) != (host[:1] == "["):
            raise ConfigError(f"web.metrics_listen: {self.metrics_listen!r} is not an IP address and port like "
                              "127.0.0.1:9464 or [::1]:9464 (empty: off)")
        if not ip.is_loopback and not self.metrics_allow_remote:
            raise ConfigError(f"web.metrics_listen: {ip} is not a loopback address and the metrics ask for no "
                              "credential; set web.metrics_allow_remote = true to serve them there anyway")
        return str(ip), int(port)


@dataclass(frozen=True)
class HarvestConfig:
    interval_seconds: float = 300.0  # how often each account is synced
    tick_seconds: float = 15.0  # how often the scheduler looks for new and due accounts (also whenever a sync ends)
    first_sync_days: int = 90  # how far back the first sync of an account goes
    batch_size: int = 250  # UIDs per FETCH (a few hundred: one unbounded FETCH can exceed a server's limits)
    max_connections: int = 8  # IMAP connections at once, all accounts
    max_connections_per_host: int = 4  # per IMAP host (Gmail allows ~15 per account; stay well below)
    lease_seconds: int = 300  # an account's lease; renewed with every stored batch
    # Caps on what one IMAP server may make harvest hold; over one, the connection is dropped.
    max_literal_bytes: int = 256 * 1024  # one message's header fields (a few KiB in real mail)
    max_line_bytes: int = 8 * 1024 * 1024  # one response line: a SEARCH answer of ~1M UIDs fits
    max_response_bytes: int = 64 * 1024 * 1024  # one command's whole answer: batch_size x max_literal_bytes


@dataclass(frozen=True)
class MetricsConfig:
    """Where raw rows, rollups and insights live: PostgreSQL (the accounts' database) or Cassandra."""

    backend: str = "postgresql"  # or "cassandra"
    cassandra_hosts: tuple[str, ...] = ()  # contact points, "host" or "host:port"
    cassandra_keyspace: str = "inboxlens"
    cassandra_username: str = ""
    cassandra_password: str = ""
    cassandra_local_dc: str = ""  # token- and DC-aware routing; empty: the driver's default
    cassandra_replication_factor: int = 3  # used when `inboxlens migrate` creates the keyspace
    cassandra_timeout_seconds: float = 10.0

    def __repr__(self) -> str:
        return (f"MetricsConfig(backend={self.backend!r}, cassandra_hosts={self.cassandra_hosts!r}, "
                f"cassandra_keyspace={self.cassandra_keyspace!r}, "
                f"cassandra_password={'<hidden>' if self.cassandra_password else '<none>'})")


@dataclass(frozen=True)
class InsightsConfig:
    work_start: str = "09:00"  # working hours, in each account's time zone, for business-hours reply times
    work_end: str = "17:00"
    work_days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    owed_after_hours: float = 24.0  # a person's message unanswered this long is an owed reply
    awaiting_after_hours: float = 72.0  # your message unanswered this long is awaiting their reply
    lookback_days: int = 30  # owed and awaiting look no further back


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str = ""  # empty: an embedded PostgreSQL under the state directory

    def __repr__(self) -> str:
        return f"DatabaseConfig(dsn={'<hidden>' if self.dsn else '<embedded>'})"


@dataclass(frozen=True)
class SupervisorConfig:
    restart_backoff_initial_seconds: float = 0.5
    restart_backoff_max_seconds: float = 30.0
    # A child that ran this long before dying is restarted with the initial backoff.
    stable_after_seconds: float = 60.0
    # Longer than every child's own drain (vault.shutdown_seconds, web.shutdown_seconds; harvest takes this less 5 s).
    stop_timeout_seconds: float = 15.0
    vault_start_timeout_seconds: float = 15.0


@dataclass(frozen=True)
class ProfilesConfig:
    """Contact profiles (issue 17): CardDAV books synced by harvest, and opt-in public profiles."""

    sync_interval_seconds: float = 3600.0  # CardDAV books, each
    max_books_per_user: int = 10
    allow_private_addresses: bool = False  # SSRF: CardDAV/photo URLs to loopback/private/link-local refused unless true
    gravatar: bool = True  # admin switch (still opt-in per mailbox, off by default)
    libravatar: bool = True
    gravatar_api_url: str = "https://api.gravatar.com/v3"
    gravatar_avatar_url: str = "https://gravatar.com/avatar"
    libravatar_avatar_url: str = "https://seccdn.libravatar.org/avatar"
    public_cache_days: int = 7
    public_lookups_per_minute: int = 4  # all requests to both; Gravatar: 100 profile requests an hour without a key
    google_contacts_scope: str = "https://www.googleapis.com/auth/carddav"
    google_carddav_url: str = "https://www.googleapis.com/carddav/v1/principals/{address}/lists/default/"


@dataclass(frozen=True)
class Config:
    state_dir: Path = Path()
    runtime_dir: Path = Path()
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object per line
    database: DatabaseConfig = DatabaseConfig()
    vault: VaultConfig = VaultConfig()
    web: WebConfig = WebConfig()
    harvest: HarvestConfig = HarvestConfig()
    metrics: MetricsConfig = MetricsConfig()
    insights: InsightsConfig = InsightsConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    profiles: ProfilesConfig = ProfilesConfig()
    providers: Mapping[str, ProviderConfig] = field(default_factory=lambda: dict(DEFAULT_PROVIDERS))

    @property
    def vault_dir(self) -> Path:
        return paths.vault_dir(self.state_dir)

    @property
    def vault_socket(self) -> Path:
        return paths.vault_socket(self.runtime_dir)
