"""Plain data (TOML, JSON, environment strings) into frozen dataclasses, strictly.

An unknown key is an error naming it and the keys known there; so is a value of the
wrong type. Messages name the type of a bad value, never the value: a misplaced
secret must not end up in an error message.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from inboxlens.errors import ConfigError


@dataclass(frozen=True)
class EnvValue:
    """A string from the environment, converted to the field's type when built."""

    text: str
    variable: str


def build(cls: type, raw: Any, where: str = "") -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {_join(where, unknown[0])!r} (known: {', '.join(sorted(fields))})")
    values = {name: _convert(hints[name], raw[name], _join(where, name), _default(fields[name])) for name in raw}
    return cls(**values)


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


def _default(f: dataclasses.Field[Any]) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _convert(hint: Any, value: Any, key: str, default: Any = None) -> Any:
    if isinstance(value, EnvValue):
        return _convert(hint, _parse_env(hint, value, key), key, default)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if typing.get_origin(hint) in (collections.abc.Mapping, dict):
        return _mapping(hint, value, key, dict(default or {}))
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {_kind(value)}")
        return tuple(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_kind(value)}")
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected a whole number, got {_kind(value)}")
    kind = {Path: str, int: int, bool: bool}.get(hint, str)
    if not isinstance(value, kind):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {_kind(value)}")
    return Path(str(value)) if hint is Path else value


def _mapping(hint: Any, value: Any, key: str, merged: dict[str, Any]) -> dict[str, Any]:
    """A table of named sections; a name the defaults have is merged over its default."""
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table, got {_kind(value)}")
    _, item = typing.get_args(hint)
    for name, sub in value.items():
        base = merged.get(name)
        sub_raw = {**to_dict(base), **sub} if base is not None and isinstance(sub, dict) else sub
        merged[name] = _convert(item, sub_raw, _join(key, name))
    return merged


def _parse_env(hint: Any, value: EnvValue, key: str) -> Any:
    text = value.text
    try:
        if hint in (int, float):
            return hint(text)
        if hint is bool:
            return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[text.lower()]
        if typing.get_origin(hint) is tuple:
            return json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p]
    except (ValueError, KeyError):
        raise ConfigError(f"{value.variable} (config key {key}): cannot read {_kind(text)} as "
                          f"{getattr(hint, '__name__', hint)}") from None
    if dataclasses.is_dataclass(hint) or typing.get_origin(hint) in (collections.abc.Mapping, dict):
        raise ConfigError(f"{value.variable}: {key} is a section; set one of its keys")
    return text


def _kind(value: Any) -> str:
    return "a string" if isinstance(value, str) else type(value).__name__


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
