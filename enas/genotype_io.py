"""Resolve the GENOTYPE argument of ``enas train`` / ``enas show`` and write genotype files.

A GENOTYPE is one of:

* a zoo name such as ``DARTS_V2`` (case-insensitive, see ``enas genotypes``);
* a JSON file with the four DARTS fields (``normal``, ``normal_concat``,
  ``reduce``, ``reduce_concat``; :meth:`Genotype.to_dict`), or any JSON object
  holding such a dict under ``"genotype"`` (e.g. a retrain run's ``result.json``);
* a run folder: its ``genotype.json`` (written by ``enas derive`` for a search
  run and by ``enas train`` for a retrain run).

Every problem is a one-line :class:`~enas.errors.UserError` naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple

from enas.checkpoint import atomic_write_text
from enas.errors import UserError
from shared_model.genotype import Genotype, GenotypeError
from shared_model.zoo import ZOO, get_genotype

GENOTYPE_FILE = "genotype.json"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_genotype_file(path: Path) -> Genotype:
    """Read a genotype JSON file.

    Raises:
        UserError: unreadable file, invalid JSON, or an invalid genotype.
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
    if isinstance(data, dict) and "genotype" in data and "normal" not in data:
        data = data["genotype"]  # e.g. result.json or a checkpoint-style wrapper
    try:
        return Genotype.from_dict(data)
    except GenotypeError as exc:
        raise UserError(f"genotype file {path}: {_one_line(exc)}") from None


def resolve_genotype(arg: str) -> Tuple[Genotype, str]:
    """Turn a GENOTYPE argument into a genotype and a description of where it came from.

    Args:
        arg: a zoo name, a genotype JSON file or a run folder.

    Returns:
        ``(genotype, source)``; ``source`` is ``"zoo:NAME"`` or the file path used.

    Raises:
        UserError: unknown name, missing or malformed file, or a run folder
            without ``genotype.json``.
    """
    arg = str(arg)
    path = Path(arg).expanduser()
    if path.is_dir():
        candidate = path / GENOTYPE_FILE
        if candidate.is_file():
            return load_genotype_file(candidate), str(candidate)
        if (path / "checkpoints" / "last.pt").is_file() or (path / "config.json").is_file():
            raise UserError(f"run folder {path} has no {GENOTYPE_FILE}; run `enas derive {path}` first")
        raise UserError(f"{path} is a folder but neither a run folder nor holds a {GENOTYPE_FILE}")
    if path.is_file():
        return load_genotype_file(path), str(path)
    try:
        genotype = get_genotype(arg)
    except ValueError:
        if path.suffix.lower() == ".json" or "/" in arg or "\\" in arg:
            raise UserError(f"genotype file not found: {path}") from None
        raise UserError(f"unknown genotype {arg!r}: not a zoo name ({', '.join(ZOO)}), "
                        "a genotype JSON file or a run folder") from None
    name = next(n for n, g in ZOO.items() if g is genotype)
    return genotype, f"zoo:{name}"


def write_genotype(path: str | Path, genotype: Genotype) -> Path:
    """Write ``genotype`` as indented JSON, atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, genotype.to_json(indent=1) + "\n")
    return path
