"""Building typed parameter records from YAML values: types, literal choices and ranges.

:func:`build` turns the plain data of params.yaml into the frozen dataclasses of
:mod:`cxr.core.config` (and of each source module), so an unknown, missing, ill-typed or
out-of-range key is an error naming its full path. Ranges live next to each field's type
(:func:`bounded`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import field
from typing import Any, Literal, Union

from cxr.core.errors import CxrError

PARAMS_FILE = "params.yaml"
YAML12_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(CxrError, ValueError):
    """A parameter is unknown, missing or of the wrong type; the message names it."""


def bounded(
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    reason: str = "",
) -> Any:
    """A field whose numbers must lie in ``[low, high]`` (``(`` / ``)`` where open); None skips a side.

    The range lives next to the field's type so that one place says what a parameter accepts;
    :func:`build` checks it for plain numbers and for every value of a mapping. ``reason`` says
    why the bound is where it is; it ends the error message.
    """
    return field(metadata={"range": (low, high, low_open, high_open), "reason": reason})


def build(kind: Any, value: Any, key: str, source: str) -> Any:
    """Check ``value`` against the type annotation ``kind`` and convert it; ``key`` is its path."""
    where = f"{source}: {key or '<top level>'}"
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping with keys {_field_names(kind)}, got {value!r}")
        hints = typing.get_type_hints(kind)
        rest = [item.name for item in dataclasses.fields(kind) if item.metadata.get("rest")]
        if rest:
            value = {
                **{name: item for name, item in value.items() if name in hints},
                rest[0]: {name: item for name, item in value.items() if name not in hints},
            }
        unknown = sorted(set(value) - set(hints))
        if unknown:
            raise ConfigError(f"{where}: unknown key {join_key(key, unknown[0])!r}; allowed: {_field_names(kind)}")
        missing = [name for name in _field_names(kind) if name not in value]
        if missing:
            raise ConfigError(
                f"{where}: missing key {join_key(key, missing[0])!r}; every parameter must be set "
                "(the shipped params.yaml has them all)"
            )
        built = {
            name: build(hints[name], item, key if name in rest else join_key(key, name), source)
            for name, item in value.items()
        }
        for item in dataclasses.fields(kind):
            if "range" in item.metadata and item.name in built:
                _check_range(
                    built[item.name], item.metadata["range"], join_key(key, item.name), source, item.metadata["reason"]
                )
        return kind(**built)
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return build(option, value, key, source)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 2)[-1])
        raise ConfigError(f"{where}: {value!r} is none of: {'; '.join(errors)}")
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; allowed: {list(allowed)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_kind,) = typing.get_args(kind)
        return [build(item_kind, item, f"{key}[{index}]", source) for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_kind, item_kind = typing.get_args(kind)
        return {
            build(key_kind, name, key, source): build(item_kind, item, join_key(key, str(name)), source)
            for name, item in value.items()
        }
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and YAML12_FLOAT.fullmatch(value):
        # YAML 1.1 (PyYAML) reads 3e-05 as text, and `dvc exp run -S lr=0.00003` writes it so.
        return float(value)
    if kind in (int, float, str, bool):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
        return value
    raise TypeError(f"config type {kind!r} at {key} is not supported")


def _check_range(value: Any, bounds: tuple, key: str, source: str, reason: str = "") -> None:
    """Every number in ``value`` (a number, or a mapping's values) lies within ``bounds``."""
    low, high, low_open, high_open = bounds
    numbers = value.items() if isinstance(value, dict) else [(None, value)]
    for name, number in numbers:
        if isinstance(number, bool) or not isinstance(number, int | float):
            continue
        too_low = low is not None and (number <= low if low_open else number < low)
        too_high = high is not None and (number >= high if high_open else number > high)
        if too_low or too_high:
            accepted = " and ".join(
                part
                for part in (
                    None if low is None else f"{'>' if low_open else '>='} {low:g}",
                    None if high is None else f"{'<' if high_open else '<='} {high:g}",
                )
                if part
            )
            where = key if name is None else f"{key}.{name}"
            raise ConfigError(
                f"{source}: {where}: {number!r} is out of range; it must be {accepted}"
                + (f" ({reason})" if reason else "")
            )


def _field_names(kind: Any) -> list[str]:
    return [item.name for item in dataclasses.fields(kind)]


def join_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
