"""The cell search spaces ``micro`` (ENAS) and ``darts`` (DARTS): decisions, decoding, networks.

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
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import torch

from shared_model.child import ChildNetwork
from shared_model.cost_blocks import Block, NetSpec
from shared_model.genotype import CELL_TYPES, Genotype, GenotypeError, loose_ends
from shared_model.ops import DARTS_OPS, ENAS_MICRO_OPS, OPS, op_info
from shared_model.spaces import cell_cost
from shared_model.spaces.base import CellGraph, Decision, Space
from shared_model.spaces.registry import get_space, register_space
from shared_model.supernet import MixedArch, Supernet

CONCAT_RULES = ("loose_ends", "all")


@dataclass(frozen=True)
class SearchSpace(Space):
    """A DARTS-style cell search space (normal + reduction cell, two inputs per cell).

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

    arch_type = Genotype
    json_fields = ("normal", "normal_concat", "reduce", "reduce_concat")

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
        """Ops a policy may choose (``none`` excluded: a zero op only exists as a DARTS candidate)."""
        return tuple(op for op in self.ops if op_info(op).kind != "zero")

    @property
    def policy_ops(self) -> Tuple[str, ...]:
        return self.sample_ops

    @property
    def enas_network(self) -> bool:
        """Loose-end outputs vary in width: only the ENAS conv output fits them (micro)."""
        return self.concat == "loose_ends"

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

    # -- networks -------------------------------------------------------------
    def check_search(self, mixing: bool, cell_output: str = "conv", **options: Any) -> None:
        if cell_output == "concat" and self.concat != "all" and not mixing:
            # Sampled loose-end concat lists vary in length; a concat output needs a fixed width.
            raise ValueError(f"model.cell_output 'concat' needs every node in the output, but the "
                             f"{self.name} space outputs the loose ends; use 'conv'")

    def build_supernet(self, channels: int, layers: int, num_classes: int, in_channels: int = 3,
                       image_size: int = 32, **options: Any) -> Supernet:
        """The shared-weight supernet (:class:`~shared_model.supernet.Supernet`) of this space.

        Options: ``stem_multiplier``, ``auxiliary``, ``dropout``, ``cell_output``.
        """
        cell_output = options.pop("cell_output", "conv")
        return Supernet(self.ops, self.num_nodes, channels, layers, num_classes, in_channels=in_channels,
                        image_size=image_size, cell_output=cell_output,
                        # Micro semantics: an unread cell input is a loose end too (official ENAS).
                        loose_inputs=cell_output == "conv" and self.concat == "loose_ends", **options)

    def build_child(self, arch: Genotype, channels: int, layers: int, num_classes: int, in_channels: int = 3,
                    image_size: int = 32, **options: Any) -> ChildNetwork:
        """The DARTS/ENAS fixed network (:class:`~shared_model.child.ChildNetwork`); options as its arguments."""
        options.pop("sep_as_conv", None)  # a macro-network option
        return ChildNetwork(arch, C=channels, layers=layers, num_classes=num_classes, in_channels=in_channels,
                            image_size=image_size, **options)

    def cost_blocks(self, arch: Genotype, spec: NetSpec) -> List[Block]:
        return cell_cost.cell_blocks(arch, spec)

    def cost_cover(self, spec: NetSpec) -> Iterable[Genotype]:
        return cell_cost.cover(self.num_nodes, self.sample_ops, self.concat_for, self.distinct_inputs)

    def mixing_cost_blocks(self, spec: NetSpec) -> Dict[str, List[List[List[Block]]]]:
        return cell_cost.mixing_blocks(self.edges(), self.ops, spec)

    # -- DARTS ----------------------------------------------------------------
    def mixing_shapes(self) -> Dict[str, Tuple[int, int]]:
        return {cell: (len(self.edges()), len(self.ops)) for cell in CELL_TYPES}

    @property
    def mixing_ops(self) -> Tuple[str, ...]:
        return self.ops

    def mixing_edges(self) -> List[Tuple[int, int]]:
        return self.edges()

    def mixed_arch(self, weights: Dict[str, torch.Tensor]) -> MixedArch:
        return MixedArch(weights["normal"], weights["reduce"])

    def derive_choices(self, tables: Dict[str, List[List[float]]]) -> Dict[str, List[Dict[str, Any]]]:
        """Per node the two edges with the largest non-``none`` weight, strongest first.

        Equal strengths keep the lower input index and equal op weights the
        earlier op, as the stable sort and strict ``>`` of the DARTS code do
        (``model_search.Network.genotype``). ``none`` is never chosen.
        """
        candidates = [k for k, op in enumerate(self.ops) if op_info(op).kind != "zero"]
        out: Dict[str, List[Dict[str, Any]]] = {}
        for cell in CELL_TYPES:
            table, kept_edges, start = tables[cell], [], 0
            for node in range(2, self.num_nodes + 2):
                rows = table[start:start + node]  # one row per input 0..node-1
                start += node
                best_ops = []
                for row in rows:
                    k_best = candidates[0]
                    for k in candidates[1:]:
                        if row[k] > row[k_best]:
                            k_best = k
                    best_ops.append(k_best)
                # Stable sort on the negated strength: ties keep the lower input index.
                for j in sorted(range(node), key=lambda j: -rows[j][best_ops[j]])[:2]:
                    k = best_ops[j]
                    kept_edges.append({"node": node, "input": j, "op": self.ops[k], "weight": rows[j][k]})
            out[cell] = kept_edges
        return out

    def derive(self, tables: Dict[str, List[List[float]]]) -> Genotype:
        """The DARTS genotype of softmaxed weights (concat by the space's rule)."""
        choices = self.derive_choices(tables)
        cells = {c: tuple((str(e["op"]), int(e["input"])) for e in choices[c]) for c in CELL_TYPES}
        return Genotype(cells["normal"], self.concat_for(cells["normal"]),
                        cells["reduce"], self.concat_for(cells["reduce"]))

    # -- presentation -----------------------------------------------------------
    def describe(self, arch: Genotype) -> List[str]:
        lines = []
        for cell in CELL_TYPES:
            desc = describe_cell(arch, cell)
            lines.append(f"{cell} cell ({len(desc['nodes'])} nodes):")
            lines += [f"  {node['text']}" for node in desc["nodes"]]
            lines.append(f"  {desc['output']}")
        return lines

    def describe_json(self, arch: Genotype) -> Dict[str, Any]:
        return {"cells": {cell: describe_cell(arch, cell) for cell in CELL_TYPES}}

    def graphs(self, arch: Genotype) -> Dict[str, CellGraph]:
        return {cell: genotype_graph(arch, cell) for cell in CELL_TYPES}


