"""Adam with TensorFlow 1.x's update rule, the controller optimizer of the official ENAS code.

The official controller uses ``tf.train.AdamOptimizer(lr, beta1=0.0, epsilon=1e-3)``
(melodyguan/enas ``src/utils.py`` ``get_train_ops``). TensorFlow folds both bias
corrections into the step size and adds its epsilon to the *uncorrected*
``sqrt(v)``: it is the "epsilon hat" of Kingma & Ba (2015, the remark just
before Sec. 2.1)::

    m_t = b1 m + (1 - b1) g        v_t = b2 v + (1 - b2) g^2
    lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)
    w  <- w - lr_t m_t / (sqrt(v_t) + eps_hat)

PyTorch's :class:`torch.optim.Adam` adds ``eps`` to the *corrected*
``sqrt(v_t / (1 - b2^t))``; the two agree only with
``eps = eps_hat / sqrt(1 - b2^t)``, which changes with ``t`` (for ``eps_hat =
1e-3``, ``b2 = 0.999``: 0.0316 at step 1, 1e-3 only after thousands of steps).
The controller takes just 30 updates per epoch, so the difference matters for
the whole search; this class applies the TensorFlow rule exactly.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Tuple

import torch


class TFAdam(torch.optim.Optimizer):
    """``tf.train.AdamOptimizer`` (no weight decay, no amsgrad).

    State per parameter uses the names of :class:`torch.optim.Adam` (``step``,
    ``exp_avg``, ``exp_avg_sq``, same meaning), so a checkpoint of either loads
    into the other.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (ENAS controller: 0.0035).
        betas: ``(beta1, beta2)`` (ENAS controller: ``(0.0, 0.999)``).
        eps: TensorFlow's epsilon ("epsilon hat"; ENAS controller: 1e-3).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue  # TensorFlow skips variables without a gradient too
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                m.mul_(beta1).add_(g, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                # Bias corrections in the step size, epsilon on the uncorrected sqrt(v).
                lr_t = group["lr"] * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-lr_t)
        return loss
