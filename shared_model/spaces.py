"""Search-space descriptions: the decisions a policy makes and their decoding.

A cell search space (ENAS Sec. 2.3; DARTS Sec. 2.1) lets every computed node
pick two ``(input, op)`` pairs. A policy (the ENAS controller, a uniform
sampler) only sees the flat list of :class:`Decision` objects, normal cell
first, and returns one integer per decision; :meth:`SearchSpace.decode` turns
those integers into a :class:`~shared_model.genotype.Genotype` and
:meth:`SearchSpace.encode` goes back.

Per node the decision order is ``input_a, op_a, input_b, op_b`` as in the
official ENAS controller. ``none`` is never sampled: it exists only as a
mixing candidate for DARTS, so :attr:`SearchSpace.sample_ops` excludes it.

:attr:`SearchSpace.distinct_inputs` says whether a node's two inputs must
differ: ENAS micro samples them with replacement (Pham et al. 2018, Sec. 2.3),
a DARTS cell keeps two distinct incoming edges per node (Liu et al. 2019,
Sec. 2.4), and Li & Talwalkar (2019) draw them without replacement. Actions
always hold the absolute input index, so :meth:`SearchSpace.decode` and
:meth:`SearchSpace.encode` accept equal inputs in either space: the ENAS
controller, which knows nothing of the rule, may still pick the same input
twice on the DARTS space; the uniform policy honours the rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch

from shared_model.genotype import CELL_TYPES, Genotype, GenotypeError, loose_ends
from shared_model.ops import DARTS_OPS, ENAS_MICRO_OPS, OPS

CONCAT_RULES = ("loose_ends", "all")


@dataclass(frozen=True)
class Decision:
    """One categorical choice of a policy.

    Attributes:
        cell: ``"normal"`` or ``"reduce"``.
        node: 0-based computed node (its genotype index is ``node + 2``).
        slot: 0 for the first ``(input, op)`` pair of the node, 1 for the second.
        kind: ``"input"`` (choose among the ``node + 2`` earlier states) or ``"op"``.
        num_choices: number of categories.
    """

    cell: str
    node: int
    slot: int
    kind: str
    num_choices: int


@dataclass(frozen=True)
class SearchSpace:
    """A cell search space.

    Attributes:
        name: registry name.
        num_nodes: computed nodes per cell (ENAS micro: 5, DARTS: 4).
        ops: the op bank of every edge, in index order (DARTS mixing uses all).
        concat: ``"loose_ends"`` (ENAS) or ``"all"`` (DARTS) output rule.
        distinct_inputs: a node's inputs are drawn without replacement (DARTS,
            Li & Talwalkar) rather than with replacement (ENAS micro).
    """

    name: str
    num_nodes: int
    ops: Tuple[str, ...]
    concat: str = "loose_ends"
    distinct_inputs: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if self.num_nodes < 1:
            raise ValueError(f"a search space needs at least one node, got {self.num_nodes}")
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown op(s) in search space: {', '.join(unknown)}")
        if len(set(self.ops)) != len(self.ops):
            raise ValueError(f"duplicate ops in search space: {list(self.ops)}")
        if not self.sample_ops:
            raise ValueError("a search space needs at least one op other than 'none'")
        if self.concat not in CONCAT_RULES:
            raise ValueError(f"concat must be one of {CONCAT_RULES}, got {self.concat!r}")
        if not isinstance(self.distinct_inputs, bool):
            raise ValueError(f"distinct_inputs must be a bool, got {self.distinct_inputs!r}")

    @property
    def sample_ops(self) -> Tuple[str, ...]:
        """Ops a policy may choose (``none`` excluded)."""
        return tuple(op for op in self.ops if op != "none")

    @property
    def decisions(self) -> Tuple[Decision, ...]:
        out: List[Decision] = []
        for cell in CELL_TYPES:
            for node in range(self.num_nodes):
                for slot in range(2):
                    out.append(Decision(cell, node, slot, "input", node + 2))
                    out.append(Decision(cell, node, slot, "op", len(self.sample_ops)))
        return tuple(out)

    def edges(self) -> List[Tuple[int, int]]:
        """All ``(node_index, input_index)`` pairs of a cell, node-major."""
        return [(i + 2, j) for i in range(self.num_nodes) for j in range(i + 2)]

    def concat_for(self, entries: Sequence[Tuple[str, int]]) -> Tuple[int, ...]:
        """The output nodes of a cell under this space's concat rule."""
        if self.concat == "all":
            return tuple(range(2, self.num_nodes + 2))
        return loose_ends(entries)

    def decode(self, actions: Sequence[int]) -> Genotype:
        """Turn one integer per decision into a genotype."""
        decisions = self.decisions
        if len(actions) != len(decisions):
            raise ValueError(f"expected {len(decisions)} actions, got {len(actions)}")
        cells: Dict[str, List[Tuple[str, int]]] = {c: [] for c in CELL_TYPES}
        for k in range(0, len(decisions), 2):
            d_in, d_op = decisions[k], decisions[k + 1]
            a_in, a_op = int(actions[k]), int(actions[k + 1])
            if not 0 <= a_in < d_in.num_choices or not 0 <= a_op < d_op.num_choices:
                raise ValueError(f"action out of range at decision {k}: ({a_in}, {a_op})")
            cells[d_in.cell].append((self.sample_ops[a_op], a_in))
        return Genotype(cells["normal"], self.concat_for(cells["normal"]),
                        cells["reduce"], self.concat_for(cells["reduce"]))

    def encode(self, genotype: Genotype) -> List[int]:
        """Inverse of :meth:`decode`; the genotype must lie in this space."""
        actions: List[int] = []
        for cell in CELL_TYPES:
            entries, concat = genotype.cell(cell)
            if len(entries) != 2 * self.num_nodes:
                raise GenotypeError(
                    f"{cell} has {len(entries) // 2} nodes; the {self.name} space has {self.num_nodes}")
            if concat != self.concat_for(entries):
                raise GenotypeError(f"{cell}_concat {list(concat)} does not follow the "
                                    f"{self.concat!r} rule of the {self.name} space")
            for op, inp in entries:
                if op not in self.sample_ops:
                    raise GenotypeError(f"{cell}: op {op!r} is not in the {self.name} space")
                actions += [inp, self.sample_ops.index(op)]
        return actions

    def contains(self, genotype: Genotype) -> bool:
        try:
            self.encode(genotype)
        except GenotypeError:
            return False
        return True

    def random_actions(self, generator: torch.Generator | None = None) -> List[int]:
        """Uniform actions over this space (inputs without replacement if :attr:`distinct_inputs`)."""
        actions: List[int] = []
        for d in self.decisions:
            if d.kind == "input" and d.slot == 1 and self.distinct_inputs:
                # Uniform over the other inputs: draw among n - 1, then skip the first input.
                first = actions[-2]
                r = int(torch.randint(d.num_choices - 1, (1,), generator=generator))
                actions.append(r + (r >= first))
            else:
                actions.append(int(torch.randint(d.num_choices, (1,), generator=generator)))
        return actions

    def size(self) -> int:
        """Number of distinct action sequences for the normal + reduce pair."""
        n = 1
        for d in self.decisions:
            distinct = self.distinct_inputs and d.kind == "input" and d.slot == 1
            n *= d.num_choices - 1 if distinct else d.num_choices
        return n


