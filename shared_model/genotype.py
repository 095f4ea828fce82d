"""The architecture contract between search, derive, retrain and export.

A :class:`Genotype` is the DARTS namedtuple (Liu et al. 2019, ``genotypes.py``)
made frozen and validated: for each cell type a list of ``(op, input)`` pairs,
two per computed node, and the list of node indices whose outputs are
concatenated. Index 0 is the output of cell k-2, index 1 of cell k-1 and
computed node ``i`` (0-based) has index ``i + 2``.

ENAS micro cells (Pham et al. 2018, Sec. 2.3) are ordinary genotypes with five
nodes whose concat list holds the "loose ends". :meth:`Genotype.to_arc` and
:meth:`Genotype.from_arc` convert to and from the official integer encoding,
four integers ``in_a op_a in_b op_b`` per node, normal cell then reduction cell.
"""
from __future__ import annotations

import json
import reprlib
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, Tuple

from shared_model.ops import ENAS_MICRO_OPS, OPS

Entry = Tuple[str, int]
CELL_TYPES = ("normal", "reduce")
_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


class GenotypeError(ValueError):
    """A genotype, its JSON or its arc string is malformed."""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 40, 40, 6, 6


def _show(value: Any) -> str:
    """A short repr for error messages: hostile input may be huge, deeply nested or a
    more-than-4300-digit int (whose repr raises ValueError)."""
    try:
        return _REPR.repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__}>"


def loose_ends(entries: Sequence[Entry]) -> Tuple[int, ...]:
    """Computed nodes that no node of the cell reads (ENAS Sec. 2.3).

    Args:
        entries: ``(op, input)`` pairs, two per node.

    Returns:
        Sorted node indices (>= 2); never empty because the last node is unused.
    """
    num_nodes = len(entries) // 2
    used = {inp for _, inp in entries}
    return tuple(i for i in range(2, num_nodes + 2) if i not in used)


def _check_cell(name: str, entries: Any, concat: Any) -> Tuple[Tuple[Entry, ...], Tuple[int, ...]]:
    if not isinstance(entries, (list, tuple)):
        raise GenotypeError(f"{name}: expected a list of [op, input] pairs, got {type(entries).__name__}")
    if not entries or len(entries) % 2:
        raise GenotypeError(f"{name}: needs two [op, input] entries per node, got {len(entries)} entries")
    out = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise GenotypeError(f"{name}[{k}]: expected [op, input], got {_show(entry)}")
        op, inp = entry
        if not isinstance(op, str):
            raise GenotypeError(f"{name}[{k}]: op must be a string, got {_show(op)}")
        if op not in OPS:
            raise GenotypeError(f"{name}[{k}]: unknown op {_show(op)} (known: {', '.join(sorted(OPS))})")
        node_index = k // 2 + 2
        if isinstance(inp, bool) or not isinstance(inp, int):
            raise GenotypeError(f"{name}[{k}]: input must be an integer, got {_show(inp)}")
        if not 0 <= inp < node_index:
            raise GenotypeError(
                f"{name}[{k}]: input {_show(inp)} out of range for node {node_index} (allowed 0..{node_index - 1})")
        out.append((op, inp))
    num_nodes = len(entries) // 2
    cname = name + "_concat"
    if not isinstance(concat, (list, tuple)) or not concat:
        raise GenotypeError(f"{cname}: expected a non-empty list of node indices, got {_show(concat)}")
    for c in concat:
        if isinstance(c, bool) or not isinstance(c, int) or not 2 <= c < num_nodes + 2:
            raise GenotypeError(f"{cname}: {_show(c)} is not a computed node index (allowed 2..{num_nodes + 1})")
    if list(concat) != sorted(set(concat)):
        raise GenotypeError(f"{cname}: indices must be increasing and unique, got {_show(list(concat))}")
    return tuple(out), tuple(concat)


