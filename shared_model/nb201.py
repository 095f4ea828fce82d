"""NAS-Bench-201 networks: the weight-sharing supernet and the fixed child (Dong & Yang, ICLR 2020).

Both share the NAS-Bench-201 skeleton (Sec. 2.1, Fig. 1): a 3x3 conv stem with
``C`` channels and BN, three stages of ``N`` cells at ``C``, ``2C`` and ``4C``
channels separated by stride-2 ResNet basic blocks, then BN-ReLU, global average
pooling and a linear classifier. Every cell has the same architecture
(:class:`~shared_model.nb201_arch.NB201Arch`): four nodes, node ``j`` is the sum
of one op applied to each earlier node, and the cell outputs node 3.

* :class:`NB201Supernet` holds all five ops on each of the six edges of every
  cell and runs either one architecture (ENAS, random search with weight
  sharing) or per-edge mixing weights of shape ``(6, 5)`` (DARTS). As in the
  official search cells, cell BNs are not affine; here every BN also uses
  batch statistics in training and evaluation (REFERENCE Sec. 7: weight-sharing
  search on this space works much better that way).
* :class:`NB201Network` is the fixed network for retraining: only the chosen
  ops, affine BN with running statistics (the benchmark's training setup).

Parameter counts (C 16, N 5, 10 classes): 73,306 for the all-``none`` cell and
1,531,546 for the all-``nor_conv_3x3`` cell, exactly the minimum and maximum
``params`` of the official CIFAR-10 benchmark table (0.073306 and 1.531546 MB,
"MB" there meaning millions of parameters); the paper's "0.07 M to 1.53 M" is
those numbers rounded. With 100 classes both grow by 5,850 (the classifier).
The supernet has 1,686,106: every edge holds both convs, without BN affines.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from shared_model.nb201_arch import EDGE_INDEX, EDGES, NB201_OPS, NUM_EDGES, NUM_NODES, NB201Arch
from shared_model.kernels import fast_kernels_enabled
from shared_model.ops import ReLUConvBN, make_op, takes_scale
from shared_model.supernet import MixedArch, use_batch_stats

#: What :meth:`NB201Supernet.forward` runs: one cell, or mixing weights (6, 5) shared by all cells.
NB201Search = Union[NB201Arch, torch.Tensor, MixedArch]

_NONE = NB201_OPS.index("none")


class ResNetBasicBlock(nn.Module):
    """The stride-2 block between stages (NAS-Bench-201 Sec. 2.1, official ``ResNetBasicblock``).

    ``conv_b(conv_a(x))`` with ``conv_a`` = ReLU -> 3x3 conv stride 2 -> BN and
    ``conv_b`` = ReLU -> 3x3 conv -> BN, plus a shortcut of 2x2 average pooling
    and a 1x1 conv (no BN). The pool uses ``ceil_mode`` so that odd sizes halve to
    ``ceil(H / 2)`` like the strided conv; for even sizes it is the official pool.

    Args:
        c_in: input channels.
        c_out: output channels.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, ceil_mode=True),
                                        nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c_in, H, W) -> (B, c_out, ceil(H/2), ceil(W/2))."""
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def _run_cell(x: torch.Tensor, edge_out) -> torch.Tensor:
    """Sum each node's incoming edges; ``edge_out(e, h)`` is edge ``e`` on state ``h``, or None for zero."""
    nodes = [x]  # each (B, C, H, W)
    for target in range(1, NUM_NODES):
        terms = [edge_out(EDGE_INDEX[(target, s)], nodes[s]) for s in range(target)]
        terms = [t for t in terms if t is not None]
        # A node whose every input is none is zero; later ops still read it (a conv's
        # affine BN maps zero to its bias), as the official Zero op's x * 0 does.
        nodes.append(sum(terms[1:], terms[0]) if terms else torch.zeros_like(x))
    return nodes[-1]


class NB201SearchCell(nn.Module):
    """A NAS-Bench-201 cell with all five ops on each of its six edges (official ``NAS201SearchCell``).

    Cell BNs are not affine, as in the official search code for weight sharing,
    and average pooling has no BN after it (unlike the DARTS MixedOp).

    Args:
        channels: channels of the cell (input and output).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleList(make_op(name, channels, 1, affine=False) for name in NB201_OPS)
            for _ in EDGES)

    def forward(self, x: torch.Tensor, arch: Union[NB201Arch, torch.Tensor]) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W) for an architecture or mixing weights (6, 5)."""
        if isinstance(arch, NB201Arch):
            actions = arch.actions()
            # A none edge is skipped outright rather than multiplied by zero.
            return _run_cell(x, lambda e, h: None if actions[e] == _NONE else self.edges[e][actions[e]](h))

        def mixed(e: int, h: torch.Tensor) -> torch.Tensor:
            # DARTS relaxation; none's term is w * 0, so it is left out. The conv ops take their
            # weight as their final BN's (ops.takes_scale): no separate pass for w * op(h).
            fold = fast_kernels_enabled()
            outs = [op(h, scale=arch[e, k]) if fold and takes_scale(op) else arch[e, k] * op(h)
                    for k, op in enumerate(self.edges[e]) if k != _NONE]
            return sum(outs[1:], outs[0])  # (B, C, H, W)

        return _run_cell(x, mixed)


