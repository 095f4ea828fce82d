"""The fixed (retrained) network built from a genotype.

Semantics follow the DARTS evaluation network (Liu et al. 2019, Sec. 3.2 and
the released ``cnn/model.py``: ``NetworkCIFAR``, ``Cell``), which is also the
shape of the ENAS micro final network (Pham et al. 2018, Sec. 2.3 and
Sec. 3.2): a 3x3 stem, ``layers`` cells with reduction cells at
``layers // 3`` and ``2 * layers // 3`` (channels double there), an optional
auxiliary head after cell ``2 * layers // 3``, global average pooling and a
linear classifier. Reduction cells put stride 2 on every op that reads cell
input 0 or 1 (REFERENCE Sec. 1: one semantics for derive and retrain).

The cell generalises DARTS to any node count and any concat list; the normal
and reduction cells may differ in both. A cell's output has
``len(concat) * C`` channels.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from shared_model.genotype import Entry, Genotype
from shared_model.heads import AuxiliaryHead
from shared_model.ops import FactorizedReduce, Identity, ReLUConvBN, make_op

logger = logging.getLogger(__name__)


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``drop_prob`` (DARTS ``drop_path``).

    Each sample keeps its path with probability ``1 - drop_prob``; kept samples
    are divided by the keep probability so the expectation is unchanged
    (FractalNet-style drop path as used by NASNet, ENAS and DARTS).

    Args:
        x: op output, ``(B, C, H, W)``.
        drop_prob: probability of dropping, in ``[0, 1)``.

    Returns:
        A new tensor; ``x`` is not modified (safe for autograd).
    """
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)  # (B, 1, 1, 1)
    return x / keep * mask


def drop_path_schedule(cell_index: int, num_cells: int, progress: float, keep_prob: float = 0.6) -> float:
    """Drop probability of the ENAS final network for one cell (ENAS ``micro_child``).

    The official ENAS final script trains with ``drop_path_keep_prob 0.6``,
    scaled linearly in depth and in training progress::

        keep = 1 - progress * (cell_index + 1) / num_cells * (1 - keep_prob)

    so the first cell barely drops, the last cell reaches ``1 - keep_prob`` at
    the end of training, and nothing is dropped at the start. ``num_cells``
    counts every cell, reductions included (ENAS: ``num_layers + 2``).

    With ``ChildNetwork(..., drop_path_depth_scaled=True)`` the network applies
    the depth factor itself; setting ``model.drop_path_prob =
    drop_path_schedule(L - 1, L, progress, keep_prob)`` (that is
    ``progress * (1 - keep_prob)``) reproduces this schedule for every cell.

    Args:
        cell_index: 0-based cell position.
        num_cells: total number of cells ``L``.
        progress: fraction of training done; clipped to ``[0, 1]`` (ENAS uses
            ``(step + 1) / total_steps``).
        keep_prob: final keep probability of the deepest cell.

    Returns:
        The drop probability ``1 - keep`` for that cell.
    """
    if num_cells < 1 or not 0 <= cell_index < num_cells:
        raise ValueError(f"cell_index {cell_index} out of range for {num_cells} cells")
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    progress = min(1.0, max(0.0, float(progress)))
    return progress * (cell_index + 1) / num_cells * (1.0 - keep_prob)


class Cell(nn.Module):
    """One fixed cell: two preprocessed inputs, ``len(entries) // 2`` nodes, concat.

    Args:
        entries: ``(op, input)`` pairs, two per node.
        concat: indices of the states concatenated into the output.
        c_prev_prev: channels of cell k-2's output.
        c_prev: channels of cell k-1's output.
        channels: per-node channels ``C`` of this cell.
        reduction: this cell halves the spatial size.
        reduction_prev: cell k-1 halved it, so input 0 is at twice the size.
    """

    def __init__(self, entries: Sequence[Entry], concat: Sequence[int], c_prev_prev: int, c_prev: int,
                 channels: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)
        self._indices: Tuple[int, ...] = tuple(inp for _, inp in entries)
        self._concat: Tuple[int, ...] = tuple(concat)
        self.multiplier = len(self._concat)
        self._ops = nn.ModuleList(
            make_op(op, channels, 2 if reduction and inp < 2 else 1, True) for op, inp in entries)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states: List[torch.Tensor] = [self.preprocess0(s0), self.preprocess1(s1)]  # 2 x (B, C, H, W)
        apply_drop = self.training and drop_prob > 0.0
        for k in range(0, len(self._ops), 2):
            pair = []
            for op, inp in ((self._ops[k], self._indices[k]), (self._ops[k + 1], self._indices[k + 1])):
                h = op(states[inp])  # (B, C, H', W')
                # DARTS: only Identity is exempt, so a stride-2 skip (FactorizedReduce)
                # is dropped; the official ENAS script also exempts that one.
                if apply_drop and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                pair.append(h)
            states.append(pair[0] + pair[1])
        return torch.cat([states[i] for i in self._concat], dim=1)  # (B, multiplier * C, H', W')