@dataclass(frozen=True)
class Genotype:
    """A validated pair of cells; construction raises :class:`GenotypeError`."""

    normal: Tuple[Entry, ...]
    normal_concat: Tuple[int, ...]
    reduce: Tuple[Entry, ...]
    reduce_concat: Tuple[int, ...]

    def __post_init__(self) -> None:
        for cell in CELL_TYPES:
            entries, concat = _check_cell(cell, getattr(self, cell), getattr(self, cell + "_concat"))
            object.__setattr__(self, cell, entries)
            object.__setattr__(self, cell + "_concat", concat)

    def cell(self, cell_type: str) -> Tuple[Tuple[Entry, ...], Tuple[int, ...]]:
        """Return ``(entries, concat)`` of ``"normal"`` or ``"reduce"``."""
        return getattr(self, cell_type), getattr(self, cell_type + "_concat")

    def num_nodes(self, cell_type: str = "normal") -> int:
        return len(getattr(self, cell_type)) // 2

    def ops(self) -> set:
        """Every op name used by either cell."""
        return {op for cell in CELL_TYPES for op, _ in getattr(self, cell)}

    # -- JSON ---------------------------------------------------------------
    def to_dict(self) -> dict:
        """The DARTS namedtuple fields as JSON-ready lists."""
        return {
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "Genotype":
        """Build from the JSON form; the four DARTS fields, nothing else."""
        if not isinstance(data, dict):
            raise GenotypeError(f"genotype must be a JSON object, got {type(data).__name__}")
        missing = [f for f in _FIELDS if f not in data]
        extra = sorted(set(data) - set(_FIELDS), key=str)
        if missing:
            raise GenotypeError(f"genotype is missing field(s): {', '.join(missing)}")
        if extra:
            names = ", ".join(f if f.isidentifier() else _show(f) for f in map(str, extra))
            raise GenotypeError(f"genotype has unknown field(s): {names}")
        return cls(**{f: data[f] for f in _FIELDS})

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # also over-long ints and too deep nesting
            raise GenotypeError(f"genotype is not valid JSON: {' '.join(str(exc).split())}") from None
        return cls.from_dict(data)

    # -- official ENAS arc strings -----------------------------------------
    def to_arc(self, ops: Sequence[str] = ENAS_MICRO_OPS) -> str:
        """Encode as the official ENAS arc: ``in_a op_a in_b op_b`` per node.

        Raises:
            GenotypeError: an op is outside ``ops`` or a concat list is not the
                loose ends (the arc format cannot express it).
        """
        ints = []
        for cell in CELL_TYPES:
            entries, concat = self.cell(cell)
            if concat != loose_ends(entries):
                raise GenotypeError(
                    f"{cell}_concat {list(concat)} is not the loose ends {list(loose_ends(entries))}; "
                    "the ENAS arc format cannot express it")
            for op, inp in entries:
                if op not in ops:
                    raise GenotypeError(f"{cell}: op {op!r} has no index in the arc op list {list(ops)}")
                ints += [inp, list(ops).index(op)]
        return " ".join(str(i) for i in ints)

    @classmethod
    def from_arc(cls, arc: str | Iterable[int], ops: Sequence[str] = ENAS_MICRO_OPS) -> "Genotype":
        """Decode an official arc (normal then reduce, same node count).

        Accepts a string of integers or ``"normal: ... / reduce: ..."`` text
        as printed in the ENAS scripts; concat lists are the loose ends.
        """
        if isinstance(arc, str):
            tokens = arc.replace("normal:", " ").replace("reduce:", " ").replace("/", " ").split()
            try:
                ints = [int(t) for t in tokens]
            except ValueError:
                raise GenotypeError(f"arc must be whitespace-separated integers, got {_show(arc)}") from None
        else:
            ints = list(arc)
            bad = [v for v in ints if isinstance(v, bool) or not isinstance(v, int)]
            if bad:
                raise GenotypeError(f"arc must hold integers only, got {_show(bad[0])}")
        if not ints or len(ints) % 8:
            raise GenotypeError(f"arc needs 4 integers per node for both cells (a multiple of 8), got {len(ints)}")
        half = len(ints) // 2
        cells = {}
        for cell, chunk in zip(CELL_TYPES, (ints[:half], ints[half:])):
            entries = []
            for k in range(0, len(chunk), 2):
                inp, op = chunk[k], chunk[k + 1]
                if not 0 <= op < len(ops):
                    raise GenotypeError(f"{cell}: op index {_show(op)} out of range 0..{len(ops) - 1}")
                entries.append((ops[op], inp))
            cells[cell] = entries
        return cls(cells["normal"], loose_ends(cells["normal"]) if _inputs_ok(cells["normal"]) else (),
                   cells["reduce"], loose_ends(cells["reduce"]) if _inputs_ok(cells["reduce"]) else ())

    def __str__(self) -> str:
        return self.to_json()


def _inputs_ok(entries: Sequence[Entry]) -> bool:
    # Defer range errors to validation, which names the offending entry.
    return all(isinstance(i, int) and 0 <= i < k // 2 + 2 for k, (_, i) in enumerate(entries))
