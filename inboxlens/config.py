"""Configuration: one TOML file plus ``INBOXLENS_*`` environment overrides.

Parsed once, at start, into frozen dataclasses with named defaults. Every key can
be overridden from the environment: ``INBOXLENS_`` + the key's path joined by
``__``, upper-cased (``INBOXLENS_STATE_DIR``, ``INBOXLENS_WEB__PORT``,
``INBOXLENS_PROVIDERS__GOOGLE__CLIENT_ID``). An unknown key, in the file or the
environment, is an error naming it; so is a value of the wrong type.

The supervisor hands each child only its own slice (``Config.slice_for``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import os
import tomllib
import typing
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .metrics.model import InsightSettings, WorkingHours

ENV_PREFIX = "INBOXLENS_"
# Variables with this prefix that are not configuration keys.
NON_KEY_VARIABLES = frozenset({"INBOXLENS_CONFIG"})
NON_KEY_PREFIXES = ("INBOXLENS_TEST_",)
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the NUL


@dataclass(frozen=True)
class ProviderConfig:
    """An OAuth 2.0 provider the vault refreshes tokens against."""

    token_url: str = ""
    client_id: str = ""
    # A list so a client secret can be rotated without downtime: tried in order.
    client_secrets: tuple[str, ...] = ()
    token_auth_method: str = "client_secret_post"
    revocation_url: str = ""
    authorization_url: str = ""
    userinfo_url: str = ""
    scopes: tuple[str, ...] = ()
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
        return f"ProviderConfig(token_url={self.token_url!r}, client_id={self.client_id!r}, client_secrets=<{len(self.client_secrets)} hidden>)"


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
    idle_timeout_seconds: float = 300.0
    max_connections: int = 256
    # A non-root uid allowed to run admin operations (keys rotate/rewrap/revoke/status).
    admin_uid: int = -1

    def __repr__(self) -> str:
        return f"VaultConfig(token_store={self.token_store!r}, dsn={'<hidden>' if self.token_store_dsn else '<none>'})"


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

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


@dataclass(frozen=True)
class HarvestConfig:
    interval_seconds: float = 300.0  # how often each account is synced
    tick_seconds: float = 15.0  # how often the scheduler looks for due accounts
    first_sync_days: int = 90  # how far back the first sync of an account goes
    batch_size: int = 250  # UIDs per FETCH (a few hundred: one unbounded FETCH can exceed a server's limits)
    max_connections: int = 8  # IMAP connections at once, all accounts
    max_connections_per_host: int = 4  # per IMAP host (Gmail allows ~15 per account; stay well below)
    lease_seconds: int = 300  # an account's lease; renewed with every stored batch


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

    def settings(self) -> InsightSettings:
        """As the metrics stores take them (validated when the config is loaded)."""
        days = frozenset(WEEKDAYS.index(d.lower()) for d in self.work_days)
        hours = WorkingHours(time.fromisoformat(self.work_start), time.fromisoformat(self.work_end), days)
        return InsightSettings(hours, timedelta(hours=self.owed_after_hours),
                               timedelta(hours=self.awaiting_after_hours), timedelta(days=self.lookback_days))


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
    stop_timeout_seconds: float = 10.0
    vault_start_timeout_seconds: float = 15.0


@dataclass(frozen=True)
class Config:
    state_dir: Path = Path()
    runtime_dir: Path = Path()
    log_level: str = "INFO"
    database: DatabaseConfig = DatabaseConfig()
    vault: VaultConfig = VaultConfig()
    web: WebConfig = WebConfig()
    harvest: HarvestConfig = HarvestConfig()
    metrics: MetricsConfig = MetricsConfig()
    insights: InsightsConfig = InsightsConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    providers: Mapping[str, ProviderConfig] = field(default_factory=lambda: dict(DEFAULT_PROVIDERS))

    @property
    def vault_dir(self) -> Path:
        return self.state_dir / "vault"

    @property
    def vault_socket(self) -> Path:
        return self.runtime_dir / "vault" / "vault.sock"


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


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the file (if any), apply environment overrides, validate, fill defaults."""
    env = dict(os.environ if environ is None else environ)
    path = path or (Path(env["INBOXLENS_CONFIG"]) if env.get("INBOXLENS_CONFIG") else None)
    raw: dict[str, Any] = _read_toml(path) if path else {}
    _apply_environment(raw, env)
    config: Config = _build(Config, raw, "")
    return _with_defaults(config, env)


