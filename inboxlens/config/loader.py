"""The configuration file, the environment, and the checks that span fields.

Every key can be overridden from the environment: ``INBOXLENS_`` + the key's path
joined by ``__``, upper-cased (``INBOXLENS_STATE_DIR``, ``INBOXLENS_WEB__PORT``,
``INBOXLENS_PROVIDERS__GOOGLE__CLIENT_ID``). An unknown key, in the file or the
environment, is an error naming it; so is a value of the wrong type or out of range.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import ipaddress
import json
import os
import tomllib
import typing
from datetime import time
from pathlib import Path
from typing import Any, Mapping

from inboxlens.config.build import build, kind, to_dict
from inboxlens.config.schema import (DEFAULT_PROVIDERS, WEEKDAYS, Config, HarvestConfig, InsightsConfig, MetricsConfig,
                                     ProfilesConfig, WebConfig)
from inboxlens.config.vault import check_providers, check_vault
from inboxlens.errors import ConfigError

ENV_PREFIX = "INBOXLENS_"
# Variables with this prefix that are not configuration keys.
NON_KEY_VARIABLES = frozenset({"INBOXLENS_CONFIG"})
NON_KEY_PREFIXES = ("INBOXLENS_TEST_",)


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the file (if any), apply environment overrides, validate, fill defaults."""
    env = dict(os.environ if environ is None else environ)
    path = path or (Path(env["INBOXLENS_CONFIG"]) if env.get("INBOXLENS_CONFIG") else None)
    raw: dict[str, Any] = _read_toml(path) if path else {}
    _apply_environment(raw, env)
    config: Config = build(Config, _with_default_providers(raw))
    state, runtime = _default_dirs(env)
    config = dataclasses.replace(
        config,
        state_dir=(config.state_dir if config.state_dir != Path() else state).absolute(),
        runtime_dir=(config.runtime_dir if config.runtime_dir != Path() else runtime).absolute(),
    )
    validate(config)
    return config


def _default_dirs(env: Mapping[str, str]) -> tuple[Path, Path]:
    """State and runtime directories: system paths for root; for anyone else, folders under the home."""
    if os.getuid() == 0:
        return Path("/var/lib/inboxlens"), Path("/run/inboxlens")
    home = Path(env.get("HOME") or Path.home())
    state = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state") / "inboxlens"
    runtime = env.get("XDG_RUNTIME_DIR")
    return state, Path(runtime) / "inboxlens" if runtime else state / "run"


def from_dict(raw: Mapping[str, Any]) -> Config:
    """A Config from plain data (the slice a child receives from the supervisor), checked like a file's."""
    config: Config = build(Config, _with_default_providers(dict(raw)))
    validate(config)
    return config


def _with_default_providers(raw: dict[str, Any]) -> dict[str, Any]:
    """The built-in providers, each overlaid with the keys the file or environment sets for it."""
    given = raw.get("providers")
    if not isinstance(given, dict):
        return raw  # none given (the defaults apply), or not a table (build says so)
    merged = {name: to_dict(p) for name, p in DEFAULT_PROVIDERS.items()}
    for name, sub in given.items():
        merged[name] = {**merged[name], **sub} if name in merged and isinstance(sub, dict) else sub
    return {**raw, "providers": merged}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable by uid {os.getuid()}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
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
        target[parts[-1]] = _from_environment(value, name, parts)


