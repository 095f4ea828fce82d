"""The shared-weight supernet of ENAS micro search, also used by DARTS and random search.

Every (node, input) edge of every cell owns one op bank: one module per
candidate op (ENAS Sec. 2.3 weight sharing; DARTS Sec. 2.1 MixedOp edges). An
architecture is passed explicitly to :meth:`Supernet.forward`:

* a :class:`~shared_model.genotype.Genotype` runs only the sampled path, each
  node being the sum of its two chosen ops (ENAS, random search);
* a :class:`MixedArch` runs every edge as the weighted sum of its ops with the
  given mixing weights (DARTS continuous relaxation).

Both go through the same cell code, which only sees a list of
``(input, op, weight)`` terms per node, so the model never depends on the
search strategy.

Documented choices (see README "Search network"):

* Reduction cells put stride 2 on the ops that read cell inputs 0/1 (DARTS
  style), not the official ENAS search network's fixed factorized reduce
  followed by a stride-1 cell; derive and retrain use the same semantics.
* The cell output is ReLU -> 1x1 conv -> BN over the concatenation of the
  architecture's concat nodes (ENAS loose ends), with one 1x1 weight slice per
  node so that any concat list maps back to ``C`` channels.
* Every BN uses batch statistics, in training and in evaluation (REFERENCE
  Sec. 1 and Sec. 7), and cell BNs are not affine (DARTS search).
* Pools are followed by a non-affine BN, as in the DARTS search MixedOp.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from shared_model.genotype import Genotype
from shared_model.heads import AuxiliaryHead
from shared_model.ops import POOL_OPS, FactorizedReduce, ReLUConvBN, make_op

#: One summand of a node: (input index, op index, mixing weight or None for 1).
Term = Tuple[int, int, Optional[torch.Tensor]]


@dataclass
class MixedArch:
    """Continuous architecture: per-edge mixing weights over the op bank.

    Attributes:
        normal: (num_edges, num_ops) weights for normal cells, edges node-major
            as in :meth:`shared_model.spaces.SearchSpace.edges`.
        reduce: (num_edges, num_ops) weights for reduction cells.
    """

    normal: torch.Tensor
    reduce: torch.Tensor


Arch = Union[Genotype, MixedArch]


def reduction_layers(layers: int) -> Tuple[int, int]:
    """Indices of the two reduction cells (DARTS/ENAS: at 1/3 and 2/3 depth)."""
    return layers // 3, 2 * layers // 3


def use_batch_stats(module: nn.Module) -> None:
    """Make every BN in ``module`` normalise with batch statistics, always."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
            m.num_batches_tracked = None


class SharedCell(nn.Module):
    """A searchable cell: op banks on every (node, input) edge.

    Args:
        ops: candidate op names (the bank of every edge).
        num_nodes: computed nodes.
        c_pp, c_p: channels of inputs 0 and 1.
        c: channels of the cell.
        reduction: whether this cell halves the spatial size.
        reduction_prev: whether the previous cell did (input 0 is then larger).
    """

    def __init__(self, ops: Sequence[str], num_nodes: int, c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.ops = tuple(ops)
        self.num_nodes = num_nodes
        self.reduction = reduction
        self.cell_type = "reduce" if reduction else "normal"
        self.none_index = self.ops.index("none") if "none" in self.ops else -1
        self.pre0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev \
            else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        self.edge_index = {}
        for i in range(2, num_nodes + 2):
            for j in range(i):
                stride = 2 if reduction and j < 2 else 1
                bank = nn.ModuleList()
                for name in self.ops:
                    op = make_op(name, c, stride, affine=False)
                    if name in POOL_OPS:
                        op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
                    bank.append(op)
                self.edge_index[(i, j)] = len(self.edges)
                self.edges.append(bank)
        # One (C x C) 1x1 slice per computed node, selected by the concat list.
        self.out_weight = nn.Parameter(torch.empty(c, num_nodes, c))
        nn.init.kaiming_normal_(self.out_weight.view(c, num_nodes * c, 1, 1))
        self.out_bn = nn.BatchNorm2d(c, affine=False)

    def terms(self, arch: Arch) -> Tuple[List[List[Term]], Sequence[int]]:
        """Per-node summands and the concat list of ``arch`` for this cell."""
        if isinstance(arch, Genotype):
            entries, concat = arch.cell(self.cell_type)
            if len(entries) != 2 * self.num_nodes:
                raise ValueError(f"{self.cell_type} cell has {len(entries) // 2} nodes, "
                                 f"the supernet has {self.num_nodes}")
            nodes = []
            for k in range(0, len(entries), 2):
                pair = []
                for op, inp in entries[k:k + 2]:
                    if op not in self.ops:
                        raise ValueError(f"op {op!r} is not in the supernet's op bank {list(self.ops)}")
                    pair.append((inp, self.ops.index(op), None))
                nodes.append(pair)
            return nodes, concat
        weights = arch.reduce if self.reduction else arch.normal  # (E, K)
        if weights.shape != (len(self.edges), len(self.ops)):
            raise ValueError(f"mixing weights must be {(len(self.edges), len(self.ops))}, got {tuple(weights.shape)}")
        nodes = []
        for i in range(2, self.num_nodes + 2):
            nodes.append([(j, k, weights[self.edge_index[(i, j)], k])
                          for j in range(i) for k in range(len(self.ops)) if k != self.none_index])
        return nodes, range(2, self.num_nodes + 2)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, arch: Arch) -> torch.Tensor:
        nodes, concat = self.terms(arch)
        states = [self.pre0(s0), self.pre1(s1)]  # each (B, C, H, W)
        for i, node_terms in enumerate(nodes, start=2):
            out = 0
            cache = {}
            for j, k, w in node_terms:
                # ENAS may pick the same (input, op) twice: run it once.
                if (j, k) not in cache:
                    cache[(j, k)] = self.edges[self.edge_index[(i, j)]][k](states[j])
                y = cache[(j, k)]
                out = out + (y if w is None else w * y)
            states.append(out)
        idx = [c - 2 for c in concat]
        x = F.relu(torch.cat([states[c] for c in concat], dim=1))  # (B, len(concat) * C, H', W')
        c = self.out_weight.shape[0]
        w = self.out_weight[:, idx].reshape(c, len(idx) * c, 1, 1)
        return self.out_bn(F.conv2d(x, w))  # (B, C, H', W')


