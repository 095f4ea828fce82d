"""Batch norm (+ ReLU) through compiled CPU kernels that the application registers.

ATen runs a training batch norm followed by a ReLU as five passes over the
data forward and backward (statistics, ``x * a + b``, ReLU, its mask, the
backward's sums, the input gradient), and its channels-last kernels vectorize
poorly when the channel count is not a multiple of 16. Compiled kernels over
the ``(B*H*W/k, k*C)`` view (:mod:`shared_model.batch_norm`) do it in two
passes each way and fuse the ReLU that a separable convolution applies right
after its first batch norm (DARTS ``SepConv``; ENAS Sec. 2.3): at the DARTS_V2
retrain size (96, 36, 32, 32) BN + ReLU forward and backward take 3.4 ms
against 7.3 ms (docs/performance.md).

This package does no I/O, so it does not build the kernels: ``enas.native``
compiles them with the system C compiler and passes them to
:func:`set_native_kernels`. Without them (no compiler, not Linux x86-64,
``ENAS_NATIVE_KERNELS=0``) every batch norm takes the other paths of
:class:`shared_model.batch_norm.BatchNorm2d`, with the same results up to
rounding.
"""
from __future__ import annotations

from typing import Optional, Protocol, Tuple

import torch

from shared_model.kernels import _cpu, fold_factor