def from_dict(raw: Mapping[str, Any]) -> Config:
    """Build a Config from plain data (the slice a child receives from the supervisor)."""
    config: Config = _build(Config, dict(raw), "")
    return config


def to_dict(config: Any) -> Any:
    """Plain JSON-able data for a config (or slice), secrets included: pass only over a pipe."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {k: to_dict(v) for k, v in config.items()}
    if isinstance(config, (tuple, list)):
        return [to_dict(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable by uid {os.getuid()}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def _apply_environment(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in NON_KEY_VARIABLES or name.startswith(NON_KEY_PREFIXES):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        if not all(parts):
            raise ConfigError(f"environment variable {name}: empty key segment")
        target = raw
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"environment variable {name}: {part!r} is not a section")
        target[parts[-1]] = _EnvValue(value, name)


@dataclass(frozen=True)
class _EnvValue:
    """A string from the environment, converted to the field's type when built."""

    text: str
    variable: str


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key {_join(where, unknown[0])!r} (known: {', '.join(sorted(names))})")
    values = {name: _convert(hints[name], raw[name], _join(where, name)) for name in raw}
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    if isinstance(value, _EnvValue):
        return _convert(hint, _parse_env(hint, value, key), key)
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {_kind(value)}")
        _, item = typing.get_args(hint)
        merged = dict(DEFAULT_PROVIDERS) if key == "providers" else {}
        for name, sub in value.items():
            base = merged.get(name)
            sub_raw = {**to_dict(base), **sub} if base is not None and isinstance(sub, dict) else sub
            merged[name] = _convert(item, sub_raw, _join(key, name))
        return merged
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {_kind(value)}")
        return tuple(value)
    if hint is Path:
        return _expect(value, str, key, Path)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_kind(value)}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {_kind(value)}")
        return value
    if hint is bool:
        return _expect(value, bool, key, bool)
    return _expect(value, str, key, str)


def _parse_env(hint: Any, value: _EnvValue, key: str) -> Any:
    text = value.text
    try:
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if hint is bool:
            return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[text.lower()]
        if typing.get_origin(hint) is tuple:
            parsed = json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p]
            return parsed
    except (ValueError, KeyError):
        raise ConfigError(f"{value.variable} (config key {key}): cannot read {_kind(text)} as {getattr(hint, '__name__', hint)}") from None
    if dataclasses.is_dataclass(hint) or typing.get_origin(hint) in (collections.abc.Mapping, dict):
        raise ConfigError(f"{value.variable}: {key} is a section; set one of its keys")
    return text


def _expect(value: Any, kind: type, key: str, make: Any) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {_kind(value)}")
    return make(value)


def _kind(value: Any) -> str:
    # Names the type only: a misplaced secret must not end up in an error message.
    return "a string" if isinstance(value, str) else type(value).__name__


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _with_defaults(config: Config, env: Mapping[str, str]) -> Config:
    state, runtime = default_dirs(environ=env)
    config = dataclasses.replace(
        config,
        state_dir=(config.state_dir if config.state_dir != Path() else state).absolute(),
        runtime_dir=(config.runtime_dir if config.runtime_dir != Path() else runtime).absolute(),
    )
    validate(config)
    return config