class ChildNetwork(nn.Module):
    """The DARTS/ENAS evaluation network for a fixed genotype.

    Args:
        genotype: the two cells.
        C: initial per-node channels (DARTS: 36).
        layers: number of cells, reductions included (DARTS: 20).
        num_classes: classifier outputs.
        auxiliary: add the auxiliary head after cell ``2 * layers // 3``.
        drop_path_prob: drop-path probability; set ``model.drop_path_prob``
            each epoch to ramp it (DARTS: ``0.2 * epoch / epochs``).
        in_channels: image channels (1 for grayscale).
        image_size: input height and width; fixes the auxiliary head's pooling.
        stem_multiplier: the stem outputs ``stem_multiplier * C`` channels.
        dropout: dropout probability before the final linear layer
            (ENAS final: keep 0.8, i.e. 0.2; DARTS: 0).
        drop_path_depth_scaled: multiply the drop probability of cell ``i`` by
            ``(i + 1) / layers`` (ENAS, see :func:`drop_path_schedule`).

    Raises:
        ValueError: bad sizes, or an image too small for the reductions.
    """

    def __init__(self, genotype: Genotype, C: int, layers: int, num_classes: int, auxiliary: bool = False,
                 drop_path_prob: float = 0.0, in_channels: int = 3, image_size: int = 32,
                 stem_multiplier: int = 3, dropout: float = 0.0, drop_path_depth_scaled: bool = False):
        super().__init__()
        for name, value in (("C", C), ("layers", layers), ("num_classes", num_classes),
                            ("in_channels", in_channels), ("image_size", image_size),
                            ("stem_multiplier", stem_multiplier)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.genotype = genotype
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = float(drop_path_prob)
        self.drop_path_depth_scaled = drop_path_depth_scaled
        self.reduction_indices = tuple(sorted({layers // 3, 2 * layers // 3}))
        self.aux_index = 2 * layers // 3

        # Every stride-2 op here (3x3/5x5/7x7 pads, pools, factorized reduce)
        # maps H to ceil(H / 2); a reduction that cannot halve means the
        # dataset's images are too small for this depth.
        sizes, size = [], image_size
        for i in range(layers):
            if i in self.reduction_indices:
                if size < 2:
                    raise ValueError(
                        f"image size {image_size} is too small for {len(self.reduction_indices)} reduction "
                        f"cells: the feature map is {size}x{size} before reduction cell {i}; "
                        f"use images of at least {2 ** len(self.reduction_indices)} px or fewer layers")
                size = (size + 1) // 2
            sizes.append(size)

        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_curr),
        )
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        c_aux = c_prev
        for i in range(layers):
            reduction = i in self.reduction_indices
            if reduction:
                c_curr *= 2
            cell_type = "reduce" if reduction else "normal"
            entries, concat = genotype.cell(cell_type)
            cell = Cell(entries, concat, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
            if i == self.aux_index:
                c_aux = c_prev
        if auxiliary:
            self.auxiliary_head = AuxiliaryHead(c_aux, num_classes, spatial=sizes[self.aux_index])
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(c_prev, num_classes)
        self.feature_sizes = tuple(sizes)
        logger.debug("child network: %d cells, reductions at %s, final %dx%d x %d channels",
                     layers, self.reduction_indices, sizes[-1], sizes[-1], c_prev)

    def cell_drop_prob(self, index: int) -> float:
        """The drop-path probability used by cell ``index`` right now."""
        if self.drop_path_depth_scaled:
            return self.drop_path_prob * (index + 1) / self._layers
        return self.drop_path_prob

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Return ``(logits, logits_aux)``; ``logits_aux`` is None unless training with aux."""
        logits_aux = None
        s0 = s1 = self.stem(x)  # (B, stem_multiplier * C, H, W)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.cell_drop_prob(i))
            if i == self.aux_index and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)  # (B, num_classes)
        out = self.global_pooling(s1).flatten(1)  # (B, C_last)
        logits = self.classifier(self.dropout(out))  # (B, num_classes)
        return logits, logits_aux
