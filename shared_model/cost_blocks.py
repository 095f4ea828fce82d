"""Child networks as sums of cost blocks: the unit of a latency lookup table.

Hardware-aware NAS predicts the latency of a network as the sum of
separately measured pieces (MnasNet Sec. 4 measures whole models; FBNet
Sec. 3.2 and ProxylessNAS Sec. 3.3 sum a per-layer lookup table). A
:class:`Block` is one such piece of a *child network* in eval mode: a
searchable op at one shape and stride (kind ``op``), or a fixed part (the
stem, a cell's preprocessing, the node sums and concatenation, the head).
A space lists the blocks of an architecture's child network
(``Space.cost_blocks``); each block can be built and run on its own, so its
latency can be measured, and its parameters and multiply-adds counted.

The decomposition is exact for parameters and multiply-adds: the blocks of a
child network add up to :func:`~shared_model.profile.count_parameters` and
:func:`~shared_model.profile.count_macs` of the network itself (tested for
every space that implements it). Latency is additive only approximately: the
Python glue between blocks (list handling, the loop over cells) is in no block.

Torch only: no I/O, no config.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from shared_model.ops import FactorizedReduce, ReLUConvBN, make_op
from shared_model.profile import count_call_macs, count_parameters

Shape = Tuple[int, int, int]  # (C, H, W) of one image
HW = Tuple[int, int]  # (H, W) of a feature map


def half(hw: HW) -> HW:
    """The size after a stride-2 op, a factorized reduction or a ceil-mode 2x2 pool."""
    return (hw[0] + 1) // 2, (hw[1] + 1) // 2


def shape(c: int, hw: HW) -> Shape:
    return (c, hw[0], hw[1])


@dataclass(frozen=True)
class NetSpec:
    """The child network a cost refers to (what ``Space.build_child`` is given).

    Attributes:
        channels: initial channels C.
        layers: the space's ``layers`` (cells; NAS-Bench-201: cells per stage).
        num_classes: classifier outputs.
        in_channels: image channels.
        image_size: image height (and width unless ``image_width`` is given).
        image_width: image width of non-square inputs (None: square).
        options: ``build_child`` options that change the eval-mode network,
            as sorted ``(name, value)`` pairs (e.g. ``stem_multiplier``).
    """

    channels: int
    layers: int
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32
    options: Tuple[Tuple[str, Any], ...] = field(default=())
    image_width: Optional[int] = None

    def __post_init__(self) -> None:
        if self.image_width == self.image_size:
            object.__setattr__(self, "image_width", None)
        for name in ("channels", "layers", "num_classes", "in_channels", "image_size", "image_width"):
            value = getattr(self, name)
            if name == "image_width" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))

    @property
    def hw(self) -> HW:
        """``(H, W)`` of the input images."""
        return self.image_size, self.image_width or self.image_size

    @classmethod
    def make(cls, channels: int, layers: int, num_classes: int = 10, in_channels: int = 3,
             image_size: Union[int, Sequence[int]] = 32, **options: Any) -> "NetSpec":
        """A spec; ``image_size`` is ``H`` (square) or ``(H, W)``."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        return cls(channels, layers, num_classes, in_channels, int(h), tuple(options.items()), int(w))

    def option(self, name: str, default: Any) -> Any:
        return dict(self.options).get(name, default)

    def to_dict(self) -> Dict[str, Any]:
        size: Any = self.image_size if self.image_width is None else list(self.hw)
        return {"channels": self.channels, "layers": self.layers, "num_classes": self.num_classes,
                "in_channels": self.in_channels, "image_size": size, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NetSpec":
        size = data["image_size"]
        return cls.make(int(data["channels"]), int(data["layers"]), int(data["num_classes"]),
                        int(data["in_channels"]), size if isinstance(size, int) else [int(v) for v in size],
                        **dict(data.get("options", {})))


@dataclass(frozen=True)
class Block:
    """One separately measurable piece of a child network.

    Attributes:
        kind: a key of :data:`BLOCK_KINDS` (``op`` for a searchable op).
        args: the builder's arguments (ints, strings, bools).
        inputs: the ``(C, H, W)`` shape of each input tensor, batch excluded.
    """

    kind: str
    args: Tuple[Any, ...]
    inputs: Tuple[Shape, ...]

    def __post_init__(self) -> None:
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"unknown block kind {self.kind!r}; known: {', '.join(sorted(BLOCK_KINDS))}")

    @property
    def is_op(self) -> bool:
        """A searchable op (the table's "entries"); everything else is a fixed part."""
        return self.kind in OP_KINDS

    @property
    def key(self) -> str:
        """Stable text key, e.g. ``op(sep_conv_3x3,16,2)@16x32x32``."""
        args = ",".join(str(a) for a in self.args)
        shapes = "+".join("x".join(str(s) for s in shape) for shape in self.inputs)
        return f"{self.kind}({args})@{shapes}"


