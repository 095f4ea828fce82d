"""Published architectures, for retraining baselines and for comparison.

The cell entries use DARTS notation (Liu et al. 2019, ``cnn/genotypes.py``):
``(op, input)`` pairs, two per node, input 0 = cell k-2, 1 = cell k-1.
``ENAS_RELEASED`` is decoded from the official final micro arc
(``scripts/cifar10_micro_final.sh`` in the ENAS release); its concat lists
are the loose ends (ENAS Sec. 2.3). ``ENAS_MACRO`` is a macro-space network
(:class:`~shared_model.macro_arch.MacroArch`): the official final macro arc
(``scripts/cifar10_macro_final.sh``), 24 layers.
"""
from __future__ import annotations

from typing import Any, Dict

from shared_model.genotype import Genotype
from shared_model.macro_arch import MacroArch

_PAIRS = {
    "DARTS_V1": dict(
        normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
                ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        normal_concat=[2, 3, 4, 5],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
        reduce_concat=[2, 3, 4, 5]),
    "DARTS_V2": dict(
        normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        normal_concat=[2, 3, 4, 5],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
        reduce_concat=[2, 3, 4, 5]),
    "NASNet": dict(
        normal=[("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
                ("avg_pool_3x3", 1), ("skip_connect", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
                ("sep_conv_3x3", 1), ("skip_connect", 1)],
        normal_concat=[2, 3, 4, 5, 6],
        reduce=[("sep_conv_5x5", 1), ("sep_conv_7x7", 0), ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
                ("avg_pool_3x3", 1), ("sep_conv_5x5", 0), ("skip_connect", 3), ("avg_pool_3x3", 2),
                ("sep_conv_3x3", 2), ("max_pool_3x3", 1)],
        reduce_concat=[4, 5, 6]),
    "AmoebaNet": dict(
        normal=[("avg_pool_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
                ("sep_conv_3x3", 0), ("avg_pool_3x3", 3), ("sep_conv_3x3", 1), ("skip_connect", 1),
                ("skip_connect", 0), ("avg_pool_3x3", 1)],
        normal_concat=[4, 5, 6],
        reduce=[("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_7x7", 2),
                ("sep_conv_7x7", 0), ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1),
                ("conv_7x1_1x7", 0), ("sep_conv_3x3", 5)],
        reduce_concat=[3, 4, 6]),
    "PDARTS": dict(
        normal=[("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
        normal_concat=[2, 3, 4, 5],
        reduce=[("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
                ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
        reduce_concat=[2, 3, 4, 5]),
    "PC_DARTS": dict(
        normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
                ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        normal_concat=[2, 3, 4, 5],
        reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
                ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
        reduce_concat=[2, 3, 4, 5]),
    "ENAS": dict(
        normal=[("sep_conv_3x3", 1), ("skip_connect", 1), ("sep_conv_5x5", 1), ("skip_connect", 0),
                ("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("avg_pool_3x3", 1),
                ("sep_conv_5x5", 1), ("avg_pool_3x3", 0)],
        normal_concat=[2, 3, 4, 5, 6],
        reduce=[("sep_conv_5x5", 0), ("avg_pool_3x3", 1), ("sep_conv_3x3", 1), ("avg_pool_3x3", 1),
                ("avg_pool_3x3", 1), ("sep_conv_3x3", 1), ("sep_conv_5x5", 4), ("avg_pool_3x3", 1),
                ("sep_conv_3x3", 5), ("sep_conv_5x5", 0)],
        reduce_concat=[2, 3, 6]),
}

#: The official ENAS final micro arc, normal cell then reduction cell.
ENAS_RELEASED_ARC = ("0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 "
                     "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1")

#: The official final macro arc (``fixed_arc`` of ``scripts/cifar10_macro_final.sh``), one layer
#: per line: the op index (0 conv 3x3, 1 sep 3x3, 2 conv 5x5, 3 sep 5x5), then the skip bits.
ENAS_MACRO_ARC = """0
3 0
0 1 0
2 0 0 1
2 0 0 0 0
3 1 1 0 1 0
2 0 0 0 0 0 1
2 0 1 1 0 1 1 1
1 0 1 1 1 0 1 0 1
0 0 0 0 0 0 0 0 0 0
2 0 0 0 0 0 1 0 0 0 0
0 1 0 0 1 1 0 0 0 0 1 1
2 0 1 0 0 0 0 0 1 0 1 1 0
1 0 0 1 0 0 0 1 1 1 0 1 0 1
0 1 1 0 1 0 1 0 0 0 0 0 1 0 0
2 0 0 1 0 0 0 0 0 0 0 1 0 1 0 1
2 0 1 0 0 0 1 0 0 1 1 1 1 0 0 1 0
2 0 0 0 0 1 0 1 0 1 0 0 1 0 1 0 0 1
3 0 1 1 0 1 0 0 0 0 0 1 0 1 0 1 0 0 0
3 0 1 1 0 0 0 0 0 0 0 0 0 1 1 0 0 0 0 1
0 1 0 0 1 0 1 1 0 0 0 1 0 0 0 0 0 1 1 0 0
3 0 1 0 1 1 0 0 1 0 1 1 0 1 1 0 1 0 0 1 0 0
0 1 0 1 0 1 0 0 0 0 0 0 0 0 1 0 1 0 0 1 0 0 0
0 1 1 0 0 0 1 1 1 0 1 0 0 0 1 0 1 0 0 1 1 0 0 0"""

#: name -> architecture (a cell :class:`Genotype`, or a :class:`MacroArch`). Names are matched
#: case-insensitively by :func:`get_genotype`.
ZOO: Dict[str, Any] = {name: Genotype(**fields) for name, fields in _PAIRS.items()}
ZOO["ENAS_RELEASED"] = Genotype.from_arc(ENAS_RELEASED_ARC)
ZOO["ENAS_MACRO"] = MacroArch.from_arc(ENAS_MACRO_ARC)

#: name -> one-line source, shown by ``enas genotypes``.
ZOO_INFO: Dict[str, str] = {
    "DARTS_V1": "DARTS first-order search (Liu et al. 2019, ICLR; quark0/darts genotypes.py)",
    "DARTS_V2": "DARTS second-order search (Liu et al. 2019, ICLR; quark0/darts genotypes.py)",
    "NASNet": "NASNet-A, RL search (Zoph et al. 2018, CVPR), in DARTS notation",
    "AmoebaNet": "AmoebaNet-A, evolution (Real et al. 2019, AAAI), in DARTS notation",
    "PDARTS": "Progressive DARTS (Chen et al. 2019, ICCV)",
    "PC_DARTS": "Partially-connected DARTS (Xu et al. 2020, ICLR)",
    "ENAS": "ENAS micro cell as drawn in the paper's figure (Pham et al. 2018, ICML), via DARTS genotypes.py",
    "ENAS_RELEASED": "ENAS micro cell the official final script trains (melodyguan/enas "
                     "scripts/cifar10_micro_final.sh), concat = loose ends",
    "ENAS_MACRO": "ENAS macro network the official final script trains (melodyguan/enas "
                  "scripts/cifar10_macro_final.sh)",
}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


_BY_KEY = {_key(name): name for name in ZOO}


def get_genotype(name: str) -> Any:
    """Look up a zoo architecture by name, ignoring case (``-`` counts as ``_``).

    Raises:
        ValueError: unknown name; the message lists the known names.
    """
    canonical = _BY_KEY.get(_key(name)) if isinstance(name, str) else None
    if canonical is None:
        raise ValueError(f"unknown genotype {name!r}; known: {', '.join(ZOO)}")
    return ZOO[canonical]
