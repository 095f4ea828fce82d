"""Cost blocks of the macro space's fixed network (:class:`~shared_model.macro.MacroNetwork`).

The blocks mirror ``MacroNetwork.forward`` in eval mode: the stem; per layer
``j`` its op (kind ``macro_op``: ReLU-1x1 conv-BN, then ReLU-k x k conv-BN or
a pool) and, after the first layer, the concatenation of its skip states with
the op's output and the ReLU-1x1 conv-BN back to the layer width; after each
pooling layer a factorized reduction (no leading ReLU) of every state; and the
head. The width of a layer's skip conv depends on its number of skips, so the
cover holds, for every count ``s``, the architecture whose layers take their
first ``min(s, j)`` skips.
"""
from __future__ import annotations

from typing import Iterator, List

from shared_model.cost_blocks import BLOCK_KINDS, Block, NetSpec, half, register_op_kind, shape
from shared_model.macro import fixed_op
from shared_model.macro_arch import MACRO_OPS, MacroArch, pool_layers

BLOCK_KINDS["macro_op"] = lambda op, c, sep_as_conv: fixed_op(op, c, c, sep_as_conv)
register_op_kind("macro_op")


def macro_blocks(arch: MacroArch, spec: NetSpec) -> List[Block]:
    """The blocks of ``arch``'s fixed network at ``spec`` (``spec.layers`` must be its depth)."""
    if spec.layers != arch.num_layers:
        raise ValueError(f"the macro architecture has {arch.num_layers} layers, the priced network {spec.layers}")
    sep_as_conv = bool(spec.option("sep_as_conv", False))
    c, hw = spec.channels, spec.hw
    blocks = [Block("conv_bn", (spec.in_channels, c, 3, 1, 1), (shape(spec.in_channels, hw),))]
    pools = pool_layers(arch.num_layers)
    for j, op in enumerate(arch.ops):
        blocks.append(Block("macro_op", (op, c, sep_as_conv), (shape(c, hw),)))
        if j > 0:
            terms = len(arch.skip_sources(j)) + 1
            blocks.append(Block("concat", (), (shape(c, hw),) * terms))
            blocks.append(Block("relu_conv_bn", (terms * c, c, 1, 1, 0), (shape(terms * c, hw),)))
        if j in pools:  # every state so far (the stem and layers 0..j) is halved and widened
            blocks += [Block("factorized_reduce", (c, 2 * c, False), (shape(c, hw),))] * (j + 2)
            c, hw = 2 * c, half(hw)
    pre = "relu" if spec.option("final_relu", False) else "none"
    blocks.append(Block("head", (c, spec.num_classes, bool(spec.option("classifier_bias", False)), pre),
                        (shape(c, hw),)))
    return blocks


def macro_cover(spec: NetSpec) -> Iterator[MacroArch]:
    """Every op at every layer, and every skip count at every layer (see the module docstring)."""
    layers = spec.layers
    no_skips = tuple(tuple([0] * j) for j in range(layers))
    for op in MACRO_OPS:
        yield MacroArch((op,) * layers, no_skips)
    for s in range(1, layers):
        yield MacroArch((MACRO_OPS[0],) * layers, tuple(tuple([1] * min(s, j) + [0] * (j - min(s, j)))
                                                         for j in range(layers)))
