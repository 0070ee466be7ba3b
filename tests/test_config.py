"""Configuration: the example file, environment overrides, and clear errors for bad values."""

from __future__ import annotations

import dataclasses
import re
import typing
from datetime import time, timedelta
from pathlib import Path

import pytest

from inboxlens.config import loader as config
from inboxlens.config.schema import Config
from inboxlens.config.vault import ProviderConfig
from inboxlens.metrics.model import InsightSettings
from inboxlens.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "config" / "inboxlens.example.toml"


def _schema_keys(cls: type, prefix: str) -> set[str]:
    keys = set()
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys |= _schema_keys(hint, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        elif f.name == "providers":
            keys |= _schema_keys(ProviderConfig, "providers.*.")
        else:
            keys.add(prefix + f.name)
    return keys


def _example_keys() -> set[str]:
    """Every key the example names, set or commented out, by its section ("providers.*" for any provider)."""
    keys, section = set(), ""
    for line in EXAMPLE.read_text().splitlines():
        text = line.lstrip("# ").split("#")[0].strip()
        if header := re.fullmatch(r"\[([a-z_.]+)\]", text):
            parts = header[1].split(".")
            section = "providers.*." if parts[0] == "providers" else header[1] + "."
        elif key := re.match(r"([a-z_]+)\s*=", text):
            keys.add((section if line.startswith(("#", "[")) or section else "") + key[1])
    return keys


def test_the_example_names_every_key_and_only_keys_that_exist() -> None:
    schema, example = _schema_keys(Config, ""), _example_keys()
    assert not schema - example, f"keys missing from {EXAMPLE.name}: {sorted(schema - example)}"
    assert not example - schema, f"{EXAMPLE.name} names keys the schema lacks: {sorted(example - schema)}"


def test_the_example_file_shows_the_defaults() -> None:
    shown = config.load(EXAMPLE, {"HOME": "/nonexistent"})
    defaults = config.load(None, {"HOME": "/nonexistent"})
    assert shown == defaults


def test_insight_settings_from_config_and_environment() -> None:
    c = config.load(None, {"HOME": "/h", "INBOXLENS_INSIGHTS__WORK_START": "08:30",
                           "INBOXLENS_INSIGHTS__WORK_DAYS": "mon,tue,sat", "INBOXLENS_INSIGHTS__OWED_AFTER_HOURS": "6"})
    settings = InsightSettings.from_config(c.insights)
    assert settings.working_hours.start == time(8, 30) and settings.working_hours.weekdays == {0, 1, 5}
    assert settings.owed_after == timedelta(hours=6) and settings.lookback == timedelta(days=30)


@pytest.mark.parametrize(("key", "value", "names"), [
    ("INBOXLENS_INSIGHTS__WORK_DAYS", "mon,someday", "insights"),
    ("INBOXLENS_INSIGHTS__WORK_END", "08:00", "insights"),
    ("INBOXLENS_INSIGHTS__WORK_START", "9 o'clock", "insights"),
    ("INBOXLENS_INSIGHTS__LOOKBACK_DAYS", "0", "insights"),
    ("INBOXLENS_METRICS__BACKEND", "mongodb", "metrics.backend"),
    ("INBOXLENS_METRICS__CASSANDRA_KEYSPACE", "drop table", "metrics.cassandra_keyspace"),
    ("INBOXLENS_WEB__CORS_ORIGINS", "*", "web.cors_origins"),
    ("INBOXLENS_WEB__CORS_ORIGINS", "https://ext.example/path", "web.cors_origins"),
    ("INBOXLENS_WEB__API_BURST", "0", "api_burst"),
    ("INBOXLENS_PROFILES__SYNC_INTERVAL_SECONDS", "1", "profiles.sync_interval_seconds"),
    ("INBOXLENS_PROFILES__GOOGLE_CARDDAV_URL", "https://dav.example/{user}/", "profiles.google_carddav_url"),
    ("INBOXLENS_PROFILES__GRAVATAR_API_URL", "ftp://gravatar.example", "profiles.gravatar_api_url"),
    ("INBOXLENS_PROFILES__ALLOW_PRIVATE_ADDRESSES", "maybe", "PROFILES__ALLOW_PRIVATE_ADDRESSES"),
])
def test_bad_values_are_refused_naming_the_key(key: str, value: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        config.load(None, {"HOME": "/h", key: value})


def test_profiles_section_from_the_environment() -> None:
    c = config.load(None, {"HOME": "/h", "INBOXLENS_PROFILES__ALLOW_PRIVATE_ADDRESSES": "true",
                           "INBOXLENS_PROFILES__SYNC_INTERVAL_SECONDS": "600"})
    assert c.profiles.allow_private_addresses and c.profiles.sync_interval_seconds == 600
    assert config.load(None, {"HOME": "/h"}).profiles.allow_private_addresses is False


def test_cassandra_needs_hosts_and_never_shows_its_password() -> None:
    with pytest.raises(ConfigError, match="metrics.cassandra_hosts"):
        config.load(None, {"HOME": "/h", "INBOXLENS_METRICS__BACKEND": "cassandra"})
    c = config.load(None, {"HOME": "/h", "INBOXLENS_METRICS__BACKEND": "cassandra",
                           "INBOXLENS_METRICS__CASSANDRA_HOSTS": "10.0.0.1,10.0.0.2:9042",
                           "INBOXLENS_METRICS__CASSANDRA_PASSWORD": "pw-0d9a"})
    assert c.metrics.cassandra_hosts == ("10.0.0.1", "10.0.0.2:9042")
    assert "pw-0d9a" not in repr(c)
