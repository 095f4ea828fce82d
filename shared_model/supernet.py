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
* The cell output is chosen by the ``cell_output`` constructor argument:
  ``"conv"`` (ENAS ``_enas_layer``): ReLU -> 1x1 conv -> BN over the
  concatenation of the output states, with one 1x1 weight slice per state so
  that any concat list maps back to ``C`` channels; ``"concat"`` (DARTS
  ``model_search.Cell``): the plain concatenation of all nodes,
  ``num_nodes * C`` channels, which the next cell's preprocessing maps back to
  ``C``. With ``loose_inputs`` (ENAS micro semantics) the ``"conv"`` output of a
  genotype also takes the cell inputs no node reads, as the official search
  cell counts uses over all ``num_nodes + 2`` states.
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
from shared_model.batch_norm import BatchNorm2d
from shared_model.kernels import cat_channels, fast_kernels_enabled, pointwise_conv
from shared_model.ops import FactorizedReduce, ReLUConvBN, apply_with_relu, make_op, op_info, takes_relu, takes_scale

#: One summand of a node: (input index, op index, mixing weight or None for 1).
Term = Tuple[int, int, Optional[torch.Tensor]]

#: Cell output modes: ENAS's 1x1 conv back to C channels, DARTS's plain node concatenation.
CELL_OUTPUTS = ("conv", "concat")


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
        output: ``"conv"`` (ENAS: 1x1 conv of the output states back to ``c``) or
            ``"concat"`` (DARTS: the concat of all nodes, ``num_nodes * c`` channels).
        loose_inputs: with ``"conv"``, a genotype's cell inputs that no node reads
            join the output (official ENAS search cell, micro space semantics).
    """

    def __init__(self, ops: Sequence[str], num_nodes: int, c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool, output: str = "conv",
                 loose_inputs: bool = False):
        super().__init__()
        if output not in CELL_OUTPUTS:
            raise ValueError(f"cell output must be one of {CELL_OUTPUTS}, got {output!r}")
        if loose_inputs and output != "conv":
            raise ValueError("loose_inputs needs the 'conv' cell output")
        self.ops = tuple(ops)
        self.num_nodes = num_nodes
        self.output, self.loose_inputs = output, bool(loose_inputs)
        self.out_channels = c if output == "conv" else num_nodes * c
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
                    if op_info(name).kind == "pool":
                        op = nn.Sequential(op, BatchNorm2d(c, affine=False))
                    bank.append(op)
                self.edge_index[(i, j)] = len(self.edges)
                self.edges.append(bank)
        self._stateless_ops: Optional[List[Tuple[bool, ...]]] = None
        if output == "conv":
            # One (C x C) 1x1 slice per state that can be an output: the computed nodes, and
            # with loose_inputs the two cell inputs too (official ``final_conv`` weight of shape
            # [num_cells + 2, C * C]). Slice ``s - first_out`` belongs to state ``s``.
            self.first_out = 0 if loose_inputs else 2
            slices = num_nodes + 2 - self.first_out
            self.out_weight = nn.Parameter(torch.empty(c, slices, c))
            nn.init.kaiming_normal_(self.out_weight.view(c, slices * c, 1, 1))
            self.out_bn = BatchNorm2d(c, affine=False)
        if loose_inputs and reduction:
            # Inputs keep their resolution here (the ops reading them stride), so an unread
            # input is halved before joining the output, as the official fixed network's
            # final combine does with a factorized reduction.
            self.input_reduce = nn.ModuleList(FactorizedReduce(c, c, affine=False) for _ in range(2))

    def terms(self, arch: Arch) -> Tuple[List[List[Term]], List[int]]:
        """Per-node summands of ``arch`` for this cell and the states its output concatenates.

        The output states are the architecture's concat list, preceded (``loose_inputs``,
        genotypes only) by the cell inputs no node reads. Mixed architectures read every
        input and output every node.
        """
        if isinstance(arch, Genotype):
            nodes, concat = self._genotype_terms(arch)
            if self.output == "concat" and sorted(concat) != list(range(2, self.num_nodes + 2)):
                raise ValueError(f"the 'concat' cell output needs every node in the {self.cell_type} "
                                 f"concat list (DARTS), got {list(concat)}")
            unread = []
            if self.loose_inputs:
                read = {j for node_terms in nodes for j, _, _ in node_terms}
                unread = [j for j in (0, 1) if j not in read]
            return nodes, unread + list(concat)
        weights = arch.reduce if self.reduction else arch.normal  # (E, K)
        if weights.shape != (len(self.edges), len(self.ops)):
            raise ValueError(f"mixing weights must be {(len(self.edges), len(self.ops))}, got {tuple(weights.shape)}")
        nodes = []
        for i in range(2, self.num_nodes + 2):
            nodes.append([(j, k, weights[self.edge_index[(i, j)], k])
                          for j in range(i) for k in range(len(self.ops)) if k != self.none_index])
        return nodes, list(range(2, self.num_nodes + 2))

    def _genotype_terms(self, arch: Genotype) -> Tuple[List[List[Term]], Sequence[int]]:
        """The two ``(input, op)`` summands of every node and the concat list of a genotype."""
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

    def _stateless(self) -> List[Tuple[bool, ...]]:
        """Per edge and op: no parameters and no buffers (e.g. BN running stats), so the output
        depends on the input alone. Taken on first use: the supernet drops BN buffers after
        building its cells."""
        if self._stateless_ops is None:
            self._stateless_ops = [tuple(next(op.parameters(), None) is None and next(op.buffers(), None) is None
                                         for op in bank) for bank in self.edges]
        return self._stateless_ops

    @staticmethod
    def _run_op(op: nn.Module, states: List[torch.Tensor], j: int, relus: dict, fast: bool,
                scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``op(states[j])`` (times ``scale``, which ``op`` must take), with the state's ReLU
        taken once for every ReLU-first op."""
        kwargs = {} if scale is None else {"scale": scale}
        if fast and takes_relu(op):
            if j not in relus:
                relus[j] = F.relu(states[j])
            return op(relus[j], relu_done=True, **kwargs)
        return op(states[j], **kwargs)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, arch: Arch,
                relus: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """Cell inputs (B, C_pp, H, W) and (B, C_p, H, W) -> (B, out_channels, H', W').

        ``relus``: ``(relu(s0), relu(s1))`` when the network already has them (the
        preprocessing starts with that ReLU; several cells read each output).

        With the fast paths on (:mod:`shared_model.kernels`), a state's ReLU and the
        outputs of stateless ops on it are computed once per forward, whatever
        number of edges reads them; the maths is the same.
        """
        nodes, concat = self.terms(arch)
        r0, r1 = relus if relus is not None else (None, None)
        states = [apply_with_relu(self.pre0, s0, r0), apply_with_relu(self.pre1, s1, r1)]  # each (B, C, H, W)
        fast = fast_kernels_enabled()
        relus: dict = {}  # state -> its ReLU, shared by every ReLU-first op reading it
        # (state, op) -> output of a stateless op (pool + non-affine BN, identity): a function of the
        # state alone, so all the edges leaving a state share one result (DARTS: up to 4 each).
        shared: dict = {}
        stateless = self._stateless() if fast else None
        for i, node_terms in enumerate(nodes, start=2):
            out = None
            cache = {}  # ENAS may pick the same (input, op) twice in a node: run it once
            for j, k, w in node_terms:
                e = self.edge_index[(i, j)]
                if fast and w is not None and (j, k) not in cache and takes_scale(self.edges[e][k]):
                    # The mixing weight as the op's final BN weight: w * op(x) in the BN's own passes.
                    y = self._run_op(self.edges[e][k], states, j, relus, fast, scale=w)
                    out = y if out is None else out + y
                    continue
                if (j, k) not in cache:
                    if stateless is not None and stateless[e][k]:
                        if (j, k) not in shared:
                            shared[(j, k)] = self._run_op(self.edges[e][k], states, j, relus, fast)
                        cache[(j, k)] = shared[(j, k)]
                    else:
                        cache[(j, k)] = self._run_op(self.edges[e][k], states, j, relus, fast)
                y = cache[(j, k)]
                if out is None:
                    out = y if w is None else w * y
                elif w is None:
                    out = out + y
                else:
                    # One kernel for the DARTS mixing sum out + w * y.
                    out = torch.addcmul(out, w, y) if fast else out + w * y
            states.append(out)
        if self.output == "concat":
            return cat_channels([states[s] for s in concat])  # (B, num_nodes * C, H', W')
        outs = [self.input_reduce[s](states[s]) if s < 2 and self.reduction else states[s]
                for s in concat]  # each (B, C, H', W')
        x = F.relu(cat_channels(outs))  # (B, len(concat) * C, H', W')
        c = self.out_weight.shape[0]
        w = self.out_weight[:, [s - self.first_out for s in concat]].reshape(c, len(concat) * c, 1, 1)
        return self.out_bn(pointwise_conv(x, w))  # (B, C, H', W')


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
        cell_output: ``"conv"`` (ENAS: every cell outputs C channels) or ``"concat"``
            (DARTS ``model_search.Network``: cells output ``num_nodes * C`` channels, the
            next cell's preprocessing and the classifier read that many).
        loose_inputs: with ``"conv"``, unread cell inputs of a genotype join the cell
            output (ENAS micro semantics; see :class:`SharedCell`).
    """

    def __init__(self, ops: Sequence[str], num_nodes: int, channels: int, layers: int,
                 num_classes: int, in_channels: int = 3, image_size: int = 32,
                 stem_multiplier: int = 3, auxiliary: bool = False, dropout: float = 0.0,
                 cell_output: str = "conv", loose_inputs: bool = False):
        super().__init__()
        if cell_output not in CELL_OUTPUTS:
            raise ValueError(f"cell_output must be one of {CELL_OUTPUTS}, got {cell_output!r}")
        if loose_inputs and cell_output != "conv":
            raise ValueError("loose_inputs needs cell_output 'conv'")
        if layers < 3:
            raise ValueError(f"the supernet needs at least 3 layers (two are reductions), got {layers}")
        if image_size < 4:
            raise ValueError(f"images of {image_size} px are too small for two reductions (need >= 4)")
        self.ops, self.num_nodes, self.layers = tuple(ops), num_nodes, layers
        self.cell_output, self.loose_inputs = cell_output, bool(loose_inputs)
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False),
                                  BatchNorm2d(c_stem))
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
            cell = SharedCell(ops, num_nodes, c_pp, c_p, c, reduction, reduction_prev,
                              output=cell_output, loose_inputs=loose_inputs)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.out_channels
            if i == self.aux_index:
                self.aux_head = AuxiliaryHead(c_p, num_classes, size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_p, num_classes)
        use_batch_stats(self)

    def forward(self, x: torch.Tensor, arch: Arch) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Run ``arch`` on ``x`` (B, C_in, H, W); returns (logits, aux logits or None)."""
        s0 = s1 = self.stem(x)
        # Every cell output is read through a ReLU by the next two cells: take it once.
        r0 = r1 = F.relu(s1) if fast_kernels_enabled() else None
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, arch, relus=None if r1 is None else (r0, r1))
            if r1 is not None:
                r0, r1 = r1, (F.relu(s1) if i + 1 < len(self.cells) else None)
            if i == self.aux_index and self.training:
                aux = self.aux_head(s1)
        out = F.adaptive_avg_pool2d(s1, 1).flatten(1)  # (B, out_channels of the last cell)
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
