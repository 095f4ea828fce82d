"""The second-order pieces of DARTS (Liu et al. 2019, Sec. 2.3, eq. 6-8; ``cnn/architect.py``).

The virtual step ``w' = w - eta (momentum * buf + grad_w L_train + wd * w)`` is the weight
optimizer's next SGD step without clipping (:func:`virtual_step`); the mixed Hessian-vector
product ``H v`` is taken by central differences (:func:`finite_difference_hvp`). With the
weight optimizer a :class:`enas.flat_sgd.FlatSGD` both act on its flat buffers, a handful
of operations instead of several per parameter tensor (about 1,700 in the DARTS search
network at C 8, 5 cells); the arithmetic is the same element by element.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch


def zeros_for_none(grads: Sequence[Optional[torch.Tensor]],
                    like: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like)]


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """Plain fp32 convolutions and matmuls on CUDA (no TF32) inside the block.

    The finite-difference perturbation moves each weight by a relative 1e-4 or
    less, below the resolution of TF32 (and bf16) inputs, which would round it
    away. The previous settings are restored on exit; a no-op off CUDA.
    """
    if device.type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    if hasattr(conv, "fp32_precision"):
        saved = conv.fp32_precision, matmul.fp32_precision
        conv.fp32_precision = matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, matmul.fp32_precision = saved
    else:  # torch < 2.9: the legacy flags
        saved = torch.backends.cudnn.allow_tf32, matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, matmul.allow_tf32 = saved


@contextlib.contextmanager
def weights_frozen(params: Sequence[torch.Tensor]) -> Iterator[None]:
    """``requires_grad`` off for ``params`` inside the block (restored on exit, also on error).

    For the passes that differentiate only with respect to the architecture: autograd
    then records no weight-gradient work at all. PyTorch's own kernels skip weight
    gradients nobody asked for anyway, but a custom autograd function only sees
    which inputs require a gradient (``ctx.needs_input_grad``), so the depthwise
    convolutions' weight gradients would be computed and dropped (docs/performance.md).
    """
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def finite_difference_hvp(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                          inputs: Sequence[torch.Tensor], vector: Sequence[torch.Tensor],
                          r: float = 0.01) -> List[torch.Tensor]:
    """Mixed Hessian-vector product ``d/d inputs (grad_params L . v)`` by central differences.

    DARTS eq. 8: with ``eps = r / ||v||`` and ``params -> params +- eps v``,
    ``H v ~= (grad_inputs L(params + eps v) - grad_inputs L(params - eps v)) / (2 eps)``.
    ``params`` are modified in place during the call and restored exactly
    (copied back from a saved clone, not by subtracting again), also on error.

    Args:
        loss_fn: recomputes the scalar loss from the current parameter values.
        params: tensors perturbed along ``vector`` (the supernet weights ``w``).
        inputs: tensors to differentiate with respect to (the logits ``alpha``).
        vector: one tensor per entry of ``params`` (``grad_w' L_val``).
        r: the perturbation has norm ``r`` (DARTS: 0.01).

    Returns:
        One tensor per entry of ``inputs``; zeros if ``vector`` is zero.
    """
    params, inputs, vector = list(params), list(inputs), list(vector)
    if len(params) != len(vector):
        raise ValueError(f"need one vector entry per parameter, got {len(vector)} for {len(params)}")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v.float()) for v in vector]))
    # Kept as a tensor (no host sync); a zero vector gives zero differences, hence a zero product.
    eps = r / norm.clamp_min(1e-12)
    saved = [p.detach().clone() for p in params]
    try:
        grads = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, s, v in zip(params, saved, vector):
                    p.copy_(s + (sign * eps).to(s.dtype) * v)
            grads.append(zeros_for_none(torch.autograd.grad(loss_fn(), inputs, allow_unused=True), inputs))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    return [(gp - gm) / (2 * eps).to(gp.dtype) for gp, gm in zip(*grads)]


def virtual_step(param: torch.Tensor, grad: torch.Tensor, group: Dict[str, Any],
                 buffer: Optional[torch.Tensor]) -> None:
    """``w <- w - lr * d`` in place: the next SGD step of ``group``'s hyperparameters (momentum,
    dampening, Nesterov, weight decay) on ``grad``, without clipping (DARTS eq. 6).

    ``buffer``: the parameter's momentum buffer, ``None`` before its first step (then the
    step is ``d = grad + wd * w``, as torch's SGD takes it). ``param`` may be a flat buffer
    (:class:`enas.flat_sgd.FlatSGD`): the same arithmetic on every element.
    """
    momentum = group.get("momentum", 0.0)
    with torch.no_grad():
        d = grad + group.get("weight_decay", 0.0) * param
        if momentum:
            buf = d if buffer is None else momentum * buffer + (1 - group.get("dampening", 0.0)) * d
            d = d + momentum * buf if group.get("nesterov", False) else buf
        param.sub_(group["lr"] * d)
