"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020) as a registered space.

One cell type, 4 nodes, 6 edges, 5 ops per edge including ``none`` (a real
choice here: it removes the edge), ``5 ** 6 = 15,625`` cells. The model code
is :mod:`shared_model.nb201` (supernet, fixed network) and
:mod:`shared_model.nb201_arch` (the frozen :class:`NB201Arch`); this module
only maps the space contract onto them.

* Decisions: one ``"op"`` decision per edge in the order of the architecture
  string, ``(1,0), (2,0), (2,1), (3,0), (3,1), (3,2)``; cell ``"cell"``, node
  ``target - 1``, slot ``source``. There are no input decisions: every edge
  exists, ``none`` switches it off.
* ``layers`` of the network builders is the number of cells per stage N
  (benchmark: 5, so 15 cells and 2 residual blocks); ``channels`` is C (16).
* DARTS: one ``(6, 5)`` mixing matrix for the single cell type; derive is the
  argmax over *all* ops of every edge, ``none`` included, as the official
  NAS-Bench-201 DARTS (``TinyNetworkDarts.genotype``), ties to the first op.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from shared_model.cost_blocks import HW, Block, NetSpec, half, op_block, shape
from shared_model.nb201 import NB201Network, NB201Supernet
from shared_model.nb201_arch import EDGES, NB201_OPS, NUM_EDGES, NUM_NODES, NB201Arch
from shared_model.spaces.base import CellGraph, Decision, Space
from shared_model.spaces.registry import register_space

#: The one cell type of the space (the key of its mixing weights and drawings).
CELL = "cell"

# Options of the cell spaces' networks that the NAS-Bench-201 skeleton has no place for.
_IGNORED = ("stem_multiplier", "cell_output", "drop_path_depth_scaled", "aux_position", "final_relu",
            "drop_path_exempt", "base_conv", "classifier_bias", "aux_same_padding", "bn_eps",
            "aux_trainable", "loose_inputs", "sep_as_conv")


def _check_options(options: Dict[str, Any]) -> None:
    # The benchmark network has no auxiliary head, no dropout and no drop path (Sec. 2.3).
    for key in options:
        if key not in _IGNORED + ("auxiliary", "dropout", "drop_path_prob"):
            raise ValueError(f"the nb201 network takes no option {key!r}")
    if options.get("auxiliary"):
        raise ValueError("the nb201 network has no auxiliary head; set model.auxiliary false")
    if options.get("dropout", 0.0) or options.get("drop_path_prob", 0.0):
        raise ValueError("the nb201 network has no dropout or drop path; set model.dropout and "
                         "model.drop_path_prob to 0")