class NativeKernels(Protocol):
    """What ``enas.native`` registers: the C entry points, called on tensors (the depthwise weight
    gradient is :func:`shared_model.kernels._depthwise_weight_grad`'s)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor, k: int, weight: Optional[torch.Tensor],
                bias: Optional[torch.Tensor], running_mean: Optional[torch.Tensor],
                running_var: Optional[torch.Tensor], use_batch: bool, momentum: float, eps: float, relu: bool,
                sample_scale: Optional[torch.Tensor], save_mean: torch.Tensor, save_invstd: torch.Tensor,
                a: torch.Tensor, b: torch.Tensor) -> None: ...

    def backward(self, g: torch.Tensor, x: torch.Tensor, dx: Optional[torch.Tensor], k: int, mean: torch.Tensor,
                 invstd: torch.Tensor, a: torch.Tensor, b: torch.Tensor, use_batch: bool, relu: bool,
                 sample_scale: Optional[torch.Tensor], grad_weight: Optional[torch.Tensor],
                 grad_bias: Optional[torch.Tensor]) -> None: ...

    def depthwise_weight_grad(self, g: torch.Tensor, x: torch.Tensor, kernel: Tuple[int, int],
                              padding: Tuple[int, int], dilation: Tuple[int, int]) -> torch.Tensor: ...


_KERNELS: Optional[NativeKernels] = None
#: Smaller tensors keep ATen's kernels: below this the fixed cost of the native path (the autograd
#: function, five allocations, two library calls: about 0.1 ms forward and backward) outweighs its
#: gain. Batch norm forward + backward, 1 thread: (32, 16, 8, 8) 0.27 ms native against 0.21 ATen,
#: (32, 8, 16, 16) 0.40 against 0.42, (32, 16, 16, 16) 0.28 against 0.31 (2 threads from 2^15 on).
NATIVE_MIN_NUMEL = 1 << 16
#: With the ReLU fused the native path saves two more passes: (32, 8, 8, 8), 1 thread, 0.218 ms
#: against 0.213 ms for ATen's batch norm and ReLU; (64, 8, 8, 8) 0.284 against 0.300.
NATIVE_MIN_NUMEL_RELU = 1 << 14


def set_native_kernels(kernels: Optional[NativeKernels]) -> Optional[NativeKernels]:
    """Register the compiled kernels (``None``: none); returns the ones registered before."""
    global _KERNELS
    previous, _KERNELS = _KERNELS, kernels
    return previous


def native_kernels() -> Optional[NativeKernels]:
    """The registered kernels, or ``None``."""
    return _KERNELS


def fuses_relu(x: torch.Tensor) -> bool:
    """Whether an op should hand the ReLU after its batch norm to that batch norm (``relu=True``).

    Only where the native kernels may run (registered, CPU, fast kernels on): elsewhere
    the op keeps its own ReLU module, which tracing and module hooks expect to see.
    """
    return _KERNELS is not None and _cpu(x)


def native_fold(x: torch.Tensor, relu: bool = False) -> int:
    """``k`` for the native path (pixels per super-row), or 0 when ``x`` does not take it.

    The native path needs registered kernels, the fast kernels on, and a float32
    channels-last CPU tensor of at least :data:`NATIVE_MIN_NUMEL` elements
    (:data:`NATIVE_MIN_NUMEL_RELU` for a batch norm with a fused ReLU). ``k``
    is the least power of two with ``k * C`` a multiple of 16 if it divides the
    pixel count, else 1.
    """
    if _KERNELS is None or not _cpu(x) or x.dtype != torch.float32 \
            or x.numel() < (NATIVE_MIN_NUMEL_RELU if relu else NATIVE_MIN_NUMEL) \
            or not x.is_contiguous(memory_format=torch.channels_last):
        return 0
    c = x.shape[1]
    k = fold_factor(c)
    return k if (x.numel() // c) % k == 0 else 1


class NativeBatchNorm(torch.autograd.Function):
    """``s * relu(bn(x))`` (or ``s * bn(x)``) of a channels-last ``(B, C, H, W)`` tensor, registered kernels.

    ``s``: ``None``, or one factor per sample ``(B,)`` that needs no gradient
    (DARTS's drop-path mask divided by the keep probability; the caller checks
    that ``k`` divides ``H * W``). Forward and first backward run the compiled
    passes. A backward under ``create_graph`` (DARTS's exact Hessian test) takes
    ATen's differentiable batch-norm backward instead, after the ReLU mask of
    the saved output.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor], use_batch: bool,
                momentum: float, eps: float, relu: bool, k: int,
                sample_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        c = x.shape[1]
        y = torch.empty_like(x)  # (B, C, H, W), channels-last like x
        mean, invstd = x.new_empty(c), x.new_empty(c)
        a, b = x.new_empty(k * c), x.new_empty(k * c)  # the affine map y = a * x + b, tiled
        w = None if weight is None else weight.detach().contiguous()
        bias = None if bias is None else bias.detach().contiguous()
        ss = None if sample_scale is None else sample_scale.detach().to(torch.float32).contiguous()  # (B,)
        _KERNELS.forward(x, y, k, w, bias, running_mean, running_var, use_batch, momentum, eps, relu, ss,
                         mean, invstd, a, b)
        stats = (None, None) if use_batch else (running_mean, running_var)
        ctx.save_for_backward(x, weight, mean, invstd, a, b, y if relu else None, ss, *stats)
        ctx.conf = use_batch, eps, relu, k
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, weight, mean, invstd, a, b, y, ss, running_mean, running_var = ctx.saved_tensors
        use_batch, eps, relu, k = ctx.conf
        need = list(ctx.needs_input_grad[:3])  # False for a weight or bias that is None
        if torch.is_grad_enabled():  # create_graph: ATen's backward is itself differentiable
            gy = g if ss is None else g * ss.view(-1, 1, 1, 1)
            gy = torch.ops.aten.threshold_backward(gy, y, 0.0) if relu else gy
            batch = (mean, invstd) if use_batch else (None, None)
            gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
                gy, x, weight, running_mean, running_var, *batch, use_batch, eps, need)
            return gx, gw, gb, None, None, None, None, None, None, None, None
        g = g.contiguous(memory_format=torch.channels_last)
        c = x.shape[1]
        dx = torch.empty_like(x) if need[0] else None
        gw = x.new_empty(c) if need[1] else None
        gb = x.new_empty(c) if need[2] else None
        _KERNELS.backward(g, x, dx, k, mean, invstd, a, b, use_batch, relu, ss, gw, gb)
        return dx, gw, gb, None, None, None, None, None, None, None, None
