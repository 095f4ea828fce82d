"""The NAS-Bench-201 cell architecture (Dong & Yang, ICLR 2020, Sec. 2.1).

A NAS-Bench-201 cell is a DAG of four nodes: node 0 is the cell input and node
``j`` (1..3) sums one op applied to every earlier node ``i < j``. That gives six
edges, each carrying one of five ops, so the space holds ``5 ** 6 = 15,625``
cells (6,466 unique up to isomorphism, Sec. 2.1). ``none`` is a real choice
here: it removes the edge, which is how the space expresses sparse cells.

:class:`NB201Arch` is the frozen, validated form. It reads and writes the
official architecture string, in which node groups are joined by ``+`` and
each edge is ``op~source``::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

Parsing is strict so that every accepted string round-trips byte-exactly:
sources must appear in the order ``0..j-1`` within each node group, with no
whitespace or other extra text. Every malformed input raises one
:class:`NB201ArchError` with a one-line message.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Iterator, List, Sequence, Tuple

from shared_model.arch_json import check_fields, check_text, load_json
from shared_model.genotype import _show

#: The NAS-Bench-201 op set in the official index order (Sec. 2.1).
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

NUM_NODES = 4  # node 0 = cell input, nodes 1..3 computed

#: The six edges as ``(target, source)``, in the order of the architecture string.
EDGES: Tuple[Tuple[int, int], ...] = tuple((j, i) for j in range(1, NUM_NODES) for i in range(j))

#: ``(target, source)`` -> position in :data:`EDGES`.
EDGE_INDEX = {edge: k for k, edge in enumerate(EDGES)}

NUM_EDGES = len(EDGES)
NUM_ARCHS = len(NB201_OPS) ** NUM_EDGES

# A real architecture string is under 120 characters and its JSON under 140;
# the caps only stop hostile input from costing time before it is rejected.
_MAX_STRING = 1_000
_MAX_JSON = 10_000


class NB201ArchError(ValueError):
    """A NAS-Bench-201 architecture, its string, its actions or its JSON is malformed."""


def _check_ops(ops: Any) -> Tuple[str, ...]:
    if isinstance(ops, (str, bytes)) or not isinstance(ops, (list, tuple)):
        raise NB201ArchError(f"ops: expected a list of {NUM_EDGES} op names, got {type(ops).__name__}")
    if len(ops) != NUM_EDGES:
        raise NB201ArchError(f"ops: expected {NUM_EDGES} op names (one per edge), got {len(ops)}")
    for k, op in enumerate(ops):
        if not isinstance(op, str) or op not in NB201_OPS:
            target, source = EDGES[k]
            raise NB201ArchError(
                f"ops[{k}] (edge {source}->{target}): unknown op {_show(op)} (known: {', '.join(NB201_OPS)})")
    return tuple(ops)


@dataclass(frozen=True)
class NB201Arch:
    """One NAS-Bench-201 cell; construction raises :class:`NB201ArchError`.

    Attributes:
        ops: six op names from :data:`NB201_OPS`, one per edge in :data:`EDGES`
            order (``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``).
    """

    ops: Tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", _check_ops(self.ops))

    # -- constructors ------------------------------------------------------
    @classmethod
    def from_ops(cls, ops: Sequence[str]) -> "NB201Arch":
        """Build from six op names in :data:`EDGES` order."""
        return cls(ops)

    @classmethod
    def from_actions(cls, actions: Sequence[int]) -> "NB201Arch":
        """Build from one index into :data:`NB201_OPS` per edge (``none`` is 0)."""
        if isinstance(actions, (str, bytes)) or not isinstance(actions, (list, tuple)):
            raise NB201ArchError(
                f"actions: expected a list of {NUM_EDGES} integers, got {type(actions).__name__}")
        if len(actions) != NUM_EDGES:
            raise NB201ArchError(f"actions: expected {NUM_EDGES} integers (one per edge), got {len(actions)}")
        for k, a in enumerate(actions):
            if isinstance(a, bool) or not isinstance(a, int):
                raise NB201ArchError(f"actions[{k}]: expected an integer, got {_show(a)}")
            if not 0 <= a < len(NB201_OPS):
                raise NB201ArchError(f"actions[{k}]: op index {_show(a)} out of range 0..{len(NB201_OPS) - 1}")
        return cls(tuple(NB201_OPS[a] for a in actions))

    @classmethod
    def from_string(cls, text: Any) -> "NB201Arch":
        """Parse the official string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        check_text(text, "architecture string", NB201ArchError, _MAX_STRING)
        groups = text.split("+")
        if len(groups) != NUM_NODES - 1:
            raise NB201ArchError(
                f"architecture string needs {NUM_NODES - 1} '+'-separated node groups, got {len(groups)}: "
                f"{_show(text)}")
        ops: List[str] = []
        for target, group in enumerate(groups, start=1):
            if len(group) < 2 or group[0] != "|" or group[-1] != "|":
                raise NB201ArchError(f"node {target}: group must look like |op~0|...|, got {_show(group)}")
            items = group[1:-1].split("|")
            if len(items) != target:
                raise NB201ArchError(
                    f"node {target}: needs {target} edge(s) (one per earlier node), got {len(items)}: "
                    f"{_show(group)}")
            for source, item in enumerate(items):
                op, sep, src = item.partition("~")
                if not sep:
                    raise NB201ArchError(f"node {target}: edge must be op~source, got {_show(item)}")
                if op not in NB201_OPS:
                    raise NB201ArchError(
                        f"node {target}: unknown op {_show(op)} (known: {', '.join(NB201_OPS)})")
                # Exact text, not int(): int() would accept "01", " 1" and "+1", which do not round-trip.
                if src != str(source):
                    raise NB201ArchError(
                        f"node {target}: edge {source + 1} of {target} must read node {source}, "
                        f"got source {_show(src)}")
                ops.append(op)
        return cls(tuple(ops))

    # -- encodings ---------------------------------------------------------
    def to_string(self) -> str:
        """The official architecture string (inverse of :meth:`from_string`)."""
        groups = []
        for target in range(1, NUM_NODES):
            edges = "|".join(f"{self.ops[EDGE_INDEX[(target, s)]]}~{s}" for s in range(target))
            groups.append(f"|{edges}|")
        return "+".join(groups)

    def actions(self) -> Tuple[int, ...]:
        """One index into :data:`NB201_OPS` per edge (inverse of :meth:`from_actions`)."""
        return tuple(NB201_OPS.index(op) for op in self.ops)

    def op(self, target: int, source: int) -> str:
        """The op on edge ``source -> target``."""
        try:
            return self.ops[EDGE_INDEX[(target, source)]]
        except KeyError:
            raise NB201ArchError(f"no edge {_show(source)}->{_show(target)} (need 0 <= source < target <= 3)") \
                from None

    def describe(self) -> List[str]:
        """Readable lines ``node j = op(node i) + ...``; ``none`` edges are left out."""
        lines = []
        for target in range(1, NUM_NODES):
            terms = [f"{self.op(target, s)}(node {s})" for s in range(target) if self.op(target, s) != "none"]
            lines.append(f"node {target} = {' + '.join(terms) if terms else 'zero (every input is none)'}")
        return lines

    # -- JSON ---------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"arch": self.to_string()}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "NB201Arch":
        """Build from ``{"arch": "<string>"}``, nothing else."""
        check_fields(data, ("arch",), "NB201 architecture", NB201ArchError)
        return cls.from_string(data["arch"])

    @classmethod
    def from_json(cls, text: Any) -> "NB201Arch":
        return cls.from_dict(load_json(text, "NB201 architecture", NB201ArchError, _MAX_JSON))

    def __str__(self) -> str:
        return self.to_string()


def all_archs() -> Iterator[NB201Arch]:
    """Every one of the 15,625 cells, in :meth:`NB201Arch.actions` lexicographic order."""
    for actions in itertools.product(range(len(NB201_OPS)), repeat=NUM_EDGES):
        yield NB201Arch(tuple(NB201_OPS[a] for a in actions))