class Supernet(nn.Module):
    """CIFAR-style supernet: stem, ``layers`` shared cells, optional aux head, classifier.

    ``layers`` counts all cells; reductions sit at ``layers // 3`` and
    ``2 * layers // 3`` (ENAS "6 + 2" = 8 layers; DARTS search uses 8).

    Args:
        ops: op bank of every edge.
        num_nodes: computed nodes per cell.
        channels: initial cell channels C (doubled at each reduction).
        layers: total number of cells.
        num_classes: classifier outputs.
        in_channels: image channels.
        image_size: image height/width (must survive two halvings).
        stem_multiplier: stem width is ``stem_multiplier * C``.
        auxiliary: attach the auxiliary head after the second reduction.
        dropout: dropout before the classifier (ENAS keep 0.9 = 0.1).
    """

    def __init__(self, ops: Sequence[str], num_nodes: int, channels: int, layers: int,
                 num_classes: int, in_channels: int = 3, image_size: int = 32,
                 stem_multiplier: int = 3, auxiliary: bool = False, dropout: float = 0.0):
        super().__init__()
        if layers < 3:
            raise ValueError(f"the supernet needs at least 3 layers (two are reductions), got {layers}")
        if image_size < 4:
            raise ValueError(f"images of {image_size} px are too small for two reductions (need >= 4)")
        self.ops, self.num_nodes, self.layers = tuple(ops), num_nodes, layers
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_stem))
        c_pp, c_p, c = c_stem, c_stem, channels
        self.cells = nn.ModuleList()
        reductions = reduction_layers(layers)
        reduction_prev, size = False, image_size
        self.aux_index = reductions[1] if auxiliary else -1
        self.aux_head = None
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c, size = c * 2, (size + 1) // 2
            self.cells.append(SharedCell(ops, num_nodes, c_pp, c_p, c, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, c
            if i == self.aux_index:
                self.aux_head = AuxiliaryHead(c, num_classes, size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_p, num_classes)
        use_batch_stats(self)

    def forward(self, x: torch.Tensor, arch: Arch) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Run ``arch`` on ``x`` (B, C_in, H, W); returns (logits, aux logits or None)."""
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, arch)
            if i == self.aux_index and self.training:
                aux = self.aux_head(s1)
        out = F.adaptive_avg_pool2d(s1, 1).flatten(1)  # (B, C_last)
        return self.classifier(self.dropout(out)), aux

    def path_modules(self, genotype: Genotype) -> List[nn.Module]:
        """The op modules a genotype uses (for tests and inspection)."""
        mods = []
        for cell in self.cells:
            nodes, _ = cell.terms(genotype)
            for i, node_terms in enumerate(nodes, start=2):
                for j, k, _ in node_terms:
                    mods.append(cell.edges[cell.edge_index[(i, j)]][k])
        return mods