class NB201Cell(nn.Module):
    """A fixed NAS-Bench-201 cell (official ``InferCell``): one op per edge, affine BN.

    ``edges[e]`` is the op of edge ``EDGES[e]`` (a parameter-free ``Zero`` for
    ``none``, never called), so parameter names match the supernet's
    ``edges[e][k]`` up to the op index.

    Args:
        arch: the cell.
        channels: channels of the cell.
    """

    def __init__(self, arch: NB201Arch, channels: int):
        super().__init__()
        self.arch = arch
        self.edges = nn.ModuleList(make_op(name, channels, 1, affine=True) for name in arch.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return _run_cell(x, lambda e, h: None if self.arch.ops[e] == "none" else self.edges[e](h))


def _check_sizes(channels: int, cells_per_stage: int, num_classes: int, in_channels: int,
                 image_size: int) -> None:
    for name, value in (("channels", channels), ("cells_per_stage", cells_per_stage),
                        ("num_classes", num_classes), ("in_channels", in_channels),
                        ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if image_size < 4:
        raise ValueError(f"images of {image_size} px are too small for two reductions (need >= 4)")


class _Skeleton(nn.Module):
    """Stem, three stages of cells split by :class:`ResNetBasicBlock`, BN-ReLU, GAP, linear (Sec. 2.1)."""

    def __init__(self, make_cell, channels: int, cells_per_stage: int, num_classes: int,
                 in_channels: int, image_size: int):
        super().__init__()
        _check_sizes(channels, cells_per_stage, num_classes, in_channels, image_size)
        self.channels, self.cells_per_stage = channels, cells_per_stage
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        layers: List[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage:
                layers.append(ResNetBasicBlock(c, 2 * c))
                c *= 2
            layers += [make_cell(c) for _ in range(cells_per_stage)]
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(c, num_classes)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lastact(x).mean(dim=(2, 3))  # (B, 4C)
        return self.classifier(out)  # (B, num_classes)


class NB201Supernet(_Skeleton):
    """The NAS-Bench-201 weight-sharing supernet (official ``TinyNetworkDarts`` and friends).

    All ``3 * cells_per_stage`` cells share one architecture, as NAS-Bench-201
    searches a single cell type. Every BN uses batch statistics, always.

    Args:
        channels: stem and first-stage channels C (benchmark: 16).
        cells_per_stage: cells per stage N (benchmark: 5).
        num_classes: classifier outputs.
        in_channels: image channels.
        image_size: image height/width (at least 4).

    Attributes:
        ops: the op bank of every edge, :data:`~shared_model.nb201_arch.NB201_OPS`.
        num_edges: edges per cell (6), the rows of the mixing weights.
        num_ops: ops per edge (5), their columns.
    """

    ops = NB201_OPS
    edges = EDGES
    num_edges = NUM_EDGES
    num_ops = len(NB201_OPS)

    def __init__(self, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10,
                 in_channels: int = 3, image_size: int = 32):
        super().__init__(NB201SearchCell, channels, cells_per_stage, num_classes, in_channels, image_size)
        use_batch_stats(self)

    def _weights(self, arch: NB201Search) -> Union[NB201Arch, torch.Tensor]:
        if isinstance(arch, NB201Arch):
            return arch
        if isinstance(arch, MixedArch):
            # The supernet's DARTS strategies hand over (normal, reduce); NAS-Bench-201 has one
            # searched cell type and fixed ResNet reductions, so only the normal weights apply.
            arch = arch.normal
        if not isinstance(arch, torch.Tensor):
            raise TypeError(f"arch must be an NB201Arch or mixing weights ({self.num_edges}, {self.num_ops}), "
                            f"got {type(arch).__name__}")
        if tuple(arch.shape) != (self.num_edges, self.num_ops):
            raise ValueError(f"mixing weights must be {(self.num_edges, self.num_ops)}, got {tuple(arch.shape)}")
        return arch

    def forward(self, x: torch.Tensor, arch: NB201Search) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Run ``arch`` on ``x`` (B, C_in, H, W); returns ``(logits, None)`` (no auxiliary head)."""
        arch = self._weights(arch)
        h = self.stem(x)  # (B, C, H, W)
        for layer in self.cells:
            h = layer(h, arch) if isinstance(layer, NB201SearchCell) else layer(h)
        return self._head(h), None

    def path_modules(self, arch: NB201Arch) -> List[nn.Module]:
        """The op modules ``arch`` runs, ``none`` excluded (for tests and inspection)."""
        return [cell.edges[e][a] for cell in self.cells if isinstance(cell, NB201SearchCell)
                for e, a in enumerate(arch.actions()) if a != _NONE]


class NB201Network(_Skeleton):
    """The fixed NAS-Bench-201 network for retraining (official ``TinyNetwork``).

    Affine BN with running statistics everywhere; same interface as
    :class:`~shared_model.child.ChildNetwork`: ``forward(x) -> (logits, None)``.

    Args:
        arch: the cell used at every position.
        channels: stem and first-stage channels C (benchmark: 16).
        cells_per_stage: cells per stage N (benchmark: 5).
        num_classes: classifier outputs.
        in_channels: image channels.
        image_size: image height/width (at least 4).
    """

    def __init__(self, arch: NB201Arch, channels: int = 16, cells_per_stage: int = 5,
                 num_classes: int = 10, in_channels: int = 3, image_size: int = 32):
        if not isinstance(arch, NB201Arch):
            raise TypeError(f"arch must be an NB201Arch, got {type(arch).__name__}")
        super().__init__(lambda c: NB201Cell(arch, c), channels, cells_per_stage, num_classes,
                         in_channels, image_size)
        self.arch = arch

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Return ``(logits, None)`` for ``x`` (B, C_in, H, W)."""
        h = self.stem(x)  # (B, C, H, W)
        for layer in self.cells:
            h = layer(h)  # (B, C_stage, H_stage, W_stage)
        return self._head(h), None
