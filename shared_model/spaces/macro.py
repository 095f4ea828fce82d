"""The ENAS macro search space (Pham et al. 2018, Sec. 2.3 and 3.1) as a registered space.

A policy designs a whole network of ``L`` layers: per layer one op out of six
(:data:`~shared_model.macro_arch.MACRO_OPS`) and one skip bit per earlier state
(the stem and the layers before the layer's own input). The model code is
:mod:`shared_model.macro` (search and fixed networks) and
:mod:`shared_model.macro_arch` (the frozen :class:`MacroArch`); this module
maps the space contract onto them.

* Decisions, in the order of the official arc: per layer ``j`` an ``"op"``
  decision (6 choices), then ``j`` ``"skip"`` decisions (2 choices; slot ``i``
  = the state the bit connects). Cell ``"network"``, node ``j``. The actions
  are the official arc integers, so decode/encode are the arc conversions.
* The architecture fixes the depth: the space is built for ``num_layers``
  (:meth:`MacroSpace.for_layers` resizes it to ``model.layers``), and the
  fixed network takes its depth from the architecture.
* No DARTS relaxation (``supports_mixing`` is false): ENAS and random search
  run on it, DARTS is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from shared_model.cost_blocks import Block, NetSpec
from shared_model.macro import MacroNetwork, MacroSupernet
from shared_model.macro_arch import MACRO_OPS, MacroArch, pool_layers, state_name, uniform_size
from shared_model.spaces.base import CellGraph, Decision, Space
from shared_model.spaces.registry import register_space

#: The one "cell" of the space: the whole network (key of its drawings).
NETWORK = "network"

# Options of the other spaces' networks that the macro network has no place for.
_IGNORED = ("stem_multiplier", "cell_output", "drop_path_depth_scaled", "aux_position", "drop_path_exempt",
            "base_conv", "aux_same_padding", "aux_trainable", "loose_inputs")
_CHILD_OPTIONS = ("dropout", "sep_as_conv", "bn_eps", "classifier_bias", "final_relu")

# The official fixed network (cifar10_macro_final.sh, general_child._fixed_layer): no auxiliary
# head or drop path, BN epsilon 1e-3, a bias-free classifier, no ReLU before pooling.
_FIXED_NETWORK: Dict[str, Any] = {"model.auxiliary": False, "model.drop_path_prob": 0.0, "model.bn_eps": 1e-3,
                                  "model.classifier_bias": False, "model.final_relu": False}

# The official macro search (scripts/cifar10_macro_search.sh; REFERENCE Sec. 2-3): 12 layers of
# 36 channels, batch 128, 310 epochs, SGDR 0.05 -> 5e-4 (T0 10, Tmul 2), l2 2.5e-4 (its gradient
# 2 * l2 * w is weight_decay 5e-4), keep_prob 0.9, no aux head, no clipping; the controller: Adam
# 1e-3, tanh constant 1.5, 50 updates of 20 samples, entropy 1e-4, skip target 0.4 weighted 0.8.
_SEARCH: Dict[str, Any] = {
    "epochs": 310, "data.batch_size": 128, "model.channels": 36, "model.layers": 12, "model.num_nodes": None,
    "model.auxiliary": False, "model.dropout": 0.1, "optim.schedule": "sgdr", "optim.lr_max": 0.05,
    "optim.lr_min": 5e-4, "optim.sgdr_t0": 10, "optim.sgdr_tmul": 2, "optim.momentum": 0.9,
    "optim.nesterov": True, "optim.weight_decay": 5e-4, "optim.grad_clip": None,
    "controller.lr": 1e-3, "controller.tanh_constant": 1.5, "controller.temperature": None,
    "controller.samples_per_update": 20, "controller.updates_per_epoch": 50, "controller.entropy_weight": 1e-4,
    "controller.skip_target": 0.4, "controller.skip_weight": 0.8,
}


def _check_options(options: Dict[str, Any], allowed: Sequence[str]) -> None:
    for key in options:
        if key not in _IGNORED + tuple(allowed) + ("auxiliary",):
            raise ValueError(f"the macro network takes no option {key!r}")
    if options.get("auxiliary"):
        raise ValueError("the macro network has no auxiliary head; set model.auxiliary false")


@dataclass(frozen=True)
class MacroSpace(Space):
    """ENAS macro: per layer one of 6 ops and a skip bit to every earlier state.

    Attributes:
        num_layers: L, the depth the policy designs (official search: 12, final: 24).
    """

    num_layers: int = 12

    name = "macro"
    arch_type = MacroArch
    distinct_inputs = False
    json_fields = ("ops", "skips")
    min_layers = 3
    layers_meaning = "layers; factorized reductions follow layers L // 3 - 1 and 2 L // 3 - 1"
    arch_sets_layers = True
    supports_mixing = False
    default_train_preset = "enas_macro"

    def __post_init__(self) -> None:
        if isinstance(self.num_layers, bool) or not isinstance(self.num_layers, int) or self.num_layers < 1:
            raise ValueError(f"the macro space needs at least one layer, got {self.num_layers!r}")

    def for_layers(self, layers: int) -> "MacroSpace":
        return self if layers == self.num_layers else MacroSpace(layers)

    # -- policy side ------------------------------------------------------------
    @property
    def decisions(self) -> Tuple[Decision, ...]:
        out: List[Decision] = []
        for j in range(self.num_layers):
            out.append(Decision(NETWORK, j, 0, "op", len(MACRO_OPS)))
            out += [Decision(NETWORK, j, i, "skip", 2) for i in range(j)]
        return tuple(out)

    @property
    def policy_ops(self) -> Tuple[str, ...]:
        return MACRO_OPS

    def enas_op_bias(self) -> Tuple[List[float], List[float]]:
        """The macro controller has no op bias or prior (official ``general_controller``)."""
        return [0.0] * len(MACRO_OPS), [0.0] * len(MACRO_OPS)

    def decode(self, actions: Sequence[int]) -> MacroArch:
        if len(actions) != len(self.decisions):
            raise ValueError(f"expected {len(self.decisions)} actions for {self.num_layers} layers, got {len(actions)}")
        return MacroArch.from_actions([int(a) for a in actions])

    def encode(self, arch: MacroArch) -> List[int]:
        if not isinstance(arch, MacroArch):
            raise ValueError(f"expected a MacroArch, got {type(arch).__name__}")
        if arch.num_layers != self.num_layers:
            raise ValueError(f"the architecture has {arch.num_layers} layers; this macro space {self.num_layers}")
        return list(arch.actions())

    def size(self) -> int:
        return uniform_size(self.num_layers)  # 6 ** L * 2 ** (L (L - 1) / 2)

    # -- architecture I/O ---------------------------------------------------------
    def claims_string(self, text: str) -> bool:
        """The official arc: whitespace-separated integers only."""
        return any(ch.isdigit() for ch in text) and all(ch.isdigit() or ch.isspace() for ch in text)

    def arch_from_string(self, text: str) -> MacroArch:
        return MacroArch.from_arc(text)

    # -- networks -------------------------------------------------------------------
    def search_overrides(self, preset: str) -> Dict[str, Any]:
        """The official macro search settings (quick: 6 layers of 8 channels on digits)."""
        if preset == "quick":
            return {"model.layers": 6, "model.channels": 8, "model.num_nodes": None, "model.auxiliary": False,
                    "model.dropout": 0.0}
        return dict(_SEARCH)

    def train_overrides(self, preset: str) -> Dict[str, Any]:
        """The official fixed network's options; presets of other spaces get its C 96 and dropout 0.5."""
        out = dict(_FIXED_NETWORK)
        if preset not in ("enas_macro", "quick"):
            out.update({"model.channels": 96, "model.dropout": 0.5})
        return out

    def arch_overrides(self, arch: MacroArch) -> Dict[str, Any]:
        return {"model.layers": arch.num_layers}

    def check_search(self, mixing: bool, **options: Any) -> None:
        if mixing:
            raise ValueError("the macro space has no DARTS relaxation; search it with --strategy enas or random")
        _check_options(options, ("dropout",))

    def build_supernet(self, channels: int, layers: int, num_classes: int, in_channels: int = 3,
                       image_size: int = 32, **options: Any) -> MacroSupernet:
        """The macro search network of ``layers`` (= :attr:`num_layers`) layers; option ``dropout``."""
        _check_options(options, ("dropout",))
        if layers != self.num_layers:
            raise ValueError(f"this macro space designs {self.num_layers} layers, not {layers}")
        return MacroSupernet(channels, layers, num_classes, in_channels, image_size,
                             dropout=options.get("dropout", 0.0))

    def build_child(self, arch: MacroArch, channels: int, layers: int, num_classes: int, in_channels: int = 3,
                    image_size: int = 32, **options: Any) -> MacroNetwork:
        """The fixed macro network; ``layers`` must be the architecture's depth."""
        _check_options(options, _CHILD_OPTIONS)
        if layers != arch.num_layers:
            raise ValueError(f"the macro architecture has {arch.num_layers} layers but model.layers is {layers}; "
                             f"leave it unset or set it to {arch.num_layers}")
        kwargs = {k: v for k, v in options.items() if k in _CHILD_OPTIONS}
        return MacroNetwork(arch, channels, num_classes, in_channels, image_size, **kwargs)

    def cost_blocks(self, arch: MacroArch, spec: NetSpec) -> List[Block]:
        """The fixed network's blocks (:mod:`shared_model.spaces.macro_cost`)."""
        from shared_model.spaces.macro_cost import macro_blocks

        _check_options(dict(spec.options), _CHILD_OPTIONS)
        return macro_blocks(arch, spec)

    def cost_cover(self, spec: NetSpec) -> Iterable[MacroArch]:
        from shared_model.spaces.macro_cost import macro_cover

        return macro_cover(spec)

    # -- DARTS (none) -------------------------------------------------------------------
    def _no_mixing(self) -> ValueError:
        return ValueError("the macro space has no DARTS relaxation (no mixing weights)")

    def mixing_shapes(self) -> Dict[str, Tuple[int, int]]:
        raise self._no_mixing()

    @property
    def mixing_ops(self) -> Tuple[str, ...]:
        raise self._no_mixing()

    def mixing_edges(self) -> List[Tuple[int, int]]:
        raise self._no_mixing()

    def mixed_arch(self, weights: Any) -> Any:
        raise self._no_mixing()

    def derive_choices(self, tables: Any) -> Any:
        raise self._no_mixing()

    def derive(self, tables: Any) -> Any:
        raise self._no_mixing()

    # -- presentation -------------------------------------------------------------------
    def describe(self, arch: MacroArch) -> List[str]:
        return [f"macro network, {arch.num_layers} layers (arc: {arch.to_arc()})"] + arch.describe() + \
            ["output = linear(global average pool(layer {}))".format(arch.num_layers - 1)]

    def describe_json(self, arch: MacroArch) -> Dict[str, Any]:
        pools = pool_layers(arch.num_layers)
        return {"arc": arch.to_arc(), "network": [
            {"layer": j, "op": op, "input": state_name(j), "skips": [state_name(i) for i in arch.skip_sources(j)],
             "reduce_after": j in pools} for j, op in enumerate(arch.ops)]}

    def graphs(self, arch: MacroArch) -> Dict[str, CellGraph]:
        """The layer chain, every skip an extra edge; reductions marked on the layer they follow."""
        pools = pool_layers(arch.num_layers)
        labels = ["stem"] + [f"{j}: {op}" + (" | reduce" if j in pools else "") for j, op in enumerate(arch.ops)]
        labels.append("output")
        n = arch.num_layers
        edges: List[Tuple[int, int, Any]] = [(j, j + 1, None) for j in range(n + 1)]  # state j -> layer j
        edges += [(i, j + 1, None) for j in range(n) for i in arch.skip_sources(j)]
        kinds = ["input"] + ["node"] * n + ["output"]
        return {NETWORK: CellGraph(f"macro network ({n} layers)", labels, kinds, edges, layout="chain")}


@register_space("macro")
def macro_space(num_layers: int | None = None) -> MacroSpace:
    """ENAS macro (Pham et al. 2018, Sec. 2.3); ``num_layers`` L (default 12, the official search)."""
    return MacroSpace(num_layers or 12)
