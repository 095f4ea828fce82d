"""Generic config machinery: nested dataclasses, files, dotted overrides.

Config flows one way: dataclass defaults -> preset -> config file -> CLI flags.
Files are JSON (``.json``) or TOML (``.toml``) with one table per section;
unknown keys and values of the wrong type are errors that name the key.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import reprlib
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Mapping

from enas.errors import UserError


def to_dict(cfg: Any) -> Dict[str, Any]:
    """A plain, JSON-ready dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40


def _show(value: Any) -> str:
    """A short one-line repr: a hostile value may be huge, deeply nested or an int too long to print."""
    try:
        return _REPR.repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__}>"


def _check_value(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(key, value, arg)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"config key {key!r}: invalid value {_show(value)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key!r}: expected a list, got {_show(value)}")
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        items = [_check_value(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key {key!r}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key {key!r}: expected an integer, got {_show(value)}")
        if not -2**63 <= value < 2**63:  # torch and numpy take 64-bit integers only
            raise UserError(f"config key {key!r}: {_show(value)} is out of the 64-bit integer range")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key {key!r}: expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            number = math.inf
        # NaN slips through every range check and inf poisons training: refuse both here.
        if not math.isfinite(number):
            raise UserError(f"config key {key!r}: expected a finite number, got {_show(value)}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"config key {key!r}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> Dict[str, Any]:
    # Cached: get_type_hints re-evaluates every annotation and was ~95% of building a config.
    # Callers only read the dict.
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def set_key(cfg: Any, dotted: str, value: Any) -> None:
    """Set ``section.key`` (or a top-level key) on a config, type-checked."""
    *path, last = dotted.split(".")
    obj = cfg
    for i, part in enumerate(path):
        if not dataclasses.is_dataclass(obj) or part not in _field_types(type(obj)):
            raise UserError(f"unknown config key {'.'.join(path[:i + 1])!r}")
        obj = getattr(obj, part)
    types_ = _field_types(type(obj)) if dataclasses.is_dataclass(obj) else {}
    if last not in types_:
        raise UserError(f"unknown config key {dotted!r}")
    if dataclasses.is_dataclass(getattr(obj, last)):
        raise UserError(f"config key {dotted!r} is a section; set its keys instead")
    setattr(obj, last, _check_value(dotted, value, types_[last]))


def apply_dict(cfg: Any, data: Mapping[str, Any], prefix: str = "") -> None:
    """Apply nested ``data`` (sections as dicts) onto ``cfg``; unknown keys are errors."""
    if not isinstance(data, Mapping):
        raise UserError(f"config section {prefix.rstrip('.') or '(top level)'} must be a table/object")
    types_ = _field_types(type(cfg))
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in types_:
            raise UserError(f"unknown config key {dotted!r}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            apply_dict(current, value, dotted + ".")
        else:
            setattr(cfg, key, _check_value(dotted, value, types_[key]))


def apply_overrides(cfg: Any, overrides: Mapping[str, Any]) -> None:
    """Apply flat ``{"section.key": value}`` overrides."""
    for key, value in overrides.items():
        set_key(cfg, key, value)


def layer_config(cfg: Any, first: Mapping[str, Any], preset: Callable[[], Mapping[str, Any]],
                 file_data: Mapping[str, Any] | None, flags: Mapping[str, Any]) -> Any:
    """Apply the layers in order: ``first`` (preset name, strategy), the preset's overrides,
    the file, the flags (``None`` skipped). ``preset`` is called after ``first`` passed its
    type checks, so a malformed preset name is reported as such."""
    apply_overrides(cfg, first)
    apply_overrides(cfg, preset())
    apply_dict(cfg, file_data or {})
    apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None})
    return cfg


def read_config_file(path: str | Path) -> Dict[str, Any]:
    """Read a JSON or TOML config file into a dict; errors are one line."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {p}: {exc}") from None
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # decode errors, over-long ints, too deep nesting
        raise UserError(f"config file {p} is malformed: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold an object/table at the top level")
    return data


def parse_set_option(item: str) -> tuple[str, Any]:
    """Parse ``--set section.key=value``; the value is JSON, else a plain string."""
    if "=" not in item:
        raise UserError(f"--set expects KEY=VALUE, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON (or over-long ints, too deep nesting): a string
        value = raw
    return key.strip(), value


def save_config(cfg: Any, path: Path) -> None:
    """Write the resolved config as indented JSON (atomically)."""
    from enas.runs.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2) + "\n")


def load_saved_config(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a config dataclass from its saved dict (e.g. from a checkpoint)."""
    cfg = cls()
    apply_dict(cfg, data)
    return cfg
