"""Candidate operations shared by the supernet and the child networks.

The op definitions follow the DARTS code (Liu et al. 2019, Sec. 3.1 and the
released ``cnn/operations.py``) because ENAS's micro ops are the same modules
(Pham et al. 2018, Sec. 2.3: "separable convolutions ... applied twice").
Every op maps ``C`` channels to ``C`` channels; with ``stride=2`` it halves the
spatial size.

Ops are looked up by name in :data:`OPS`, a registry that third-party code can
extend with :func:`register_op`. Each op carries an :class:`OpInfo` (its kind and
family) that the supernet, the child network and the policies read instead of
matching names: pools get a BN in the DARTS search MixedOp, a stride-1 skip is
never drop-path'ed, the ENAS controller biases separable convs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import nn

from shared_model.batch_norm import BatchNorm2d
from shared_model.kernels import DepthwiseConv2d, PointwiseConv2d, cat_channels, even_odd_pixels
from shared_model.native_bn import fuses_relu

OpFactory = Callable[[int, int, bool], nn.Module]

#: name -> factory(C, stride, affine) -> module. Extend with :func:`register_op`.
OPS: Dict[str, OpFactory] = {}

#: The ENAS micro op set in the official index order (REFERENCE Sec. 1).
ENAS_MICRO_OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "skip_connect")

#: The DARTS search op set; the order matters for tie-breaking in derive.
DARTS_OPS = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)

#: Op kinds: ``zero`` (DARTS ``none``), ``skip`` (identity at stride 1), ``pool``, ``conv``.
OP_KINDS = ("zero", "skip", "pool", "conv")


@dataclass(frozen=True)
class OpInfo:
    """What the rest of the code may know about an op without building it.

    Attributes:
        kind: one of :data:`OP_KINDS`. ``pool`` ops are followed by a non-affine
            BN in the DARTS search MixedOp; a ``skip`` op at stride 1 is the
            identity, which DARTS never drop-paths.
        family: a coarser name shared by sizes of one op (``sep_conv``,
            ``dil_conv``, ``nor_conv``, ...): ENAS biases its controller
            towards ``sep_conv`` (REFERENCE Sec. 2).
    """

    kind: str = "conv"
    family: str = ""

    def __post_init__(self) -> None:
        if self.kind not in OP_KINDS:
            raise ValueError(f"op kind must be one of {', '.join(OP_KINDS)}, got {self.kind!r}")

    def is_identity(self, stride: int) -> bool:
        """Whether the op is the parameter-free identity at ``stride``."""
        return self.kind == "skip" and stride == 1


#: name -> :class:`OpInfo`, filled by :func:`register_op`.
OP_INFO: Dict[str, OpInfo] = {}


def register_op(name: str, info: Optional[OpInfo] = None) -> Callable[[OpFactory], OpFactory]:
    """Decorator that registers ``factory(C, stride, affine)`` under ``name`` with its metadata.

    Args:
        name: the op name used in genotypes and spaces.
        info: its :class:`OpInfo` (default: a plain ``conv``).
    """

    def wrap(factory: OpFactory) -> OpFactory:
        if name in OPS:
            raise ValueError(f"op {name!r} is already registered")
        OPS[name] = factory
        OP_INFO[name] = info or OpInfo()
        return factory

    return wrap


def op_info(name: str) -> OpInfo:
    """The metadata of a registered op."""
    try:
        return OP_INFO[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}") from None


def takes_relu(op: nn.Module) -> bool:
    """Whether ``op`` starts with a ReLU of its input, so ``op(x) == op(relu(x), relu_done=True)``.

    Most cell ops start with ``ReLU(x)``; a cell that feeds one state to several
    of them (DARTS: every conv op of every edge leaving the state, up to 16)
    computes that ReLU once and passes it with ``relu_done=True``.
    """
    return isinstance(op, _ReLUFirst) and op.leading_relu


def apply_with_relu(op: nn.Module, x: torch.Tensor, relu_x: Optional[torch.Tensor]) -> torch.Tensor:
    """``op(x)``, reading the precomputed ``relu_x = relu(x)`` when ``op`` starts with that ReLU."""
    if relu_x is not None and takes_relu(op):
        return op(relu_x, relu_done=True)
    return op(x)


def takes_scale(op: nn.Module) -> bool:
    """Whether ``op(x, scale=s) == s * op(x)`` for a scalar tensor ``s`` or per-sample ``(B,)`` factors.

    The ops ending in a :class:`BatchNorm2d` apply ``s`` inside it: a scalar as
    its weight (DARTS's mixed edge passes each op's mixing weight that way, Sec.
    2.2, Eq. 2), per-sample factors (a cell's drop-path mask) inside the native
    kernels' passes.
    """
    return isinstance(op, _ReLUFirst)


class _ReLUFirst:
    """Mixin of the ops whose first module is ``nn.ReLU`` (see :func:`takes_relu`) and last a
    :class:`BatchNorm2d` (see :func:`takes_scale`)."""

    leading_relu = True

    def forward(self, x: torch.Tensor, relu_done: bool = False, scale: Optional[torch.Tensor] = None,
                relu_out: bool = False) -> torch.Tensor:
        """``relu_out``: end with a ReLU, inside the last batch norm's passes where it can."""
        *mods, last = self._modules.values()
        for m in mods[1:] if relu_done else mods:  # relu_done: ``x`` is already the leading ReLU's output
            x = m(x)
        if relu_out:
            return last(x, scale, relu=True)
        return last(x, scale) if scale is not None else last(x)


class ReLUConvBN(_ReLUFirst, nn.Sequential):
    """ReLU -> conv -> BN, the DARTS preprocessing block."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True, track_running_stats: bool = True):
        conv = PointwiseConv2d(c_in, c_out) if (kernel, stride, padding) == (1, 1, 0) else \
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        super().__init__(
            nn.ReLU(inplace=False),
            conv,
            BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats),
        )


class DilConv(_ReLUFirst, nn.Sequential):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN (DARTS ``DilConv``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 dilation: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(c_in, kernel, stride=stride, padding=padding, dilation=dilation),
            PointwiseConv2d(c_in, c_out),
            BatchNorm2d(c_out, affine=affine),
        )


class SepConv(_ReLUFirst, nn.Sequential):
    """Two stacked dilation-1 :class:`DilConv` blocks; only the first may stride.

    ENAS Sec. 2.3 and DARTS ``SepConv``: the separable conv is applied twice.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )

    def forward(self, x: torch.Tensor, relu_done: bool = False,
                scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        first, second = self._modules.values()
        if fuses_relu(x):  # the second block's leading ReLU inside the first one's batch norm
            return second(first(x, relu_done=relu_done, relu_out=True), relu_done=True, scale=scale)
        return second(first(x, relu_done=relu_done), scale=scale)


class Identity(nn.Module):
    """Skip connection at stride 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The DARTS ``none`` op: a zero tensor of the output shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(_ReLUFirst, nn.Module):
    """Halve the spatial size with two offset 1x1 convs on every second pixel, concatenated.

    The second branch reads the input shifted by one pixel so that together the
    two halves cover every input position (DARTS ``FactorizedReduce``; ENAS
    ``_factorized_reduction``). The maths is DARTS's stride-2 1x1 conv, but it
    is computed as "subsample every second pixel, then a stride-1 1x1 conv":
    oneDNN's backward-weights kernel for a 1x1 *stride-2* conv on a
    channels-last input with fewer channels than its SIMD block (8 on AVX2)
    writes past its workspace (uxlfoundation/oneDNN#6035): heap corruption with
    one thread, silently wrong weight gradients with more. The parameter shapes
    are unchanged, so checkpoints of the stride-2 form load as they are.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True, relu: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        # ENAS's _factorized_reduction has no leading ReLU (relu=False); DARTS's has one.
        self.relu = nn.ReLU(inplace=False) if relu else Identity()
        self.conv_1 = PointwiseConv2d(c_in, c_out // 2)
        self.conv_2 = PointwiseConv2d(c_in, c_out // 2)
        self.bn = BatchNorm2d(c_out, affine=affine)

    @property
    def leading_relu(self) -> bool:  # ENAS's final combine swaps the ReLU for an Identity
        return isinstance(self.relu, nn.ReLU)

    def forward(self, x: torch.Tensor, relu_done: bool = False,
                scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not relu_done:
            x = self.relu(x)  # (B, C_in, H, W)
        # The shifted grid misses the last row/column of odd sizes: it comes zero-padded, as
        # DARTS's pad-then-stride does, so both branches have the same spatial shape.
        even, shifted = even_odd_pixels(x)  # each (B, C_in, ceil(H/2), ceil(W/2))
        a = self.conv_1(even)  # (B, C_out/2, ceil(H/2), ceil(W/2))
        b = self.conv_2(shifted)  # (B, C_out/2, ceil(H/2), ceil(W/2))
        out = cat_channels([a, b])  # (B, C_out, ceil(H/2), ceil(W/2))
        return self.bn(out, scale) if scale is not None else self.bn(out)


class Conv7x1x1x7(_ReLUFirst, nn.Sequential):
    """ReLU -> 1x7 conv -> 7x1 conv -> BN (AmoebaNet's ``conv_7x1_1x7``)."""

    def __init__(self, c: int, stride: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(c, c, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            BatchNorm2d(c, affine=affine),
        )


def _sep(kernel: int) -> OpFactory:
    return lambda c, stride, affine: SepConv(c, c, kernel, stride, kernel // 2, affine)


def _dil(kernel: int) -> OpFactory:
    return lambda c, stride, affine: DilConv(c, c, kernel, stride, kernel - 1, 2, affine)


register_op("none", OpInfo("zero"))(lambda c, stride, affine: Zero(stride))
register_op("avg_pool_3x3", OpInfo("pool", "avg_pool"))(
    lambda c, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False))
register_op("max_pool_3x3", OpInfo("pool", "max_pool"))(
    lambda c, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1))
# At stride 2 the skip is a FactorizedReduce (DARTS), so it is only the identity at stride 1.
register_op("skip_connect", OpInfo("skip"))(
    lambda c, stride, affine: Identity() if stride == 1 else FactorizedReduce(c, c, affine))
register_op("sep_conv_3x3", OpInfo("conv", "sep_conv"))(_sep(3))
register_op("sep_conv_5x5", OpInfo("conv", "sep_conv"))(_sep(5))
register_op("sep_conv_7x7", OpInfo("conv", "sep_conv"))(_sep(7))
register_op("dil_conv_3x3", OpInfo("conv", "dil_conv"))(_dil(3))
register_op("dil_conv_5x5", OpInfo("conv", "dil_conv"))(_dil(5))
register_op("conv_7x1_1x7", OpInfo("conv", "conv_7x1_1x7"))(lambda c, stride, affine: Conv7x1x1x7(c, stride, affine))


def make_op(name: str, channels: int, stride: int, affine: bool = True) -> nn.Module:
    """Build the op ``name`` for ``channels`` channels at ``stride``."""
    try:
        factory = OPS[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}") from None
    return factory(channels, stride, affine)


# NAS-Bench-201 (Dong & Yang 2020, Sec. 2.1): ReLU -> k x k conv -> BN, padding k // 2 so
# that stride 1 keeps the spatial size. Its avg_pool_3x3 (count_include_pad=False),
# skip_connect and none are the ops above.
register_op("nor_conv_1x1", OpInfo("conv", "nor_conv"))(
    lambda c, stride, affine: ReLUConvBN(c, c, 1, stride, 0, affine))
register_op("nor_conv_3x3", OpInfo("conv", "nor_conv"))(
    lambda c, stride, affine: ReLUConvBN(c, c, 3, stride, 1, affine))