def make_space(name: str, num_nodes: int | None = None, ops: Sequence[str] | None = None) -> SearchSpace:
    """Build a registered space, optionally with another node count or op list.

    ``micro``: ENAS micro (5 nodes, the 5 ENAS ops, loose-end concat).
    ``darts``: DARTS (4 nodes, the 8 DARTS ops with ``none``, concat of all nodes,
    two distinct inputs per node).
    """
    presets = {
        "micro": (5, ENAS_MICRO_OPS, "loose_ends", False),
        "darts": (4, DARTS_OPS, "all", True),
    }
    if name not in presets:
        raise ValueError(f"unknown search space {name!r}; choose from {', '.join(presets)}")
    default_nodes, default_ops, concat, distinct = presets[name]
    return SearchSpace(name, num_nodes or default_nodes, tuple(ops or default_ops), concat, distinct)


SPACE_NAMES = ("micro", "darts")


def enas_op_bias(ops: Sequence[str]) -> Tuple[List[float], List[float]]:
    """Official ENAS op-logit bias init and normal-cell prior for an op list.

    The official micro controller initialises the learnable op bias to 10 for
    the two separable convs and 0 otherwise, and adds a fixed +0.25 / -0.25
    prior in the normal cell (REFERENCE Sec. 2). Generalised by op name: every
    ``sep_conv`` gets the conv values.
    """
    conv = [op.startswith("sep_conv") for op in ops]
    return [10.0 if c else 0.0 for c in conv], [0.25 if c else -0.25 for c in conv]