def validate(config: Config) -> None:
    """Checks that need more than one field, or a range."""
    if len(os.fsencode(config.vault_socket)) > MAX_SOCKET_PATH:
        raise ConfigError(f"runtime_dir: the vault socket path {config.vault_socket} is longer than {MAX_SOCKET_PATH} bytes; choose a shorter runtime_dir")
    if config.vault.token_store not in ("sqlite", "postgres"):
        raise ConfigError(f"vault.token_store: must be 'sqlite' or 'postgres', not {config.vault.token_store!r}")
    if config.vault.token_store == "postgres" and not config.vault.token_store_dsn:
        raise ConfigError("vault.token_store_dsn: required when vault.token_store = 'postgres'")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level: must be DEBUG, INFO, WARNING or ERROR, not {config.log_level!r}")
    if not 0 < config.web.port < 65536:
        raise ConfigError(f"web.port: {config.web.port} is not a TCP port")
    if config.web.public_url and not config.web.public_url.startswith(("http://", "https://")):
        raise ConfigError("web.public_url: must start with http:// or https://")
    if not 0 < config.web.session_days <= 365:
        raise ConfigError("web.session_days: must be 1 to 365")
    _positive(config, "vault", ("max_frame_bytes", "frame_timeout_seconds", "idle_timeout_seconds",
                                "max_connections", "refresh_attempts", "refresh_timeout_seconds",
                                "default_expires_in_seconds"))
    if not 1024 <= config.vault.max_frame_bytes <= 16 * 1024 * 1024:
        raise ConfigError("vault.max_frame_bytes: must be between 1024 and 16777216")
    h = config.harvest
    if not (1 <= h.batch_size <= 5000 and 1 <= h.first_sync_days <= 3650 and h.max_connections >= 1
            and h.max_connections_per_host >= 1 and h.lease_seconds >= 30 and h.tick_seconds > 0
            and h.interval_seconds > 0):
        raise ConfigError("harvest: batch_size 1-5000, first_sync_days 1-3650, max_connections >= 1, "
                          "max_connections_per_host >= 1, lease_seconds >= 30, intervals > 0")
    _validate_web_api(config.web)
    _validate_metrics(config.metrics)
    _validate_insights(config.insights)
    for name, provider in config.providers.items():
        if provider.imap_tls not in ("tls", "plain"):
            raise ConfigError(f"providers.{name}.imap_tls: must be 'tls' or 'plain' (plain: loopback only)")
        if provider.token_auth_method not in ("client_secret_post", "client_secret_basic"):
            raise ConfigError(f"providers.{name}.token_auth_method: must be client_secret_post or client_secret_basic")
        if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 32:
            raise ConfigError(f"providers.{name}: a provider name is 1-32 letters, digits, '-' or '_'")


def _validate_web_api(web: WebConfig) -> None:
    for origin in web.cors_origins:
        if origin == "*" or "://" not in origin or origin.endswith("/") or origin.count("/") > 2:
            raise ConfigError(f"web.cors_origins: {origin!r} is not an origin like chrome-extension://<id> "
                              "or https://host (no wildcard, no path)")
    if not (1 <= web.api_requests_per_minute <= 100_000 and 1 <= web.api_burst <= 10_000):
        raise ConfigError("web: api_requests_per_minute 1-100000, api_burst 1-10000")


def _validate_metrics(metrics: MetricsConfig) -> None:
    if metrics.backend not in ("postgresql", "cassandra"):
        raise ConfigError(f"metrics.backend: must be 'postgresql' or 'cassandra', not {metrics.backend!r}")
    if metrics.backend == "cassandra" and not metrics.cassandra_hosts:
        raise ConfigError("metrics.cassandra_hosts: required when metrics.backend = 'cassandra'")
    if not metrics.cassandra_keyspace.replace("_", "").isalnum() or len(metrics.cassandra_keyspace) > 48:
        raise ConfigError("metrics.cassandra_keyspace: 1-48 letters, digits or '_'")
    if not (1 <= metrics.cassandra_replication_factor <= 9 and metrics.cassandra_timeout_seconds > 0):
        raise ConfigError("metrics: cassandra_replication_factor 1-9, cassandra_timeout_seconds > 0")


def _validate_insights(insights: InsightsConfig) -> None:
    try:
        insights.settings()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"insights: work_start/work_end are HH:MM with start before end, work_days of "
                          f"{', '.join(WEEKDAYS)} ({e})") from None
    if not (insights.owed_after_hours > 0 and insights.awaiting_after_hours > 0 and 1 <= insights.lookback_days <= 365):
        raise ConfigError("insights: owed_after_hours and awaiting_after_hours > 0, lookback_days 1-365")


def _positive(config: Config, section: str, names: tuple[str, ...]) -> None:
    values = getattr(config, section)
    for name in names:
        if getattr(values, name) <= 0:
            raise ConfigError(f"{section}.{name}: must be greater than zero")


__all__ = ["Config", "ProviderConfig", "VaultConfig", "WebConfig", "HarvestConfig", "MetricsConfig",
           "InsightsConfig", "DatabaseConfig",
           "SupervisorConfig", "load", "from_dict", "to_dict", "default_dirs", "validate"]
