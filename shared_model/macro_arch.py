"""The ENAS macro architecture: one op per layer and skip bits to earlier layers (Pham et al. 2018, Sec. 2.3).

A macro network is a chain of ``L`` layers after a 3x3 conv stem. Layer ``j``
(0-based) reads the output of the layer before it (the stem for ``j = 0``),
applies one of six ops and adds **skip connections** chosen by ``j`` bits: bit
``i`` connects state ``i``, where state 0 is the stem output and state
``i >= 1`` is the output of layer ``i - 1`` (official ``general_child.py``:
``prev_layers[i]``; the layer's own input, state ``j``, is always read). So
there are ``L (L - 1) / 2`` bits and ``6 ** L * 2 ** (L (L - 1) / 2)``
architectures, 1.6e29 for ``L = 12``. A factorized reduction of every state
follows layers ``L // 3 - 1`` and ``2 L // 3 - 1``.

:class:`MacroArch` is the frozen, validated form. It reads and writes the
official ``fixed_arc`` string of ``scripts/cifar10_macro_final.sh``
(``--controller_search_whole_channels``): per layer the op index, then that
layer's ``j`` skip bits, all whitespace-separated::

    0  3 0  0 1 0  2 0 0 1  ...

Its JSON form is ``{"ops": [...], "skips": [[], [b], [b, b], ...]}``. Every
malformed input raises one :class:`MacroArchError` with a one-line message.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

from shared_model.arch_json import check_fields, check_text, load_json
from shared_model.genotype import _show

#: The macro op set in the official branch order (``general_child._enas_layer`` branches 0-5).
MACRO_OPS = ("conv_3x3", "sep_conv_3x3", "conv_5x5", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")

# A 24-layer arc is 300 integers (~600 characters); the caps only stop hostile input
# from costing time before it is rejected.
_MAX_ARC = 100_000
_MAX_JSON = 1_000_000
_MAX_LAYERS = 1_000


class MacroArchError(ValueError):
    """A macro architecture, its arc string, its actions or its JSON is malformed."""


def pool_layers(num_layers: int) -> Tuple[int, ...]:
    """Layers followed by a factorized reduction of every state (official ``pool_layers``).

    ``L // 3 - 1`` and ``2 L // 3 - 1``; networks of fewer than 3 layers have none.
    """
    distance = num_layers // 3
    return (distance - 1, 2 * distance - 1) if distance else ()


def state_name(index: int) -> str:
    """Name of state ``index`` of a skip bit: the stem (0) or a layer's output."""
    return "stem" if index == 0 else f"layer {index - 1}"


def num_layers_of(count: int) -> int:
    """The ``L`` whose arc has ``count = L (L + 1) / 2`` integers; ``MacroArchError`` otherwise."""
    layers = (math.isqrt(8 * count + 1) - 1) // 2
    if count < 1 or layers * (layers + 1) // 2 != count:
        raise MacroArchError(f"a macro arc has L (L + 1) / 2 integers for L layers (1, 3, 6, 10, ..., 300 for "
                             f"24 layers), got {count}")
    return layers


def _check_bit(layer: int, index: int, bit: Any) -> int:
    if isinstance(bit, bool) or not isinstance(bit, int) or bit not in (0, 1):
        raise MacroArchError(f"layer {layer}: skip bit {index} must be 0 or 1, got {_show(bit)}")
    return bit


