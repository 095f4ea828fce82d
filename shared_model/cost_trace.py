"""Cost blocks of any child network by tracing: the fallback for spaces that do not list their own.

A space that does not implement ``Space.cost_blocks`` still gets a latency
table: its child network is built on the meta device and run once with a
forward hook on every leaf module (a module without submodules: a conv, a BN,
a ReLU, a pool, a linear layer, ...). Each call becomes a block of kind
``module`` keyed by the module's class, its ``extra_repr`` (which holds every
hyperparameter) and its input shapes; a copy of the module is kept as the
block's template, so the block can be built and timed in this process.

Compared with a space's own blocks this is coarser and less complete: the
functional glue between modules (``torch.cat``, additions, ``F.relu``) is in
no block and ends up in the table's calibrated overhead, and the blocks an
architecture can place are found by tracing random architectures
(``Space.cost_cover``), so a rare one may be missing from a table (pricing it
is then an error that names the block). Parameters and multiply-adds do not
use this path: they are counted on the whole network.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch import nn

from shared_model.cost_blocks import BLOCK_KINDS, Block

#: ``(class path, extra_repr)`` -> a module of that kind, filled by :func:`traced_blocks`.
_TEMPLATES: Dict[Tuple[str, str], nn.Module] = {}


def _class_path(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _build_traced(class_path: str, extra_repr: str) -> nn.Module:
    try:
        template = _TEMPLATES[(class_path, extra_repr)]
    except KeyError:
        raise ValueError(f"no traced template of {class_path}({extra_repr}); trace a network that uses it "
                         "first (Space.cost_blocks)") from None
    module = copy.deepcopy(template).to_empty(device=torch.get_default_device())
    for sub in module.modules():  # meta weights have no values: give them the module's own init
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    for p in module.parameters(recurse=False):
        with torch.no_grad():
            p.normal_(0, 0.1)
    return module


BLOCK_KINDS["module"] = _build_traced


def traced_blocks(build: Callable[[], nn.Module], input_shape: Tuple[int, int, int]) -> List[Block]:
    """The leaf-module calls of one eval-mode forward pass of ``build()``'s network as blocks.

    Args:
        build: builds the network (called under the meta device: nothing is allocated).
        input_shape: ``(C, H, W)`` of one image.
    """
    with torch.device("meta"):
        model = build().eval()
    blocks: List[Block] = []
    seen: Dict[Tuple[str, str], nn.Module] = {}

    def hook(module: nn.Module, inputs: Tuple[Any, ...], _output: Any) -> None:
        shapes = tuple(tuple(int(s) for s in t.shape[1:]) for t in inputs if isinstance(t, torch.Tensor))
        key = (_class_path(module), module.extra_repr())
        seen.setdefault(key, module)
        blocks.append(Block("module", key, shapes))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.empty((1,) + tuple(input_shape), device="meta"))
    finally:
        for h in handles:
            h.remove()
    for key, module in seen.items():  # copied once the hooks are gone, so templates carry none
        _TEMPLATES.setdefault(key, copy.deepcopy(module))
    return blocks
