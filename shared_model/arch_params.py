"""DARTS architecture parameters and the discrete genotype they encode.

The continuous relaxation of DARTS (Liu et al. 2019, Sec. 2.1) gives every
edge ``(i, j)`` of a cell a vector of op logits ``alpha``; the edge computes
``sum_k softmax(alpha)_k * op_k(x)``. One ``(num_edges, num_ops)`` matrix is
shared by all normal cells and one by all reduction cells.

Unlike the official code the logits are registered :class:`~torch.nn.Parameter`
objects, so they are part of ``state_dict`` and move with ``.to(device)``.

:meth:`ArchParameters.derive` is the DARTS discretisation (Sec. 2.4,
``model_search.Network.genotype``): for every node keep the two incoming
edges whose strongest non-``none`` op weight is largest, each with its
strongest non-``none`` op.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from shared_model.genotype import CELL_TYPES, Genotype
from shared_model.spaces import SearchSpace
from shared_model.supernet import MixedArch


class ArchParameters(nn.Module):
    """Op logits of the normal and reduction cells (DARTS Sec. 2.1).

    Args:
        num_edges: edges per cell (``len(space.edges())``; 14 for 4 nodes).
        num_ops: ops per edge (``len(space.ops)``).
        init_scale: logits start at ``init_scale * randn`` (DARTS: 1e-3).
        generator: CPU generator for the initial values (default: torch's global RNG).
        device: where the parameters live.
    """

    def __init__(self, num_edges: int, num_ops: int, init_scale: float = 1e-3,
                 generator: Optional[torch.Generator] = None,
                 device: Optional[torch.device] = None):
        super().__init__()
        if num_edges < 1 or num_ops < 1:
            raise ValueError(f"need at least one edge and one op, got {num_edges} x {num_ops}")
        self.num_edges, self.num_ops = int(num_edges), int(num_ops)
        shape = (self.num_edges, self.num_ops)
        # Draw on the CPU so a given generator/seed gives the same logits on any device.
        self.alpha_normal = nn.Parameter(
            (init_scale * torch.randn(shape, generator=generator)).to(device))  # (E, K)
        self.alpha_reduce = nn.Parameter(
            (init_scale * torch.randn(shape, generator=generator)).to(device))  # (E, K)

    @classmethod
    def for_space(cls, space: SearchSpace, **kwargs) -> "ArchParameters":
        """Logits shaped for ``space`` (all its edges, all its ops including ``none``)."""
        return cls(len(space.edges()), len(space.ops), **kwargs)

    def alpha(self, cell: str) -> torch.Tensor:
        """The ``(E, K)`` logits of ``"normal"`` or ``"reduce"`` cells."""
        if cell not in CELL_TYPES:
            raise ValueError(f"cell must be one of {CELL_TYPES}, got {cell!r}")
        return self.alpha_normal if cell == "normal" else self.alpha_reduce

    def mixed(self, detach: bool = False) -> MixedArch:
        """Softmax over the ops of every edge, as the supernet's mixing weights.

        Args:
            detach: cut the weights from the logits (the DARTS weight step must
                not back-propagate into ``alpha``).
        """
        normal = F.softmax(self.alpha_normal, dim=-1)  # (E, K)
        reduce = F.softmax(self.alpha_reduce, dim=-1)  # (E, K)
        if detach:
            normal, reduce = normal.detach(), reduce.detach()
        return MixedArch(normal, reduce)

    @torch.no_grad()
    def weights_table(self, cell: str) -> torch.Tensor:
        """Softmaxed ``(E, K)`` weights of a cell type, detached, for logging."""
        return F.softmax(self.alpha(cell).float(), dim=-1)

    def _check_space(self, space: SearchSpace) -> None:
        expected = (len(space.edges()), len(space.ops))
        if (self.num_edges, self.num_ops) != expected:
            raise ValueError(f"architecture parameters are {self.num_edges} x {self.num_ops}, "
                             f"the {space.name} space needs {expected[0]} x {expected[1]}")

    def choices(self, space: SearchSpace, cell: str) -> List[Dict[str, object]]:
        """The kept edges of one cell type, in genotype order.

        Per node the two edges with the largest non-``none`` weight are kept,
        strongest first; equal strengths keep the lower input index and equal
        op weights the earlier op, as the stable sort and strict ``>`` of the
        DARTS code do. ``none`` is never chosen.

        Returns:
            One dict per kept edge: ``node``, ``input``, ``op`` and its softmax ``weight``.
        """
        self._check_space(space)
        table = self.weights_table(cell).cpu().tolist()  # (E, K) python floats: exact ties
        candidates = [k for k, op in enumerate(space.ops) if op != "none"]
        out: List[Dict[str, object]] = []
        start = 0
        for node in range(2, space.num_nodes + 2):
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
            kept = sorted(range(node), key=lambda j: -rows[j][best_ops[j]])[:2]
            for j in kept:
                k = best_ops[j]
                out.append({"node": node, "input": j, "op": space.ops[k], "weight": rows[j][k]})
        return out

    def derive(self, space: SearchSpace) -> Genotype:
        """The DARTS genotype of the current logits (concat by the space's rule)."""
        cells: Dict[str, Tuple[Tuple[str, int], ...]] = {}
        for cell in CELL_TYPES:
            cells[cell] = tuple((str(c["op"]), int(c["input"])) for c in self.choices(space, cell))
        return Genotype(cells["normal"], space.concat_for(cells["normal"]),
                        cells["reduce"], space.concat_for(cells["reduce"]))

    @torch.no_grad()
    def entropy(self, cell: str) -> float:
        """Mean per-edge entropy (nats) of the op distribution: log(K) when uniform."""
        p = self.weights_table(cell)  # (E, K)
        return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())