@dataclass(frozen=True)
class MacroArch:
    """One macro network; construction raises :class:`MacroArchError`.

    Attributes:
        ops: one op name from :data:`MACRO_OPS` per layer.
        skips: per layer ``j`` a tuple of ``j`` bits; bit ``i`` adds state ``i``
            (:func:`state_name`) to the layer's output.
    """

    ops: Tuple[str, ...]
    skips: Tuple[Tuple[int, ...], ...]

    def __post_init__(self) -> None:
        ops, skips = self.ops, self.skips
        if isinstance(ops, (str, bytes)) or not isinstance(ops, (list, tuple)) or not ops:
            raise MacroArchError(f"ops: expected a non-empty list of op names, got {_show(ops)}")
        if len(ops) > _MAX_LAYERS:
            raise MacroArchError(f"ops: at most {_MAX_LAYERS} layers, got {len(ops)}")
        for j, op in enumerate(ops):
            if not isinstance(op, str) or op not in MACRO_OPS:
                raise MacroArchError(f"layer {j}: unknown op {_show(op)} (known: {', '.join(MACRO_OPS)})")
        if isinstance(skips, (str, bytes)) or not isinstance(skips, (list, tuple)) or len(skips) != len(ops):
            raise MacroArchError(f"skips: expected one list of bits per layer ({len(ops)}), got {_show(skips)}")
        rows = []
        for j, row in enumerate(skips):
            if isinstance(row, (str, bytes)) or not isinstance(row, (list, tuple)) or len(row) != j:
                raise MacroArchError(f"layer {j}: needs {j} skip bit(s) (one per earlier state), got {_show(row)}")
            rows.append(tuple(_check_bit(j, i, b) for i, b in enumerate(row)))
        object.__setattr__(self, "ops", tuple(ops))
        object.__setattr__(self, "skips", tuple(rows))

    @property
    def num_layers(self) -> int:
        return len(self.ops)

    def skip_sources(self, layer: int) -> List[int]:
        """The states (0 = stem, ``i`` = layer ``i - 1``) whose skip bit is set in ``layer``."""
        return [i for i, bit in enumerate(self.skips[layer]) if bit]

    def skip_count(self) -> int:
        return sum(sum(row) for row in self.skips)

    # -- the official integer encoding ---------------------------------------
    @classmethod
    def from_actions(cls, actions: Sequence[int]) -> "MacroArch":
        """Build from the arc integers: per layer the op index, then its skip bits."""
        if isinstance(actions, (str, bytes)) or not isinstance(actions, (list, tuple)):
            raise MacroArchError(f"arc: expected a list of integers, got {type(actions).__name__}")
        for k, a in enumerate(actions):
            if isinstance(a, bool) or not isinstance(a, int):
                raise MacroArchError(f"arc[{k}]: expected an integer, got {_show(a)}")
        layers = num_layers_of(len(actions))
        ops, skips, k = [], [], 0
        for j in range(layers):
            op = actions[k]
            if not 0 <= op < len(MACRO_OPS):
                raise MacroArchError(f"layer {j} (arc[{k}]): op index {_show(op)} out of range "
                                     f"0..{len(MACRO_OPS) - 1}")
            ops.append(MACRO_OPS[op])
            skips.append(tuple(_check_bit(j, i, b) for i, b in enumerate(actions[k + 1:k + 1 + j])))
            k += 1 + j
        return cls(tuple(ops), tuple(skips))

    def actions(self) -> Tuple[int, ...]:
        """The arc integers (inverse of :meth:`from_actions`)."""
        out: List[int] = []
        for op, row in zip(self.ops, self.skips):
            out += [MACRO_OPS.index(op), *row]
        return tuple(out)

    @classmethod
    def from_arc(cls, text: Any) -> "MacroArch":
        """Parse the official whitespace-separated ``fixed_arc`` string."""
        check_text(text, "macro arc", MacroArchError, _MAX_ARC)
        tokens = text.split()
        bad = next((t for t in tokens if not (t.isascii() and t.isdigit())), None)
        if bad is not None:
            raise MacroArchError(f"macro arc must be whitespace-separated non-negative integers, got {_show(bad)}")
        return cls.from_actions([int(t) for t in tokens])

    def to_arc(self, per_line: bool = False) -> str:
        """The ``fixed_arc`` string; ``per_line`` puts each layer on its own line, as the script writes it."""
        rows = [" ".join(str(v) for v in (MACRO_OPS.index(op), *row)) for op, row in zip(self.ops, self.skips)]
        return ("\n" if per_line else " ").join(rows)

    # -- text ------------------------------------------------------------------
    def describe(self) -> List[str]:
        """One line per layer: ``layer j = op(input) + skips``, and where the reductions are."""
        pools = pool_layers(self.num_layers)
        lines = []
        for j, op in enumerate(self.ops):
            text = f"layer {j} = {op}({state_name(j)})"
            sources = self.skip_sources(j)
            if sources:
                text += " + skip(" + ", ".join(state_name(i) for i in sources) + ")"
            if j in pools:
                text += "; then factorized reduction of every state"
            lines.append(text)
        return lines

    # -- JSON ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"ops": list(self.ops), "skips": [list(row) for row in self.skips]}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "MacroArch":
        """Build from ``{"ops": [...], "skips": [[...], ...]}``, nothing else."""
        check_fields(data, ("ops", "skips"), "macro architecture", MacroArchError)
        return cls(data["ops"], data["skips"])

    @classmethod
    def from_json(cls, text: Any) -> "MacroArch":
        return cls.from_dict(load_json(text, "macro architecture", MacroArchError, _MAX_JSON))

    def __str__(self) -> str:
        return self.to_arc()


def uniform_size(num_layers: int, num_ops: int = len(MACRO_OPS)) -> int:
    """``num_ops ** L * 2 ** (L (L - 1) / 2)`` architectures of ``L`` layers."""
    return num_ops ** num_layers * 2 ** (num_layers * (num_layers - 1) // 2)