def genotype_graph(genotype: Genotype, cell: str) -> CellGraph:
    """One cell of a genotype as a drawable graph; computed nodes are labelled as ``describe``
    numbers them, ``node 2`` .. ``node n+1`` (the genotype's input indices)."""
    entries, concat = genotype.cell(cell)
    n = len(entries) // 2
    labels = ["c_{k-2}", "c_{k-1}"] + [_state_name(i + 2) for i in range(n)] + ["c_{k}"]
    edges: List[Tuple[int, int, Any]] = [(inp, k // 2 + 2, op) for k, (op, inp) in enumerate(entries)]
    edges += [(c, n + 2, None) for c in concat]
    return CellGraph("normal cell" if cell == "normal" else "reduction cell", labels,
                     ["input"] * 2 + ["node"] * n + ["output"], edges)


def _state_name(index: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(index, f"node {index}")


def describe_cell(genotype: Genotype, cell_type: str) -> Dict[str, Any]:
    """Per-node formulas of one cell; node indices are the genotype's (inputs 0, 1; nodes from 2)."""
    entries, concat = genotype.cell(cell_type)
    nodes = []
    for k in range(0, len(entries), 2):
        (op_a, in_a), (op_b, in_b) = entries[k], entries[k + 1]
        nodes.append({"node": k // 2 + 2, "inputs": [[op_a, in_a], [op_b, in_b]],
                      "text": f"node {k // 2 + 2} = {op_a}({_state_name(in_a)}) + {op_b}({_state_name(in_b)})"})
    return {"nodes": nodes, "concat": list(concat),
            "output": "c_{k} = concat(" + ", ".join(_state_name(c) for c in concat) + ")"}


@register_space("micro")
def micro_space(num_nodes: int | None = None, ops: Sequence[str] | None = None) -> SearchSpace:
    """ENAS micro (Pham et al. 2018, Sec. 2.3): 5 nodes, the 5 ENAS ops, loose-end concat."""
    return SearchSpace("micro", num_nodes or 5, tuple(ops or ENAS_MICRO_OPS), "loose_ends", False)


@register_space("darts")
def darts_space(num_nodes: int | None = None, ops: Sequence[str] | None = None) -> SearchSpace:
    """DARTS (Liu et al. 2019, Sec. 2.1): 4 nodes, the 8 DARTS ops with ``none``, concat of all
    nodes, two distinct inputs per node."""
    return SearchSpace("darts", num_nodes or 4, tuple(ops or DARTS_OPS), "all", True)


def make_space(name: str, num_nodes: int | None = None, ops: Sequence[str] | None = None) -> Space:
    """Build a registered space, optionally with another node count or op list (cell spaces)."""
    return get_space(name, num_nodes=num_nodes, ops=ops)
