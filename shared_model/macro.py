"""ENAS macro networks: the weight-sharing search network and the fixed network (Pham et al. 2018, Sec. 2.3).

Both follow the official ``src/cifar10/general_child.py`` with
``whole_channels`` (the macro scripts' ``--controller_search_whole_channels``):
a 3x3 conv stem with BN, ``L`` layers, after layers ``L // 3 - 1`` and
``2 L // 3 - 1`` a factorized reduction (two offset 1x1 convs on every second
pixel, concatenated, BN, no ReLU) of *every* state, stem included; then
global average pooling, dropout and a bias-free linear classifier. All BNs use
epsilon 1e-3 (official ``batch_norm``).

* :class:`MacroSupernet` (``_enas_layer``): every layer holds all six op
  branches; a branch is a 1x1 conv-BN-ReLU followed by a k x k conv (or a
  depthwise-separable k x k conv) -BN-ReLU, or by a 3x3 pool (stride 1). The
  layer output is the chosen branch plus the states its skip bits select,
  **summed**, then BN (no BN on layer 0, which has no skips). Channels stay
  ``C`` through the whole network, reductions included, as in the official
  search network. Every BN uses batch statistics, also in evaluation (as every
  supernet here; the official search evaluates rewards with moving averages).
* :class:`MacroNetwork` (``_fixed_layer``): only the chosen op, in the
  official fixed-layer order ReLU-1x1 conv-BN-ReLU-k x k conv-BN; skips are
  **concatenated** with the op's output, then ReLU-1x1 conv-BN back to ``C``;
  channels double at each reduction. The official fixed layer builds the two
  separable ops as full k x k convs and cannot build the pools at all (its
  branch for op 4/5 is ``pass``): ``sep_as_conv=True`` reproduces the former;
  pools here are ReLU-1x1 conv-BN followed by the 3x3 pool.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from shared_model.macro_arch import MACRO_OPS, MacroArch, pool_layers
from shared_model.ops import FactorizedReduce
from shared_model.supernet import use_batch_stats

BN_EPS = 1e-3  # official batch_norm epsilon


def _kxk(c: int, kernel: int, separable: bool) -> List[nn.Module]:
    """A stride-1 k x k conv ``c -> c``: full, or depthwise then pointwise (TF ``separable_conv2d``)."""
    if separable:
        return [nn.Conv2d(c, c, kernel, padding=kernel // 2, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False)]
    return [nn.Conv2d(c, c, kernel, padding=kernel // 2, bias=False)]


def _pool(op: str) -> nn.Module:
    # TF SAME pooling: averages exclude the padding, max pads with -inf (PyTorch's own max padding).
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return nn.MaxPool2d(3, stride=1, padding=1)


def _kernel(op: str) -> int:
    return 5 if op.endswith("5x5") else 3


def search_branch(op: str, c_in: int, c: int) -> nn.Sequential:
    """One op branch of a search layer (official ``_conv_branch`` / ``_pool_branch``): ``c_in -> c``."""
    layers: List[nn.Module] = [nn.Conv2d(c_in, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=False)]
    if "pool" in op:
        return nn.Sequential(*layers, _pool(op))
    return nn.Sequential(*layers, *_kxk(c, _kernel(op), op.startswith("sep")), nn.BatchNorm2d(c),
                         nn.ReLU(inplace=False))


def fixed_op(op: str, c_in: int, c: int, sep_as_conv: bool) -> nn.Sequential:
    """The op of a fixed layer (official ``_fixed_layer``): ReLU-1x1 conv-BN, then ReLU-k x k conv-BN or a pool."""
    layers: List[nn.Module] = [nn.ReLU(inplace=False), nn.Conv2d(c_in, c, 1, bias=False), nn.BatchNorm2d(c)]
    if "pool" in op:
        return nn.Sequential(*layers, _pool(op))
    separable = op.startswith("sep") and not sep_as_conv
    return nn.Sequential(*layers, nn.ReLU(inplace=False), *_kxk(c, _kernel(op), separable), nn.BatchNorm2d(c))


def _check_sizes(channels: int, num_layers: int, num_classes: int, in_channels: int, image_size: int) -> None:
    for name, value in (("channels", channels), ("layers", num_layers), ("num_classes", num_classes),
                        ("in_channels", in_channels), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _MacroBase(nn.Module):
    """Stem, per-reduction factorized reductions of every state, GAP-dropout-linear head."""

    def __init__(self, channels: int, num_layers: int, num_classes: int, in_channels: int, image_size: int,
                 dropout: float, widen: bool, bias: bool):
        super().__init__()
        _check_sizes(channels, num_layers, num_classes, in_channels, image_size)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.channels, self.num_layers = channels, num_layers
        self.pool_at = pool_layers(num_layers)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        self.reduce = nn.ModuleDict()
        self.layer_channels: List[int] = []
        c = channels
        for j in range(num_layers):
            self.layer_channels.append(c)
            if j in self.pool_at:
                c_out = 2 * c if widen else c
                if c_out % 2:
                    raise ValueError(f"the factorized reduction needs an even channel count, got {c_out}; "
                                     "use an even model.channels")
                # j + 2 states: the stem and layers 0..j.
                self.reduce[str(j)] = nn.ModuleList(FactorizedReduce(c, c_out, relu=False) for _ in range(j + 2))
                c = c_out
        self.out_channels = c
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(c, num_classes, bias=bias)

    def _set_eps(self, eps: float) -> None:
        # Built with PyTorch's default; eps is not a parameter, so state_dicts are unaffected.
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = eps

    def _run(self, x: torch.Tensor, layer_out) -> torch.Tensor:
        """States through the layers; ``layer_out(j, states)`` is layer ``j``'s output."""
        states = [self.stem(x)]  # state 0: (B, C, H, W)
        for j in range(self.num_layers):
            states.append(layer_out(j, states))  # (B, C_j, H_j, W_j)
            if j in self.pool_at:
                states = [fr(s) for fr, s in zip(self.reduce[str(j)], states)]  # every state halved
        return states[-1]

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(h.mean(dim=(2, 3))))  # (B, classes)