def _from_environment(text: str, variable: str, parts: list[str]) -> Any:
    """A variable's text as the type of the key it names; an unknown key stays text, for build to name."""
    hint: Any = Config
    for part in parts:
        if dataclasses.is_dataclass(hint):
            hint = typing.get_type_hints(hint).get(part, str)
        elif typing.get_origin(hint) in (collections.abc.Mapping, dict):
            hint = typing.get_args(hint)[1]
        else:
            hint = str  # a key below a plain value: build names the mistake
    key = ".".join(parts)
    try:
        if hint in (int, float):
            return hint(text)
        if hint is bool:
            return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[text.lower()]
        if typing.get_origin(hint) is tuple:
            return json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p]
    except (ValueError, KeyError):
        raise ConfigError(f"{variable} (config key {key}): cannot read {kind(text)} as "
                          f"{getattr(hint, '__name__', hint)}") from None
    if dataclasses.is_dataclass(hint) or typing.get_origin(hint) in (collections.abc.Mapping, dict):
        raise ConfigError(f"{variable}: {key} is a section; set one of its keys")
    return text


def validate(config: Config) -> None:
    """Checks that need more than one field, or a range; each names its key and what it allows."""
    check_vault(config.vault, config.vault_socket)
    check_providers(config.providers)
    for name, provider in config.providers.items():
        if provider.imap_tls not in ("tls", "plain"):
            raise ConfigError(f"providers.{name}.imap_tls: must be 'tls' or 'plain' (plain: loopback only)")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level: must be DEBUG, INFO, WARNING or ERROR, not {config.log_level!r}")
    if config.log_format not in ("text", "json"):
        raise ConfigError(f"log_format: must be 'text' or 'json', not {config.log_format!r}")
    _check_web(config.web)
    _check_harvest(config.harvest)
    _check_metrics(config.metrics)
    _check_insights(config.insights)
    _check_profiles(config.profiles)
    _check_stop(config)


def _check_stop(config: Config) -> None:
    """The supervisor kills a child that outlasts its stop timeout: each child's drain must end first."""
    stop = config.supervisor.stop_timeout_seconds
    for key, drain in (("vault.shutdown_seconds", config.vault.shutdown_seconds),
                       ("web.shutdown_seconds", config.web.shutdown_seconds)):
        if drain >= stop:
            raise ConfigError(f"{key}: must be less than supervisor.stop_timeout_seconds ({stop:g}), not {drain:g}")


def in_range(key: str, value: float, low: float, high: float | None = None, *, above: bool = False) -> None:
    """``key`` must lie in [low, high] (or above ``low`` when ``above``); the message says so."""
    too_low = value <= low if above else value < low
    if too_low or (high is not None and value > high):
        allowed = (f"greater than {_num(low)}" if above else f"at least {_num(low)}") if high is None else \
            f"from {_num(low)} to {_num(high)}"
        raise ConfigError(f"{key}: must be {allowed}, not {_num(value)}")