class _Sum(nn.Module):
    """Left-to-right sum of the inputs, as the cells add their terms."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return sum(xs[1:], xs[0])


class _Concat(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)  # (B, sum C, H, W)


class _Zeros(nn.Module):
    """A node whose every incoming edge is ``none`` (NAS-Bench-201)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class _Head(nn.Module):
    """Optional pre-activation, global average pooling, linear classifier."""

    def __init__(self, channels: int, num_classes: int, bias: bool, pre: str):
        super().__init__()
        pres = {"none": nn.Identity, "relu": nn.ReLU,
                "bn_relu": lambda: nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=False))}
        self.pre = pres[pre]()
        self.classifier = nn.Linear(channels, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pre(x).mean((2, 3)))  # (B, classes)


def _stem(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
                         nn.BatchNorm2d(c_out))


def _reduce(c_in: int, c_out: int, relu: bool) -> nn.Module:
    # ENAS's reductions of unread cell inputs and of macro states have no leading ReLU.
    return FactorizedReduce(c_in, c_out, relu=relu)


def _resblock(c_in: int, c_out: int) -> nn.Module:
    from shared_model.nb201 import ResNetBasicBlock

    return ResNetBasicBlock(c_in, c_out)


#: kind -> builder(*args) -> module whose forward takes the block's inputs.
BLOCK_KINDS: Dict[str, Callable[..., nn.Module]] = {
    "op": lambda name, c, stride: make_op(name, c, stride, affine=True),
    "conv_bn": _stem,
    "relu_conv_bn": lambda c_in, c_out, k, stride, pad: ReLUConvBN(c_in, c_out, k, stride, pad),
    "factorized_reduce": _reduce,
    "resblock": _resblock,
    "add": lambda: _Sum(),
    "concat": lambda: _Concat(),
    "zeros": lambda: _Zeros(),
    "head": lambda c, classes, bias, pre: _Head(c, classes, bias, pre),
}


#: Block kinds that are searchable ops (the rest are fixed parts).
OP_KINDS = {"op"}


def register_op_kind(kind: str) -> None:
    """Count a space's own block kind (registered in :data:`BLOCK_KINDS`) as a searchable op."""
    OP_KINDS.add(kind)


def op_block(name: str, channels: int, stride: int, hw: HW) -> Block:
    """A searchable op reading a ``(channels, H, W)`` tensor."""
    return Block("op", (name, channels, stride), (shape(channels, hw),))


def build_block(block: Block) -> nn.Module:
    """The block's module in eval mode (on the current default device)."""
    return BLOCK_KINDS[block.kind](*block.args).eval()


def block_inputs(block: Block, batch_size: int, device: Any = None,
                 generator: torch.Generator | None = None) -> List[torch.Tensor]:
    """Random inputs of the block's shapes, ``(batch_size, C, H, W)`` each."""
    return [torch.randn((batch_size,) + tuple(s), generator=generator).to(device) for s in block.inputs]


@functools.lru_cache(maxsize=None)
def block_params(block: Block) -> int:
    """Parameter elements of the block (built on the meta device)."""
    with torch.device("meta"):
        return count_parameters(build_block(block), exclude=())


@functools.lru_cache(maxsize=None)
def block_macs(block: Block) -> int:
    """Multiply-accumulates of one image through the block (meta device, nothing computed)."""
    with torch.device("meta"):
        module = build_block(block)
        xs = [torch.empty((1,) + tuple(s)) for s in block.inputs]
        return count_call_macs(lambda: module(*xs))


def total(blocks: Sequence[Block], cost: Callable[[Block], float]) -> float:
    """Sum of ``cost(block)`` over ``blocks``."""
    return float(sum(cost(b) for b in blocks))