class NB201Space(Space):
    """NAS-Bench-201: a policy picks one of 5 ops on each of the 6 edges of the one cell."""

    name = "nb201"
    arch_type = NB201Arch
    distinct_inputs = False
    json_fields = ("arch",)
    min_layers = 1
    layers_meaning = "cells per stage; the benchmark has 5"

    @property
    def decisions(self) -> Tuple[Decision, ...]:
        return tuple(Decision(CELL, target - 1, source, "op", len(NB201_OPS)) for target, source in EDGES)

    @property
    def policy_ops(self) -> Tuple[str, ...]:
        return NB201_OPS

    def decode(self, actions: Sequence[int]) -> NB201Arch:
        return NB201Arch.from_actions([int(a) for a in actions])

    def encode(self, arch: NB201Arch) -> List[int]:
        if not isinstance(arch, NB201Arch):
            raise ValueError(f"expected an NB201Arch, got {type(arch).__name__}")
        return list(arch.actions())

    def size(self) -> int:
        return len(NB201_OPS) ** NUM_EDGES  # 15,625

    # -- networks -------------------------------------------------------------
    def search_overrides(self, preset: str) -> Dict[str, Any]:
        """Config defaults of a search on this space: the benchmark's C 16, N 5 (quick: C 8, N 1),
        and no auxiliary head or dropout, which its skeleton does not have."""
        out: Dict[str, Any] = {"model.num_nodes": None, "model.auxiliary": False, "model.dropout": 0.0}
        if preset == "quick":
            return {**out, "model.channels": 8, "model.layers": 1}
        return {**out, "model.channels": 16, "model.layers": 5}

    default_train_preset = "nb201"

    def train_overrides(self, preset: str) -> Dict[str, Any]:
        """The benchmark network has no auxiliary head, dropout or drop path (Sec. 2.3)."""
        out: Dict[str, Any] = {"model.auxiliary": False, "model.drop_path_prob": 0.0, "model.dropout": 0.0}
        if preset == "quick":
            out["model.layers"] = 1  # one cell per stage: the quick preset's minute on a CPU
        elif preset != "nb201":
            out.update({"model.channels": 16, "model.layers": 5})
        return out

    def build_supernet(self, channels: int, layers: int, num_classes: int, in_channels: int = 3,
                       image_size: int = 32, **options: Any) -> NB201Supernet:
        """The NB201 supernet, ``layers`` cells per stage; an aux head or dropout is refused."""
        _check_options(options)
        return NB201Supernet(channels, layers, num_classes, in_channels, image_size)

    def build_child(self, arch: NB201Arch, channels: int, layers: int, num_classes: int, in_channels: int = 3,
                    image_size: int = 32, **options: Any) -> NB201Network:
        """The benchmark network of ``arch``, ``layers`` cells per stage."""
        _check_options(options)
        return NB201Network(arch, channels, layers, num_classes, in_channels, image_size)

    # -- cost -------------------------------------------------------------------
    def _stages(self, spec: NetSpec) -> List[Tuple[int, HW]]:
        """``(C, (H, W))`` of the three stages (each stride-2 block halves H and W, rounding up)."""
        _check_options(dict(spec.options))
        if min(spec.hw) < 4:
            raise ValueError(f"images of {spec.image_size} px are too small for two reductions (need >= 4)")
        out, c, hw = [], spec.channels, spec.hw
        for _ in range(3):
            out.append((c, hw))
            c, hw = 2 * c, half(hw)
        return out

    def cost_blocks(self, arch: NB201Arch, spec: NetSpec) -> List[Block]:
        """Stem, per stage the residual block (stages 2, 3) and N cells, then BN-ReLU, GAP, linear.

        A cell places one ``op`` block per edge that is not ``none``, the sum of each
        node's terms (``add``, two or more terms) and a zero tensor for a node without
        any (``zeros``), as :class:`~shared_model.nb201.NB201Cell` runs it.
        """
        stages = self._stages(spec)
        blocks = [Block("conv_bn", (spec.in_channels, stages[0][0], 3, 1, 1), (shape(spec.in_channels, spec.hw),))]
        for s, (c, hw) in enumerate(stages):
            if s:
                c_prev, hw_prev = stages[s - 1]
                blocks.append(Block("resblock", (c_prev, c), (shape(c_prev, hw_prev),)))
            cell = [op_block(op, c, 1, hw) for op in arch.ops if op != "none"]
            for target in range(1, NUM_NODES):
                terms = sum(arch.ops[EDGES.index((target, src))] != "none" for src in range(target))
                if terms >= 2:
                    cell.append(Block("add", (), (shape(c, hw),) * terms))
                elif terms == 0:
                    cell.append(Block("zeros", (), (shape(c, hw),)))
            blocks += cell * spec.layers
        c, hw = stages[-1]
        blocks.append(Block("head", (c, spec.num_classes, True, "bn_relu"), (shape(c, hw),)))
        return blocks

    def cost_cover(self, spec: NetSpec) -> Iterable[NB201Arch]:
        """One op on every edge, for each op: every op at every stage, every node sum, zeros."""
        return [NB201Arch.from_ops([op] * NUM_EDGES) for op in NB201_OPS]

    def mixing_cost_blocks(self, spec: NetSpec) -> Dict[str, List[List[List[Block]]]]:
        stages = self._stages(spec)
        return {CELL: [[[] if op == "none" else [op_block(op, c, 1, hw) for c, hw in stages] * spec.layers
                        for op in NB201_OPS] for _ in EDGES]}

    # -- DARTS ----------------------------------------------------------------
    def mixing_shapes(self) -> Dict[str, Tuple[int, int]]:
        return {CELL: (NUM_EDGES, len(NB201_OPS))}

    @property
    def mixing_ops(self) -> Tuple[str, ...]:
        return NB201_OPS

    def mixing_edges(self) -> List[Tuple[int, int]]:
        return list(EDGES)

    def mixed_arch(self, weights: Dict[str, torch.Tensor]) -> torch.Tensor:
        return weights[CELL]  # (6, 5)

    def derive_choices(self, tables: Dict[str, List[List[float]]]) -> Dict[str, List[Dict[str, Any]]]:
        chosen = []
        for (target, source), row in zip(EDGES, tables[CELL]):
            best = 0
            for k in range(1, len(row)):
                if row[k] > row[best]:  # strict: ties keep the first op, as torch's argmax
                    best = k
            chosen.append({"node": target, "input": source, "op": NB201_OPS[best], "weight": row[best]})
        return {CELL: chosen}

    def derive(self, tables: Dict[str, List[List[float]]]) -> NB201Arch:
        return NB201Arch.from_ops([c["op"] for c in self.derive_choices(tables)[CELL]])

    # -- presentation -----------------------------------------------------------
    def describe(self, arch: NB201Arch) -> List[str]:
        return [arch.to_string()] + arch.describe() + [f"output = node {NUM_NODES - 1}"]

    def claims_string(self, text: str) -> bool:
        return text.startswith("|")

    def arch_from_string(self, text: str) -> NB201Arch:
        """The official string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        return NB201Arch.from_string(text)

    def describe_json(self, arch: NB201Arch) -> Dict[str, Any]:
        return {"arch": arch.to_string(), "nodes": arch.describe()}

    def graphs(self, arch: NB201Arch) -> Dict[str, CellGraph]:
        labels = [f"node {i}" for i in range(NUM_NODES)]
        kinds = ["input"] + ["node"] * (NUM_NODES - 2) + ["output"]
        edges: List[Tuple[int, int, Optional[str]]] = [
            (source, target, op) for (target, source), op in zip(EDGES, arch.ops) if op != "none"]
        return {CELL: CellGraph("NAS-Bench-201 cell", labels, kinds, edges)}


@register_space("nb201")
def nb201_space() -> NB201Space:
    """NAS-Bench-201 (Dong & Yang 2020, Sec. 2.1); takes no overrides."""
    return NB201Space()
