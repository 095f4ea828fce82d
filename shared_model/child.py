"""The fixed (retrained) network built from a genotype.

Semantics follow the DARTS evaluation network (Liu et al. 2019, Sec. 3.2 and
the released ``cnn/model.py``: ``NetworkCIFAR``, ``Cell``), which is also the
shape of the ENAS micro final network (Pham et al. 2018, Sec. 2.3 and
Sec. 3.2): a 3x3 stem, ``layers`` cells with reduction cells at
``layers // 3`` and ``2 * layers // 3`` (channels double there), an optional
auxiliary head after cell ``2 * layers // 3`` (DARTS) or the cell after it
(ENAS), global average pooling and a linear classifier. Reduction cells put stride 2 on every op that reads cell
input 0 or 1 (REFERENCE Sec. 1: one semantics for derive and retrain).

The cell generalises DARTS to any node count and any concat list; the normal
and reduction cells may differ in both. A cell's output has
``len(concat) * C`` channels, plus ``C`` per unread cell input with
``loose_inputs``.

Where the official ENAS fixed network (``src/cifar10/micro_child.py``:
``_model``, ``_fixed_layer``) differs from DARTS, a constructor argument
selects the ENAS behaviour; the defaults are DARTS (``NetworkCIFAR``):

- ``aux_position="after_reduction"``: the auxiliary head reads the cell after
  the last reduction (ENAS ``aux_head_indices = [pool_layers[-1] + 1]``),
  not the reduction cell itself.
- ``final_relu=True``: ReLU before global average pooling.
- ``drop_path_exempt="skip"``: ``skip_connect`` is never dropped, also at
  stride 2 (ENAS drops ops 0-3 only); DARTS exempts only ``Identity``.
- ``base_conv=True``: a second ReLU -> 1x1 conv -> BN on cell input 1 after
  its preprocessing (ENAS ``layer_base``, applied after ``_maybe_calibrate_size``).
- ``classifier_bias=False``: the final and auxiliary linear layers have no bias.
- ``aux_same_padding=True``: the auxiliary head's last conv pads "SAME" and is
  followed by global pooling (see :class:`~shared_model.heads.AuxiliaryHead`).
- ``bn_eps=1e-3``: the epsilon of every BatchNorm (ENAS ``batch_norm``).
- ``aux_trainable=False``: the auxiliary head keeps its initial weights. ENAS
  ``_build_train`` hands the optimizer only the variables without
  ``aux_head`` in their name, so its head is never updated (nor decayed);
  its loss still trains the cells below it.
- ``loose_inputs=True``: a cell input that no node reads is a loose end too
  and joins the concatenated output (ENAS ``_fixed_combine``, the
  "final_combine" scope, concatenates every state with ``used == 0`` among the
  ``num_cells + 2``, the calibrated inputs included); in a reduction cell it is
  halved by a factorized reduction first. The next cell's preprocessing, the
  auxiliary head and the classifier read the wider output.

With all of them, ``ENAS_RELEASED`` at C 36 and 17 cells has 3,894,372
parameters without the auxiliary head (4,389,220 with it), the official
``count_model_params`` of the final script; with the DARTS defaults it has
3,729,430 (no ``layer_base`` convs, a classifier bias).

The reduction cells sit where ENAS puts them (``pool_layers = [N // 3,
2 * (N // 3) + 1]`` for ``N = layers - 2``) whenever ``N`` is a multiple of 3,
as in the ENAS final (17 cells) and search (8 cells) networks.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from shared_model.genotype import Entry, Genotype
from shared_model.heads import AuxiliaryHead
from shared_model.batch_norm import BatchNorm2d
from shared_model.kernels import cat_channels, fast_kernels_enabled
from shared_model.ops import (FactorizedReduce, Identity, ReLUConvBN, apply_with_relu, make_op, op_info, takes_relu,
                              takes_scale)

logger = logging.getLogger(__name__)

#: ``aux_position`` values: DARTS (the last reduction cell) or ENAS (the cell after it).
AUX_POSITIONS = ("reduction", "after_reduction")
#: ``drop_path_exempt`` values: DARTS (Identity only) or ENAS (every skip_connect).
DROP_PATH_EXEMPT = ("identity", "skip")


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
    if fast_kernels_enabled():
        return x * mask.div_(keep)  # one pass over x instead of two
    return x / keep * mask


def drop_path_factors(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """The per-sample factors ``(B,)`` that :func:`drop_path` multiplies ``x`` by: 0 or ``1 / keep``.

    Drawn from the same random stream as :func:`drop_path`; a cell passes them
    to an op ending in a batch norm as its ``scale``, which applies them inside
    its own passes (:class:`shared_model.batch_norm.BatchNorm2d`).
    """
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)  # (B, 1, 1, 1)
    return mask.div_(keep).view(-1)  # (B,)


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
        drop_path_exempt: ops never dropped: ``"identity"`` (DARTS: only a
            stride-1 skip, so a stride-2 skip, a FactorizedReduce, is dropped) or
            ``"skip"`` (ENAS ``_fixed_layer``: every ``skip_connect``).
        base_conv: apply a second ReLU -> 1x1 conv -> BN to input 1 after its
            preprocessing (ENAS ``layer_base``).
        loose_inputs: concatenate the (preprocessed) cell inputs that no node
            reads before the ``concat`` nodes (ENAS ``_fixed_combine``); in a
            reduction cell each goes through a factorized reduction first.
    """

    def __init__(self, entries: Sequence[Entry], concat: Sequence[int], c_prev_prev: int, c_prev: int,
                 channels: int, reduction: bool, reduction_prev: bool, drop_path_exempt: str = "identity",
                 base_conv: bool = False, loose_inputs: bool = False):
        super().__init__()
        if drop_path_exempt not in DROP_PATH_EXEMPT:
            raise ValueError(f"drop_path_exempt must be one of {', '.join(DROP_PATH_EXEMPT)}, "
                             f"got {drop_path_exempt!r}")
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)
        # Registered only when used, so DARTS state_dict keys stay as they were.
        self.base1: Optional[nn.Module] = ReLUConvBN(channels, channels, 1, 1, 0) if base_conv else None
        self._indices: Tuple[int, ...] = tuple(inp for _, inp in entries)
        self._concat: Tuple[int, ...] = tuple(concat)
        # Genotype concat lists hold computed nodes only, so an unread input is never listed twice.
        self._loose: Tuple[int, ...] = tuple(i for i in (0, 1) if loose_inputs and i not in self._indices)
        self.multiplier = len(self._loose) + len(self._concat)
        # Registered only when needed, so other cells' state_dict keys stay as they were.
        self.loose_reduce: Optional[nn.ModuleDict] = None
        if reduction and self._loose:
            # The inputs keep their size here (the ops reading them stride), so an unread
            # input is halved to the output size, as the official final combine does with
            # _factorized_reduction. That function has no leading ReLU (its callers add one
            # where they want it), and the final combine adds none.
            self.loose_reduce = nn.ModuleDict()
            for i in self._loose:
                reduce = FactorizedReduce(channels, channels)
                if not isinstance(getattr(reduce, "relu", None), nn.ReLU):
                    raise RuntimeError("FactorizedReduce no longer has a leading .relu to remove")
                reduce.relu = Identity()
                self.loose_reduce[str(i)] = reduce
        strides = [2 if reduction and inp < 2 else 1 for _, inp in entries]
        self._ops = nn.ModuleList(make_op(op, channels, s, True) for (op, _), s in zip(entries, strides))
        # The op metadata decides: ENAS exempts every skip, DARTS only the stride-1 identity.
        if drop_path_exempt == "skip":
            self._droppable = tuple(op_info(name).kind != "skip" for name, _ in entries)
        else:
            self._droppable = tuple(not op_info(name).is_identity(s) for (name, _), s in zip(entries, strides))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0,
                relus: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """``relus``: ``(relu(s0), relu(s1))`` when the network already has them."""
        r0, r1 = relus if relus is not None else (None, None)
        h1 = apply_with_relu(self.preprocess1, s1, r1)  # (B, C, H, W)
        if self.base1 is not None:
            h1 = self.base1(h1)
        states: List[torch.Tensor] = [apply_with_relu(self.preprocess0, s0, r0), h1]  # 2 x (B, C, H, W)
        apply_drop = self.training and drop_prob > 0.0
        relus = {}  # state -> its ReLU, computed once for every ReLU-first op reading it
        fast = fast_kernels_enabled()
        for k in range(0, len(self._ops), 2):
            pair = []
            for j in (k, k + 1):
                op, i = self._ops[j], self._indices[j]
                drop = apply_drop and self._droppable[j]
                kwargs = {}
                if drop and fast and takes_scale(op):  # the drop-path factors inside the op's final BN
                    kwargs["scale"], drop = drop_path_factors(states[i], drop_prob), False  # (B,)
                if fast and takes_relu(op):
                    if i not in relus:
                        relus[i] = F.relu(states[i])
                    h = op(relus[i], relu_done=True, **kwargs)  # (B, C, H', W')
                else:
                    h = op(states[i], **kwargs)
                if drop:
                    h = drop_path(h, drop_prob)
                pair.append(h)
            states.append(pair[0] + pair[1])
        out = []
        for i in self._loose:
            h = states[i]  # (B, C, H, W)
            if self.loose_reduce is not None:
                h = self.loose_reduce[str(i)](h)  # (B, C, H', W')
            out.append(h)
        out += [states[i] for i in self._concat]
        return cat_channels(out)  # (B, multiplier * C, H', W')


