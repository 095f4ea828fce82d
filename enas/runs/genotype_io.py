"""Resolve the GENOTYPE argument of ``enas train`` / ``enas show`` and write architecture files.

A GENOTYPE is one of:

* a zoo name such as ``DARTS_V2`` (case-insensitive, see ``enas genotypes``);
* a JSON file with the four DARTS fields (``normal``, ``normal_concat``,
  ``reduce``, ``reduce_concat``; :meth:`Genotype.to_dict`), or any JSON object
  holding such a dict under ``"genotype"`` (e.g. a retrain run's ``result.json``);
* a JSON file with another registered space's architecture, e.g. NAS-Bench-201
  ``{"arch": "|nor_conv_3x3~0|+|...|"}``; ``"space": NAME`` in the object names
  the space explicitly;
* an architecture string of a space that has one, e.g. NAS-Bench-201's
  ``"|nor_conv_3x3~0|+|...|"`` or the macro space's official arc ``"0 3 0 0 1 0 ..."``
  (source ``arch:<string>``);
* a run folder: its ``genotype.json`` (written by ``enas derive`` for a search
  run and by ``enas train`` for a retrain run), read with the space named by
  the folder's ``config.json`` (``model.space``).

The space is chosen without knowing any space by name: an explicit
``"space"``, the run folder's config, else the first registered space whose
architecture fields the JSON has (:func:`~shared_model.spaces.space_for_json`).

Every problem is a one-line :class:`~enas.errors.UserError` naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Tuple

from enas.runs.checkpoint import atomic_write_text
from enas.errors import UserError
from shared_model.spaces import Space, get_space, list_spaces, space_for_arch, space_for_json
from shared_model.zoo import ZOO, get_genotype

GENOTYPE_FILE = "genotype.json"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _space(name: Any, where: Path) -> Space:
    try:
        return get_space(str(name))
    except ValueError as exc:
        raise UserError(f"{where}: {_one_line(exc)}") from None


def _run_space(folder: Path) -> Optional[str]:
    """``model.space`` of a run folder's config.json, if it has one."""
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        space = data.get("model", {}).get("space")
    except (OSError, ValueError, AttributeError):
        return None
    return space if isinstance(space, str) else None


def load_arch_file(path: Path, space_name: Optional[str] = None) -> Tuple[Space, Any]:
    """Read an architecture JSON file of any registered space.

    Args:
        path: the file.
        space_name: the space to read it with (default: ``"space"`` in the file,
            else the space whose fields the file has).

    Raises:
        UserError: unreadable file, invalid JSON, or an invalid architecture.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read genotype file {path}: {_one_line(getattr(exc, 'strerror', None) or exc)}") \
            from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # also over-long ints and too deep nesting
        raise UserError(f"genotype file {path} is not valid JSON: {_one_line(exc)}") from None
    if isinstance(data, dict) and "space" in data:
        space_name = data["space"]
        data = {k: v for k, v in data.items() if k != "space"}
    if isinstance(data, dict) and "genotype" in data and "normal" not in data:
        data = data["genotype"]  # e.g. result.json or a checkpoint-style wrapper
    space = _space(space_name, path) if space_name is not None else space_for_json(data)
    try:
        return space, space.arch_from_json(data)
    except ValueError as exc:
        raise UserError(f"genotype file {path}: {_one_line(exc)}") from None


def load_genotype_file(path: Path) -> Any:
    """Read an architecture JSON file (see :func:`load_arch_file`); returns the architecture."""
    return load_arch_file(path)[1]


def resolve_genotype(arg: str) -> Tuple[Any, str]:
    """Turn a GENOTYPE argument into an architecture and where it came from (see :func:`resolve_arch`)."""
    _, arch, source = resolve_arch(arg)
    return arch, source


def resolve_arch(arg: str) -> Tuple[Space, Any, str]:
    """Turn a GENOTYPE argument into its space, the architecture and where it came from.

    Args:
        arg: a zoo name, a genotype JSON file or a run folder.

    Returns:
        ``(space, arch, source)``; ``source`` is ``"zoo:NAME"`` or the file path used.

    Raises:
        UserError: unknown name, missing or malformed file, or a run folder
            without ``genotype.json``.
    """
    arg = str(arg)
    path = Path(arg).expanduser()
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError:  # e.g. "File name too long": a 24-layer macro arc is 600 characters
        is_dir = is_file = False
    if is_dir:
        candidate = path / GENOTYPE_FILE
        if candidate.is_file():
            return (*load_arch_file(candidate, _run_space(path)), str(candidate))
        if (path / "checkpoints" / "last.pt").is_file() or (path / "config.json").is_file():
            raise UserError(f"run folder {path} has no {GENOTYPE_FILE}; run `enas derive {path}` first")
        raise UserError(f"{path} is a folder but neither a run folder nor holds a {GENOTYPE_FILE}")
    if is_file:
        return (*load_arch_file(path), str(path))
    for name in list_spaces():
        space = get_space(name)
        if space.claims_string(arg):
            try:
                return space, space.arch_from_string(arg), f"arch:{arg}"
            except ValueError as exc:
                raise UserError(f"{name} architecture {arg!r}: {_one_line(exc)}") from None
    try:
        genotype = get_genotype(arg)
    except ValueError:
        if path.suffix.lower() == ".json" or "/" in arg or "\\" in arg:
            raise UserError(f"genotype file not found: {path}") from None
        raise UserError(f"unknown genotype {arg!r}: not a zoo name ({', '.join(ZOO)}), "
                        "a genotype JSON file or a run folder") from None
    name = next(n for n, g in ZOO.items() if g is genotype)
    return space_for_arch(genotype), genotype, f"zoo:{name}"


def write_genotype(path: str | Path, genotype: Any) -> Path:
    """Write an architecture as indented JSON (its space's form), atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, genotype.to_json(indent=1) + "\n")
    return path
