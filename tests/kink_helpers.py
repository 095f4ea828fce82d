"""How far a network's ReLU and max-pool inputs sit from their kinks, for fast-vs-reference tests.

Two float32 paths through a ReLU network (our kernels against ATen's, or ATen's on AVX2
against AVX-512) round differently by about 1e-6 of a tensor's scale. Where a ReLU input
lies closer to zero than that, the two paths take different sides of the kink and the
gradients upstream differ by about 1e-2 relative, with no bug anywhere: a
test of 370k ReLU inputs failed that way on an AMD EPYC (one flipped element) after passing
on Xeons. A test that compares whole networks first checks, in float64 on the reference path,
that every input is farther from its kink than :data:`SAFE_MARGIN`, so a failure can only be a
real difference; a smaller network or another seed restores the margin when a change breaks it.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from shared_model.kernels import reference_kernels

#: Float32 paths differ here by <= 1e-5 of a tensor's standard deviation (measured 2e-6 - 1e-5).
SAFE_MARGIN = 1e-4


def _relu_margin(v: torch.Tensor) -> float:
    nonzero = v[v != 0].abs()  # exact zeros (dropped paths) are zero on every path
    return float(nonzero.min() / v.std()) if nonzero.numel() else float("inf")


def _pool_margin(pool: nn.MaxPool2d, v: torch.Tensor) -> float:
    # The gap between each window's two largest values: below rounding, the argmax can flip.
    k, s, p = pool.kernel_size, pool.stride, pool.padding
    windows = F.unfold(F.pad(v, (p, p, p, p), value=float("-inf")), k, stride=s)  # (B, C*k*k, L)
    top2 = windows.view(v.shape[0], v.shape[1], k * k, -1).topk(2, dim=2).values  # (B, C, 2, L)
    return float((top2[:, :, 0] - top2[:, :, 1]).min() / v.std())


def kink_margin(module: nn.Module, run: Callable[[nn.Module], None]) -> float:
    """The least distance, in standard deviations, of a ReLU or max-pool input from its kink.

    Args:
        module: the network; a float64 copy runs on the reference path (its ``nn.ReLU`` and
            ``nn.MaxPool2d`` modules), so the original is left untouched.
        run: calls the copy's forward (the caller seeds any randomness, e.g. drop path, the
            same way as in the compared runs, and casts inputs to float64).
    """
    reference = copy.deepcopy(module).double()
    margins = []

    def hook(m: nn.Module, inputs, _out) -> None:
        v = inputs[0].detach()
        margins.append(_pool_margin(m, v) if isinstance(m, nn.MaxPool2d) else _relu_margin(v))

    handles = [m.register_forward_hook(hook) for m in reference.modules()
               if isinstance(m, (nn.ReLU, nn.MaxPool2d))]
    try:
        with reference_kernels(), torch.no_grad():
            run(reference)
    finally:
        for h in handles:
            h.remove()
    assert margins, "no ReLU or max-pool module ran: the margin check would prove nothing"
    return min(margins)
