"""The validation machinery behind the config sections: type checks of dataclass fields, range checks,
unknown keys with close matches, and deep merges; every error names the key's full dotted path."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

__all__ = ["ConfigError", "Section", "build_section", "coerce", "merge", "unknown_key"]


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names its dotted path."""


def _type_name(tp: Any) -> str:
    """A short human name for a type annotation."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(tp))
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Return `value` checked against annotation `tp` (ints widen to float, lists to tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{path}: expected None, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (tuple, list)):
            (item_tp, *_rest) = typing.get_args(tp) or (Any,)
            items = [coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return copy.deepcopy(value)
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - an annotation this checker does not know is a bug here
        raise TypeError(f"unsupported annotation {tp!r} at {path}")
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def unknown_key(path: str, key: str, valid: list[str]) -> ConfigError:
    """The error for a key that a section does not have, with close matches and the valid keys."""
    full = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{full}'.{hint} Valid keys here: {', '.join(sorted(valid))}")


class Section:
    """Mixin for config dataclasses: field type checks, range checks, dotted paths in errors."""

    _path: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = coerce(getattr(self, f.name), hints[f.name], self._dotted(f.name))
            object.__setattr__(self, f.name, value)
        self._check()

    def _dotted(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def _check(self) -> None:
        """Range checks of a section; raise ConfigError naming the dotted key."""

    def _require(self, name: str, ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(f"{self._dotted(name)} = {getattr(self, name)!r}: {what}")


def merge(section: Any, changes: dict[str, Any], path: str) -> Any:
    """A new dataclass (or dict) equal to `section` with `changes` merged in, depth first."""
    if not isinstance(changes, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {changes!r}")
    if dataclasses.is_dataclass(section):
        names = [f.name for f in dataclasses.fields(section) if f.init]
        values = {}
        # A new optimizer/scheduler class: the old keyword arguments belonged to the old one (the new ones
        # merge into none, and the section is checked once, with its new name and kwargs together).
        renamed = "kwargs" in names and changes.get("name", section.name) != section.name
        if renamed:
            values["kwargs"] = {}
        for key, value in changes.items():
            if key not in names:
                raise unknown_key(path, key, names)
            current = {} if renamed and key == "kwargs" else getattr(section, key)
            sub = f"{path}.{key}" if path else key
            if isinstance(value, dict) and (dataclasses.is_dataclass(current) or isinstance(current, dict)):
                value = merge(current, value, sub)
            values[key] = value
        return dataclasses.replace(section, **values)
    merged = copy.deepcopy(section)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = merge(merged[key], value, f"{path}.{key}")
        merged[key] = copy.deepcopy(value)
    return merged



def build_section(cls: type, values: dict[str, Any]) -> Any:
    """Construct a section from a mapping, rejecting unknown keys with their dotted path."""
    if not isinstance(values, dict):
        raise ConfigError(f"{cls._path}: expected a mapping, got {values!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in values:
        if key not in names:
            raise unknown_key(cls._path, key, names)
    return cls(**copy.deepcopy(values))
