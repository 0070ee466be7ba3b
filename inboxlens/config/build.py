"""Plain data (TOML, JSON) into frozen dataclasses, strictly.

An unknown key is an error naming it and the keys known there; so is a value of the
wrong type. Messages name the type of a bad value, never the value: a misplaced
secret must not end up in an error message.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping

from inboxlens.errors import ConfigError


def build(cls: type, raw: Any, where: str = "") -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {kind(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"unknown config key {_join(where, unknown[0])!r} (known: {', '.join(sorted(fields))})")
    return cls(**{name: _convert(hints[name], raw[name], _join(where, name)) for name in raw})


def to_dict(config: Any) -> Any:
    """Plain JSON-able data for a config (or slice), secrets included: pass only over a pipe."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {k: to_dict(v) for k, v in config.items()}
    if isinstance(config, (tuple, list)):
        return [to_dict(v) for v in config]
    return str(config) if isinstance(config, Path) else config


def _convert(hint: Any, value: Any, key: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if typing.get_origin(hint) in (collections.abc.Mapping, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {kind(value)}")
        return {name: _convert(typing.get_args(hint)[1], sub, _join(key, name)) for name, sub in value.items()}
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {kind(value)}")
        return tuple(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {kind(value)}")
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected a whole number, got {kind(value)}")
    expected = {Path: str, int: int, bool: bool}.get(hint, str)
    if not isinstance(value, expected):
        raise ConfigError(f"{key}: expected {expected.__name__}, got {kind(value)}")
    return Path(str(value)) if hint is Path else value


def kind(value: Any) -> str:
    return "a string" if isinstance(value, str) else type(value).__name__


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