def _num(value: float) -> str:
    """Whole numbers in full (byte counts read 8388608, not 8.38861e+06)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _check_web(web: WebConfig) -> None:
    in_range("web.port", web.port, 1, 65535)
    if web.public_url and not web.public_url.startswith(("http://", "https://")):
        raise ConfigError("web.public_url: must start with http:// or https://")
    in_range("web.session_days", web.session_days, 1, 365)
    for origin in web.cors_origins:
        if origin == "*" or "://" not in origin or origin.endswith("/") or origin.count("/") > 2:
            raise ConfigError(f"web.cors_origins: {origin!r} is not an origin like chrome-extension://<id> "
                              "or https://host (no wildcard, no path)")
    in_range("web.api_requests_per_minute", web.api_requests_per_minute, 1, 100_000)
    in_range("web.api_burst", web.api_burst, 1, 10_000)
    in_range("web.anonymous_requests_per_minute", web.anonymous_requests_per_minute, 1, 100_000)
    in_range("web.anonymous_burst", web.anonymous_burst, 1, 10_000)
    in_range("web.shutdown_seconds", web.shutdown_seconds, 0, 300, above=True)
    web.metrics_address()  # raises ConfigError naming web.metrics_listen
    for proxy in web.trusted_proxies:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            raise ConfigError(f"web.trusted_proxies: {proxy!r} is not an IP address") from None


def _check_harvest(h: HarvestConfig) -> None:
    in_range("harvest.interval_seconds", h.interval_seconds, 0, above=True)
    in_range("harvest.tick_seconds", h.tick_seconds, 0, above=True)
    in_range("harvest.first_sync_days", h.first_sync_days, 1, 3650)
    in_range("harvest.batch_size", h.batch_size, 1, 5000)
    in_range("harvest.max_connections", h.max_connections, 1)
    in_range("harvest.max_connections_per_host", h.max_connections_per_host, 1)
    in_range("harvest.lease_seconds", h.lease_seconds, 30)
    in_range("harvest.max_literal_bytes", h.max_literal_bytes, 1024, 64 << 20)
    in_range("harvest.max_line_bytes", h.max_line_bytes, 1024, 256 << 20)
    in_range("harvest.max_response_bytes", h.max_response_bytes, max(h.max_literal_bytes, h.max_line_bytes), 1 << 30)


def _check_metrics(metrics: MetricsConfig) -> None:
    if metrics.backend not in ("postgresql", "cassandra"):
        raise ConfigError(f"metrics.backend: must be 'postgresql' or 'cassandra', not {metrics.backend!r}")
    if metrics.backend == "cassandra" and not metrics.cassandra_hosts:
        raise ConfigError("metrics.cassandra_hosts: required when metrics.backend = 'cassandra'")
    if not metrics.cassandra_keyspace.replace("_", "").isalnum() or len(metrics.cassandra_keyspace) > 48:
        raise ConfigError("metrics.cassandra_keyspace: 1-48 letters, digits or '_'")
    in_range("metrics.cassandra_replication_factor", metrics.cassandra_replication_factor, 1, 9)
    in_range("metrics.cassandra_timeout_seconds", metrics.cassandra_timeout_seconds, 0, above=True)


def _check_insights(insights: InsightsConfig) -> None:
    try:
        start, end = time.fromisoformat(insights.work_start), time.fromisoformat(insights.work_end)
    except ValueError:
        raise ConfigError("insights.work_start, insights.work_end: times as HH:MM") from None
    if start >= end:
        raise ConfigError("insights.work_start: must be before insights.work_end")
    unknown = [d for d in insights.work_days if d.lower() not in WEEKDAYS] or ([] if insights.work_days else [""])
    if unknown:
        raise ConfigError(f"insights.work_days: {unknown[0]!r} is not one of {', '.join(WEEKDAYS)}")
    in_range("insights.owed_after_hours", insights.owed_after_hours, 0, above=True)
    in_range("insights.awaiting_after_hours", insights.awaiting_after_hours, 0, above=True)
    in_range("insights.lookback_days", insights.lookback_days, 1, 365)


def _check_profiles(p: ProfilesConfig) -> None:
    in_range("profiles.sync_interval_seconds", p.sync_interval_seconds, 60, 30 * 86400)
    in_range("profiles.max_books_per_user", p.max_books_per_user, 0, 100)
    in_range("profiles.public_cache_days", p.public_cache_days, 1, 365)
    in_range("profiles.public_lookups_per_minute", p.public_lookups_per_minute, 1, 10_000)
    for key in ("gravatar_api_url", "gravatar_avatar_url", "libravatar_avatar_url", "google_carddav_url"):
        url = getattr(p, key)
        if not url.startswith(("https://", "http://")) or any(c in url for c in "?#") or len(url) > 500:
            raise ConfigError(f"profiles.{key}: must be an http(s) URL of at most 500 characters, without a "
                              "query or fragment")
    if p.google_carddav_url.count("{address}") != 1 or p.google_carddav_url.replace("{address}", "").count("{"):
        raise ConfigError("profiles.google_carddav_url: must hold {address} once (the mailbox's address), "
                          "and no other {...}")
    if not p.google_contacts_scope or len(p.google_contacts_scope) > 500 or " " in p.google_contacts_scope:
        raise ConfigError("profiles.google_contacts_scope: one OAuth scope, without spaces")