class ChildNetwork(nn.Module):
    """The DARTS/ENAS evaluation network for a fixed genotype.

    Args:
        genotype: the two cells.
        C: initial per-node channels (DARTS: 36).
        layers: number of cells, reductions included (DARTS: 20).
        num_classes: classifier outputs.
        auxiliary: add the auxiliary head (see ``aux_position``).
        drop_path_prob: drop-path probability; set ``model.drop_path_prob``
            each epoch to ramp it (DARTS: ``0.2 * epoch / epochs``).
        in_channels: image channels (1 for grayscale).
        image_size: input height and width; fixes the auxiliary head's pooling.
        stem_multiplier: the stem outputs ``stem_multiplier * C`` channels.
        dropout: dropout probability before the final linear layer
            (ENAS final: keep 0.8, i.e. 0.2; DARTS: 0).
        drop_path_depth_scaled: multiply the drop probability of cell ``i`` by
            ``(i + 1) / layers`` (ENAS, see :func:`drop_path_schedule`).
        aux_position: ``"reduction"`` (DARTS: the head reads cell
            ``2 * layers // 3``) or ``"after_reduction"`` (ENAS: the cell after
            it; needs ``layers >= 4``).
        final_relu: ReLU before global average pooling (ENAS ``_model``).
        drop_path_exempt: ``"identity"`` (DARTS) or ``"skip"`` (ENAS), see :class:`Cell`.
        base_conv: the ENAS ``layer_base`` conv on every cell's input 1, see :class:`Cell`.
        classifier_bias: the classifier and auxiliary linear layers have a
            bias (DARTS ``nn.Linear``; the ENAS ``fc`` weights have none).
        aux_same_padding: the auxiliary head's last conv pads "SAME" and is
            globally pooled (ENAS) instead of a valid conv (DARTS).
        bn_eps: epsilon of every BatchNorm (PyTorch and DARTS 1e-5, ENAS 1e-3).
        aux_trainable: the auxiliary head's parameters require gradients
            (DARTS); ENAS never updates them (``requires_grad`` False).
        loose_inputs: unread cell inputs join the cell output (ENAS), see :class:`Cell`.

    Raises:
        ValueError: bad sizes or options, or an image too small for the reductions.
    """

    def __init__(self, genotype: Genotype, C: int, layers: int, num_classes: int, auxiliary: bool = False,
                 drop_path_prob: float = 0.0, in_channels: int = 3, image_size: int = 32,
                 stem_multiplier: int = 3, dropout: float = 0.0, drop_path_depth_scaled: bool = False,
                 aux_position: str = "reduction", final_relu: bool = False, drop_path_exempt: str = "identity",
                 base_conv: bool = False, classifier_bias: bool = True, aux_same_padding: bool = False,
                 bn_eps: float = 1e-5, aux_trainable: bool = True, loose_inputs: bool = False):
        super().__init__()
        for name, value in (("C", C), ("layers", layers), ("num_classes", num_classes),
                            ("in_channels", in_channels), ("image_size", image_size),
                            ("stem_multiplier", stem_multiplier)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if aux_position not in AUX_POSITIONS:
            raise ValueError(f"aux_position must be one of {', '.join(AUX_POSITIONS)}, got {aux_position!r}")
        if not 0.0 < bn_eps < 1.0:
            raise ValueError(f"bn_eps must be in (0, 1), got {bn_eps}")
        self.genotype = genotype
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = float(drop_path_prob)
        self.drop_path_depth_scaled = drop_path_depth_scaled
        self.final_relu = final_relu
        self.reduction_indices = tuple(sorted({layers // 3, 2 * layers // 3}))
        # ENAS: pool_layers = [N // 3, 2 * (N // 3) + 1] for N normal cells and
        # aux_head_indices = [pool_layers[-1] + 1]; for 15 + 2 cells that is 12
        # (a normal cell at 8x8), where DARTS's 2 * layers // 3 is 11.
        self.aux_index = 2 * layers // 3 + (aux_position == "after_reduction")
        if auxiliary and self.aux_index >= layers:
            raise ValueError(f"aux_position {aux_position!r} needs a cell after the last reduction; "
                             f"{layers} layers have none (use at least 4)")

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
            BatchNorm2d(c_curr),
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
            cell = Cell(entries, concat, c_prev_prev, c_prev, c_curr, reduction, reduction_prev,
                        drop_path_exempt=drop_path_exempt, base_conv=base_conv, loose_inputs=loose_inputs)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
            if i == self.aux_index:
                c_aux = c_prev
        if auxiliary:
            self.auxiliary_head = AuxiliaryHead(c_aux, num_classes, spatial=sizes[self.aux_index],
                                                same_padding=aux_same_padding, bias=classifier_bias)
            self.auxiliary_head.requires_grad_(aux_trainable)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(c_prev, num_classes, bias=classifier_bias)
        # The ops are built with PyTorch's default eps; eps is not a parameter,
        # so setting it afterwards changes no state_dict key.
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = bn_eps
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
        # Every cell output is read through a ReLU by the next two cells: take it once.
        r0 = r1 = F.relu(s1) if fast_kernels_enabled() else None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.cell_drop_prob(i), relus=None if r1 is None else (r0, r1))
            if r1 is not None:
                r0, r1 = r1, (F.relu(s1) if i + 1 < len(self.cells) else None)
            if i == self.aux_index and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)  # (B, num_classes)
        if self.final_relu:
            s1 = F.relu(s1)  # ENAS: the last cell's output ends in BN, not ReLU
        out = self.global_pooling(s1).flatten(1)  # (B, C_last)
        logits = self.classifier(self.dropout(out))  # (B, num_classes)
        return logits, logits_aux