class MacroSearchLayer(nn.Module):
    """All six branches of one search layer and the BN after the skip sum."""

    def __init__(self, layer: int, channels: int):
        super().__init__()
        self.branches = nn.ModuleList(search_branch(op, channels, channels) for op in MACRO_OPS)
        self.bn = nn.BatchNorm2d(channels) if layer > 0 else None

    def forward(self, states: List[torch.Tensor], op: int, sources: List[int]) -> torch.Tensor:
        out = self.branches[op](states[-1])  # (B, C, H, W)
        if self.bn is None:
            return out
        for i in sources:
            out = out + states[i]
        return self.bn(out)


class MacroSupernet(_MacroBase):
    """The macro search network (official ``_enas_layer``, ``whole_channels``).

    Args:
        channels: C, the width of every layer (official search: 36); must be even.
        num_layers: L (official search: 12).
        num_classes, in_channels, image_size: data shape.
        dropout: before the classifier (official keep_prob 0.9 -> 0.1).
    """

    def __init__(self, channels: int = 36, num_layers: int = 12, num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, dropout: float = 0.0):
        super().__init__(channels, num_layers, num_classes, in_channels, image_size, dropout, widen=False,
                         bias=False)
        self.layers = nn.ModuleList(MacroSearchLayer(j, channels) for j in range(num_layers))
        self._set_eps(BN_EPS)
        use_batch_stats(self)

    def forward(self, x: torch.Tensor, arch: MacroArch) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Run ``arch`` on ``x`` (B, C_in, H, W); returns ``(logits, None)`` (no auxiliary head)."""
        if not isinstance(arch, MacroArch):
            raise TypeError(f"arch must be a MacroArch, got {type(arch).__name__}")
        if arch.num_layers != self.num_layers:
            raise ValueError(f"the architecture has {arch.num_layers} layers, the network {self.num_layers}")
        ops = [MACRO_OPS.index(op) for op in arch.ops]
        h = self._run(x, lambda j, states: self.layers[j](states, ops[j], arch.skip_sources(j)))
        return self._head(h), None


class MacroFixedLayer(nn.Module):
    """One fixed layer: its op, and for layers with skips the concat-ReLU-1x1 conv-BN."""

    def __init__(self, arch: MacroArch, layer: int, c_in: int, channels: int, sep_as_conv: bool):
        super().__init__()
        self.sources = arch.skip_sources(layer)
        self.op = fixed_op(arch.ops[layer], c_in, channels, sep_as_conv)
        # Official: layers after the first always pass through the skip conv, even with no skip set.
        self.combine = None if layer == 0 else nn.Sequential(
            nn.ReLU(inplace=False), nn.Conv2d((len(self.sources) + 1) * channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels))

    def forward(self, states: List[torch.Tensor]) -> torch.Tensor:
        out = self.op(states[-1])  # (B, C, H, W)
        if self.combine is None:
            return out
        return self.combine(torch.cat([states[i] for i in self.sources] + [out], dim=1))  # (B, C, H, W)


class MacroNetwork(_MacroBase):
    """The fixed macro network for retraining (official ``_fixed_layer``, ``whole_channels``).

    Same interface as :class:`~shared_model.child.ChildNetwork`: ``forward(x) -> (logits, None)``.

    Args:
        arch: the architecture; its depth is the network's.
        channels: C of the first stage, doubled at each reduction (official final: 96).
        num_classes, in_channels, image_size: data shape.
        dropout: before the classifier (official final keep_prob 0.5 -> 0.5).
        sep_as_conv: build the separable ops as full k x k convs, as the official fixed layer does.
        bn_eps: epsilon of every BN (official 1e-3).
        classifier_bias: bias in the linear classifier (official: none).
        final_relu: ReLU before global pooling (official: none; the last layer ends in BN).
    """

    def __init__(self, arch: MacroArch, channels: int = 96, num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, dropout: float = 0.0, sep_as_conv: bool = False, bn_eps: float = BN_EPS,
                 classifier_bias: bool = False, final_relu: bool = False):
        if not isinstance(arch, MacroArch):
            raise TypeError(f"arch must be a MacroArch, got {type(arch).__name__}")
        if not 0.0 < bn_eps < 1.0:
            raise ValueError(f"bn_eps must be in (0, 1), got {bn_eps}")
        super().__init__(channels, arch.num_layers, num_classes, in_channels, image_size, dropout, widen=True,
                         bias=classifier_bias)
        self.arch, self.final_relu = arch, final_relu
        # The stem (C) feeds layer 0; a reduction's output (2C) feeds the next layer.
        self.layers = nn.ModuleList(
            MacroFixedLayer(arch, j, c, c, sep_as_conv) for j, c in enumerate(self.layer_channels))
        self._set_eps(bn_eps)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Return ``(logits, None)`` for ``x`` (B, C_in, H, W)."""
        h = self._run(x, lambda j, states: self.layers[j](states))
        if self.final_relu:
            h = torch.relu(h)
        return self._head(h), None
