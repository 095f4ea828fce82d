"""Strict JSON reading shared by the architecture types of the spaces (NAS-Bench-201, macro).

Every failure is one ``ValueError`` line of the caller's error class, naming
the architecture (``what``); hostile input is capped before it costs time.
"""
from __future__ import annotations

import json
from typing import Any, Sequence, Tuple, Type

from shared_model.genotype import _show


def check_text(text: Any, what: str, error: Type[ValueError], max_chars: int,
               types: Tuple[type, ...] = (str,)) -> None:
    """``text`` is a string (of ``types``) of at most ``max_chars`` characters."""
    if not isinstance(text, types):
        raise error(f"{what}: expected a str, got {type(text).__name__}")
    if len(text) > max_chars:
        raise error(f"{what} is {len(text)} characters long (at most {max_chars})")


def load_json(text: Any, what: str, error: Type[ValueError], max_chars: int) -> Any:
    """``json.loads(text)`` for at most ``max_chars`` characters."""
    check_text(text, f"{what} JSON", error, max_chars, (str, bytes, bytearray))
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # also over-long ints and too deep nesting
        raise error(f"{what} is not valid JSON: {' '.join(str(exc).split())}") from None


def check_fields(data: Any, fields: Sequence[str], what: str, error: Type[ValueError]) -> None:
    """``data`` is a JSON object with exactly ``fields``: unknown fields are reported first, then missing ones."""
    if not isinstance(data, dict):
        raise error(f"{what} must be a JSON object, got {type(data).__name__}")
    extra = sorted(set(data) - set(fields), key=str)
    if extra:
        names = ", ".join(f if f.isidentifier() else _show(f) for f in map(str, extra))
        raise error(f"{what} has unknown field(s): {names}")
    missing = [f for f in fields if f not in data]
    if missing:
        raise error(f"{what} is missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
