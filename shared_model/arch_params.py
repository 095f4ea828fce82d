"""DARTS architecture parameters: one logit matrix per mixed cell type of a space.

The continuous relaxation of DARTS (Liu et al. 2019, Sec. 2.1) gives every
edge ``(i, j)`` of a cell a vector of op logits ``alpha``; the edge computes
``sum_k softmax(alpha)_k * op_k(x)``. One ``(num_edges, num_ops)`` matrix is
shared by all cells of a type: the cell spaces have ``normal`` and
``reduce``, NAS-Bench-201 one ``cell``. The layout (shapes, which edge a row
is, how weights become the supernet's ``arch`` and how they discretise) is the
space's: :meth:`ArchParameters.for_space` asks it.

Unlike the official code the logits are registered :class:`~torch.nn.Parameter`
objects (``alpha_<cell>``), so they are part of ``state_dict`` and move with
``.to(device)``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from shared_model.genotype import CELL_TYPES
from shared_model.spaces import Space
from shared_model.supernet import MixedArch


def _cell_mixer(weights: Dict[str, torch.Tensor]) -> MixedArch:
    return MixedArch(weights["normal"], weights["reduce"])


class ArchParameters(nn.Module):
    """Op logits per mixed cell type (DARTS Sec. 2.1).

    Args:
        num_edges, num_ops: the shape of the ``normal`` and ``reduce`` logits
            (cell spaces; ignored when ``shapes`` is given).
        init_scale: logits start at ``init_scale * randn`` (DARTS: 1e-3).
        generator: CPU generator for the initial values (default: torch's global RNG).
        device: where the parameters live.
        shapes: cell type -> ``(num_edges, num_ops)``, drawn in this order.
        mixer: softmaxed weights per cell type -> the supernet's ``arch``
            (default: :class:`~shared_model.supernet.MixedArch` of normal, reduce).
    """

    def __init__(self, num_edges: int = 0, num_ops: int = 0, init_scale: float = 1e-3,
                 generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None,
                 shapes: Optional[Mapping[str, Tuple[int, int]]] = None,
                 mixer: Optional[Callable[[Dict[str, torch.Tensor]], Any]] = None):
        super().__init__()
        if shapes is None:
            shapes = {cell: (num_edges, num_ops) for cell in CELL_TYPES}
        self.shapes = {str(c): (int(e), int(k)) for c, (e, k) in shapes.items()}
        if not self.shapes or any(e < 1 or k < 1 for e, k in self.shapes.values()):
            raise ValueError(f"need at least one edge and one op, got {self.shapes}")
        self.cells: Tuple[str, ...] = tuple(self.shapes)
        self.num_edges, self.num_ops = next(iter(self.shapes.values()))
        self._mixer = mixer or _cell_mixer
        for cell, shape in self.shapes.items():
            # Draw on the CPU so a given generator/seed gives the same logits on any device.
            self.register_parameter(f"alpha_{cell}", nn.Parameter(
                (init_scale * torch.randn(shape, generator=generator)).to(device)))  # (E, K)

    @classmethod
    def for_space(cls, space: Space, **kwargs) -> "ArchParameters":
        """Logits shaped for ``space`` (its mixing shapes, all its ops including ``none``)."""
        return cls(shapes=space.mixing_shapes(), mixer=space.mixed_arch, **kwargs)

    def alpha(self, cell: str) -> torch.Tensor:
        """The ``(E, K)`` logits of one cell type."""
        if cell not in self.shapes:
            raise ValueError(f"cell must be one of {self.cells}, got {cell!r}")
        return getattr(self, f"alpha_{cell}")

    def mixed(self, detach: bool = False) -> Any:
        """Softmax over the ops of every edge, as the supernet's mixing weights.

        Args:
            detach: cut the weights from the logits (the DARTS weight step must
                not back-propagate into ``alpha``).
        """
        weights = {}
        for cell in self.cells:
            w = F.softmax(self.alpha(cell), dim=-1)  # (E, K)
            weights[cell] = w.detach() if detach else w
        return self._mixer(weights)

    @torch.no_grad()
    def weights_table(self, cell: str) -> torch.Tensor:
        """Softmaxed ``(E, K)`` weights of a cell type, detached, for logging."""
        return F.softmax(self.alpha(cell).float(), dim=-1)

    def tables(self) -> Dict[str, List[List[float]]]:
        """Softmaxed weights per cell type as Python floats (exact ties for derive)."""
        return {cell: self.weights_table(cell).cpu().tolist() for cell in self.cells}

    def _check_space(self, space: Space) -> None:
        expected = space.mixing_shapes()
        if self.shapes != dict(expected):
            raise ValueError(f"architecture parameters are {self.shapes}, the {space.name} space needs "
                             f"{dict(expected)}")

    def choices(self, space: Space, cell: str) -> List[Dict[str, object]]:
        """The kept edges of one cell type, in architecture order (the space's derive rule).

        Returns:
            One dict per kept edge: ``node``, ``input``, ``op`` and its softmax ``weight``.
        """
        self._check_space(space)
        return space.derive_choices(self.tables())[cell]

    def derive(self, space: Space) -> Any:
        """The discrete architecture of the current logits (DARTS Sec. 2.4, by the space's rule)."""
        self._check_space(space)
        return space.derive(self.tables())

    @torch.no_grad()
    def entropy(self, cell: str) -> float:
        """Mean per-edge entropy (nats) of the op distribution: log(K) when uniform."""
        p = self.weights_table(cell)  # (E, K)
        return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())
