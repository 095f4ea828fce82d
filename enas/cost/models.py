"""Cost models behind one interface: ``--cost params|macs|latency`` or a user plug-in.

A cost model prices the *child network* an architecture becomes (the
space's ``build_child`` at a :class:`~shared_model.cost_blocks.NetSpec`),
not the search supernet:

* ``params``: exact parameter count (auxiliary head excluded);
* ``macs``: exact multiply-accumulates per forward pass of one image,
  counted by ``torch.utils.flop_counter.FlopCounterMode``;
* ``latency``: milliseconds per forward pass at the table's batch size,
  predicted from a latency table (:mod:`enas.cost.lut`);
* a plug-in ``package.module:factory`` (imported, never evaluated):
  ``factory(space=..., spec=...)`` returns an object with ``arch_cost(arch)
  -> float`` and optionally ``unit`` and ``block_cost(block) -> float`` (the
  latter makes it usable by DARTS).

All three built-in models sum the space's cost blocks
(``Space.cost_blocks``), which for parameters and MACs equals counting the
built network (tested), and is fast enough to price every sampled
architecture. A space without its own cost blocks gets exact parameters and
MACs by counting its child network built on the meta device, and latency from
blocks traced from that network (:mod:`shared_model.cost_trace`).
"""
from __future__ import annotations

import importlib
import json
import math
from typing import Any, Callable, Dict, List, Optional

import torch

from enas.cost.lut import LatencyTable, read_table, space_identity
from enas.errors import UserError
from shared_model.cost_blocks import Block, NetSpec, block_macs, block_params
from shared_model.profile import count_macs, count_parameters
from shared_model.spaces import Space

BUILTIN = ("params", "macs", "latency")
UNITS = {"params": "params", "macs": "MACs", "latency": "ms"}


def cost_spec(channels: int, layers: int, num_classes: int, in_channels: int, image_size: Any,
              stem_multiplier: int = 3) -> NetSpec:
    """The child network a search prices (one helper, so tables and searches agree); ``image_size``
    is ``H`` or ``(H, W)``."""
    try:
        return NetSpec.make(channels, layers, num_classes, in_channels, image_size, stem_multiplier=stem_multiplier)
    except ValueError as exc:
        raise UserError(str(exc)) from None


class CostModel:
    """Prices architectures of one space's child network.

    Args:
        space: the search space.
        spec: the child network the cost refers to.
        name: ``params``, ``macs``, ``latency`` or the plug-in path.
        unit: the unit of every returned cost.
        block_cost: price of one block, or None when the model prices whole networks only.
        whole: price of a whole architecture when it is not a sum of blocks.
        constant: added once per network (a latency table's calibrated overhead).
    """

    def __init__(self, space: Space, spec: NetSpec, name: str, unit: str,
                 block_cost: Optional[Callable[[Block], float]] = None,
                 whole: Optional[Callable[[Any], float]] = None, constant: float = 0.0):
        self.space, self.spec, self.name, self.unit = space, spec, name, unit
        self._block_cost, self._whole, self.constant = block_cost, whole, float(constant)
        self._cache: Dict[str, float] = {}

    def blocks(self, arch: Any) -> List[Block]:
        try:
            return self.space.cost_blocks(arch, self.spec)
        except ValueError as exc:
            raise UserError(f"cannot price the {self.space.name} network: {exc}") from None

    def __call__(self, arch: Any) -> float:
        """The cost of ``arch`` (cached by its JSON form)."""
        key = json.dumps(self.space.arch_to_json(arch), sort_keys=True)
        if key not in self._cache:
            raw = self._whole(arch) if self._whole is not None else \
                self.constant + sum(self._block_cost(b) for b in self.blocks(arch))
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise UserError(f"the {self.name} cost model returned {str(raw)[:40]!r}, not a number") from None
            if not math.isfinite(value) or value < 0:
                raise UserError(f"the {self.name} cost model returned {value!r}; costs must be finite and >= 0")
            self._cache[key] = value
        return self._cache[key]

    def edge_costs(self) -> Dict[str, torch.Tensor]:
        """DARTS: per mixed cell type an ``(edges, ops)`` tensor, the cost of each choice in the child network.

        Raises:
            UserError: the model prices whole networks only, or the space has no DARTS cost blocks.
        """
        if self._block_cost is None:
            raise UserError(f"the {self.name} cost model prices whole networks only; the DARTS cost term "
                            "needs a model with block costs (params, macs, latency or a plug-in's block_cost)")
        try:
            tables = self.space.mixing_cost_blocks(self.spec)
        except NotImplementedError as exc:
            raise UserError(str(exc)) from None
        return {cell: torch.tensor([[sum(self._block_cost(b) for b in choice) for choice in row] for row in rows],
                                   dtype=torch.float64)
                for cell, rows in tables.items()}

    def describe(self) -> str:
        s = self.spec
        return (f"{self.name} ({self.unit}) of the {self.space.name} child network at C {s.channels}, "
                f"{s.layers} layers, {s.in_channels}x{s.hw[0]}x{s.hw[1]}, {s.num_classes} classes")


def _whole_network(space: Space, spec: NetSpec, count: Callable[[torch.nn.Module], int]) -> Callable[[Any], float]:
    def price(arch: Any) -> float:
        with torch.device("meta"):
            model = space.build_child(arch, spec.channels, spec.layers, spec.num_classes, spec.in_channels,
                                      min(spec.hw), **dict(spec.options))
        return float(count(model))

    return price


def load_plugin(path: str) -> Callable[..., Any]:
    """Import ``package.module:attribute`` (never evaluated as code)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise UserError(f"cost plug-in {path!r} must be 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError, TypeError) as exc:
        raise UserError(f"cannot import cost plug-in module {module_name!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"cost plug-in {path!r}: {module_name} has no callable {attr!r}")
    return factory


def build_cost_model(name: str, space: Space, spec: NetSpec, lut: Optional[str] = None,
                     table: Optional[LatencyTable] = None) -> CostModel:
    """The cost model ``name`` for ``space`` at ``spec``.

    Raises:
        UserError: ``latency`` without a table or with one measured for another
            network, an unimportable plug-in.
    """
    if name == "latency":
        if table is None:
            if not lut:
                raise UserError("--cost latency needs a latency table: build one with `enas latency-table` "
                                "and pass it with --lut FILE")
            table = read_table(lut)
        table.check_matches(space_identity(space), spec)
        return CostModel(space, spec, name, "ms", table.entry, constant=float(table.overhead.get("median", 0.0)))
    if name in ("params", "macs"):
        per_block = block_params if name == "params" else block_macs
        if space.exact_cost_blocks:
            return CostModel(space, spec, name, UNITS[name], per_block)
        counter = count_parameters if name == "params" else (
            lambda m: count_macs(m, (spec.in_channels,) + spec.hw))
        return CostModel(space, spec, name, UNITS[name], whole=_whole_network(space, spec, counter))
    try:
        plugin = load_plugin(name)(space=space, spec=spec)
    except TypeError as exc:
        raise UserError(f"cost plug-in {name!r} must be called as factory(space=..., spec=...): {exc}") from None
    if not callable(getattr(plugin, "arch_cost", None)):
        raise UserError(f"cost plug-in {name!r} returned an object without arch_cost(arch)")
    block_cost = getattr(plugin, "block_cost", None)
    return CostModel(space, spec, name, str(getattr(plugin, "unit", "cost")),
                     block_cost if callable(block_cost) else None, whole=plugin.arch_cost)
