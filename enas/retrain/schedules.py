"""Learning-rate schedules (per epoch, as in the official ENAS and DARTS code)."""
from __future__ import annotations

import math


def sgdr_lr(epoch: int, lr_max: float, lr_min: float, t0: int, tmul: int) -> float:
    """SGDR cosine annealing with warm restarts (Loshchilov & Hutter 2017; ENAS Sec. 3).

    The official ENAS code updates the rate once per epoch: within a period of
    ``T_i`` epochs (``T_0 = t0``, ``T_{i+1} = tmul * T_i``) it follows
    ``lr_min + (lr_max - lr_min) * (1 + cos(pi * t / T_i)) / 2``.
    """
    t, period = epoch, t0
    while t >= period:
        t -= period
        period *= tmul
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * t / period))


def cosine_lr(epoch: int, epochs: int, lr_max: float, lr_min: float) -> float:
    """Single cosine from ``lr_max`` to ``lr_min`` over ``epochs`` (DARTS ``CosineAnnealingLR``)."""
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))


def epoch_lr(schedule: str, epoch: int, epochs: int, lr_max: float, lr_min: float,
             t0: int = 10, tmul: int = 2) -> float:
    if schedule == "sgdr":
        return sgdr_lr(epoch, lr_max, lr_min, t0, tmul)
    if schedule == "cosine":
        return cosine_lr(epoch, epochs, lr_max, lr_min)
    raise ValueError(f"unknown schedule {schedule!r}")


def batch_scaled(lr: float, batch_size: int, lr_batch: int | None) -> float:
    """``lr`` under the linear scaling rule (Goyal et al. 2017): times ``batch_size / lr_batch``
    (``optim.lr_batch``; None: unchanged)."""
    return lr if lr_batch is None else lr * batch_size / lr_batch


def sgdr_boundaries(t0: int, tmul: int, up_to: int) -> list:
    """Epoch counts at which an SGDR period ends (ENAS: 10, 30, 70, 150, 310, 630 ...)."""
    ends, period, total = [], t0, t0
    while total <= up_to:
        ends.append(total)
        period *= tmul
        total += period
    return ends
