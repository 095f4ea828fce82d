"""Batch norm for channels-last CPU tensors whose channel count does not fill a vector register.

ATen's channels-last batch-norm kernels vectorize over the channels. With a
channel count that is not a multiple of 16 (C 8, 20, 36 at the search and
retrain sizes) most of the work falls to the scalar tail, and with a second
thread the kernels get 2-3x *slower* instead of faster (docs/performance.md,
"Two threads: a second pass"). A channels-last tensor is the matrix
``(B*H*W, C)``; read as ``(B*H*W / k, k*C)`` with ``k*C`` a multiple of 16,
every row holds ``k`` pixels and column ``j`` is channel ``j mod C``. On that
view every pass runs vectorized and on all threads:

* forward: per-column mean and biased variance (``torch.batch_norm_update_stats``),
  folded to per-channel statistics with the parallel-variance formula, then
  the normalisation as one ``addcmul`` (``x * scale + shift``, per channel);
* backward: the two per-column sums (of ``dy`` and of ``dy * x_hat``) from
  ATen's backward with only the parameter gradients requested, folded the
  same way; the input gradient is the affine map
  ``dx = a * dy + b * x + c`` per channel (two ``addcmul`` passes).

Same maths as ``nn.BatchNorm2d`` (Ioffe & Szegedy 2015, Alg. 1 and Sec. 3),
rounding aside: the statistics are summed in another order. When the backward
itself is differentiated (DARTS's exact Hessian test) it takes ATen's
differentiable backward on the original tensor instead.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from shared_model.kernels import _cpu, fold_factor
from shared_model.native_bn import NativeBatchNorm, native_fold

#: The vector width the folded view fills (16 floats: one AVX-512 register, two AVX2 ones).
_LANES = 16
#: Smaller tensors run ATen's kernels on one thread: below about this size the fold's per-call
#: overhead (a dozen small ops) outweighs its gain (32 x 8 x 16 x 16: 0.27 against 0.21 ms).
FOLD_MIN_NUMEL = 1 << 17


def _fold(c: int, rows: int) -> int:
    """How many pixels one row of the folded view holds (:func:`fold_factor`), 0 if that does not divide ``rows``."""
    k = fold_factor(c, _LANES)
    return k if rows % k == 0 else 0


_MIXERS: Dict[Tuple[int, int, torch.device], torch.Tensor] = {}


def _mixer(c: int, k: int, device: torch.device) -> torch.Tensor:
    """``(k*C, k*C)`` 0/1 matrix: ``v @ m`` sums the ``k`` columns of each channel and tiles the sums."""
    key = (c, k, device)
    if key not in _MIXERS:
        j = torch.arange(k * c, device=device) % c
        _MIXERS[key] = (j[:, None] == j[None, :]).float()
    return _MIXERS[key]


def _tile(v: torch.Tensor, k: int) -> torch.Tensor:
    return v.expand(k, -1).reshape(-1)  # (C,) -> (k*C,)


def _view(x: torch.Tensor, k: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n * h * w // k, k * c)  # (B*H*W/k, k*C), a view


def _unview(y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    n, c, h, w = shape
    return y.view(n, h, w, c).permute(0, 3, 1, 2)  # (B, C, H, W), channels-last


class _FoldedBatchNorm(torch.autograd.Function):
    """Batch norm of a channels-last ``(B, C, H, W)`` CPU tensor computed on the folded view.

    Per-channel vectors are kept tiled to ``(k*C,)`` throughout, so every pass
    over the data broadcasts a dense row vector.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training: bool, momentum: float, eps: float,
                k: int):
        c = x.shape[1]
        rows = x.numel() // c
        xv = _view(x, k)
        mix = _mixer(c, k, x.device)
        if training:
            col_mean, col_var = torch.batch_norm_update_stats(xv, None, None, 0.0)  # (k*C,), biased
            mean = (col_mean @ mix).div_(k)
            # Equal counts per column: the variance of the union is the mean of the column
            # variances plus the variance of the column means.
            dev = col_mean - mean
            var = (torch.addcmul(col_var, dev, dev) @ mix).div_(k)
            if running_mean is not None:
                running_mean.lerp_(mean[:c], momentum)
                running_var.lerp_(var[:c] * (rows / max(rows - 1, 1)), momentum)
        else:
            mean, var = _tile(running_mean, k), _tile(running_var, k)
        invstd = var.add(eps).rsqrt_()
        scale = invstd if weight is None else _tile(weight, k) * invstd
        shift = -mean * scale if bias is None else torch.addcmul(_tile(bias, k), mean, scale, value=-1)
        out = torch.addcmul(shift, xv, scale)  # (B*H*W/k, k*C)
        # In inference mode the running statistics, for ATen's backward under create_graph.
        stats = (None, None) if training else (running_mean, running_var)
        ctx.save_for_backward(x, weight, mean, invstd, scale, *stats)
        ctx.conf = training, eps, k
        return _unview(out, x.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, mean, invstd, scale, running_mean, running_var = ctx.saved_tensors
        training, eps, k = ctx.conf
        c = x.shape[1]
        grad = grad.contiguous(memory_format=torch.channels_last)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph: ATen's backward is itself differentiable
            batch = (mean[:c], invstd[:c]) if training else (None, None)
            gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
                grad, x, weight, running_mean, running_var, *batch, training, eps, [need_x, need_w, need_b])
            return gx, gw, gb, None, None, None, None, None, None
        rows = x.numel() // c
        xv, gv = _view(x, k), _view(grad, k)
        _, col_gw, col_gb = torch.ops.aten.native_batch_norm_backward(
            gv, xv, None, None, None, mean, invstd, True, eps, [False, True, True])
        mix = _mixer(c, k, x.device)
        sum_dy_xhat, sum_dy = col_gw @ mix, col_gb @ mix  # (k*C,) per channel, tiled
        gx = None
        if need_x:
            if training:
                slope = scale * invstd * sum_dy_xhat * (-1.0 / rows)
                offset = torch.addcmul(sum_dy * scale, slope, mean, value=rows).mul_(-1.0 / rows)
                gx = torch.addcmul(offset, xv, slope).addcmul_(gv, scale)
            else:
                gx = gv * scale
            gx = _unview(gx, x.shape)
        return (gx, sum_dy_xhat[:c] if need_w else None, sum_dy[:c] if need_b else None,
                None, None, None, None, None, None)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _SerialBatchNorm(torch.autograd.Function):
    """ATen's batch norm, forward and backward on one thread (small tensors, see :class:`BatchNorm2d`)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training: bool, momentum: float, eps: float):
        with _one_thread():
            out, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
                x, weight, bias, running_mean, running_var, training, momentum, eps)
        ctx.save_for_backward(x, weight, running_mean, running_var, save_mean, save_invstd)
        ctx.conf = training, eps
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # ATen's differentiable backward: double backward works
        x, weight, running_mean, running_var, save_mean, save_invstd = ctx.saved_tensors
        training, eps = ctx.conf
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        with _one_thread():
            gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
                grad.contiguous(memory_format=torch.channels_last), x, weight, running_mean, running_var,
                save_mean, save_invstd, training, eps, mask)
        return gx, gw, gb, None, None, None, None, None


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with other kernels for channels-last CPU input when that is faster.

    Only with more than one thread and a channel count that is not a multiple
    of 16, where ATen's kernels slow down with the second thread: tensors of at
    least :data:`FOLD_MIN_NUMEL` elements whose pixel count the fold divides take
    the folded view (module docstring); smaller ones, whose cost is mostly the
    per-call overhead of the fold's dozen small ops, run ATen's kernels on one
    thread. Every other input (CUDA, NCHW, half precision, C 16 / 144, one
    thread, :func:`shared_model.kernels.reference_kernels`) takes
    ``nn.BatchNorm2d``'s path. Same parameters, buffers and running-statistics
    updates (momentum, cumulative average, unbiased running variance).
    """

    def _path(self, x: torch.Tensor) -> int:
        """0: ``nn.BatchNorm2d``; -1: ATen on one thread; k > 0: the folded view with k pixels per row."""
        if not (_cpu(x) and torch.get_num_threads() > 1 and x.dtype == torch.float32 and x.shape[1] % _LANES
                and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()):
            return 0
        k = _fold(x.shape[1], x.numel() // x.shape[1]) if x.numel() >= FOLD_MIN_NUMEL else 0
        return k or -1

    def forward(self, x: torch.Tensor, scale: Optional[torch.Tensor] = None, relu: bool = False) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``: ``scale * bn(x)``, ``scale * relu(bn(x))`` with ``relu``.

        ``scale``: ``None``; a scalar tensor, applied as the batch norm's weight
        (times the affine weight and bias, if any): DARTS's mixing weight of an op
        whose output is this batch norm's (Liu et al. 2019, Sec. 2.2, Eq. 2). ATen
        then multiplies by it inside its own pass, and the scale's gradient is the
        per-channel sum its backward computes anyway, instead of two more passes
        over the output for ``scale * y`` and ``sum(grad * y)``. Or ``(B,)``, one
        factor per sample that needs no gradient: a drop-path mask divided by the
        keep probability (DARTS / ENAS ``drop_path``), applied inside the native
        kernels' passes where they run and as a product otherwise. ``relu=True``
        applies a ReLU to the batch norm's output, inside the same passes on the
        native path (:mod:`shared_model.native_bn`).
        """
        per_sample = scale is not None and scale.dim() == 1
        if per_sample and scale.requires_grad:
            raise ValueError("a per-sample batch-norm scale takes no gradient (it is a drop-path mask)")
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        # Batch statistics only: eval-mode graphs get traced and exported, the native kernels cannot be.
        k = native_fold(x, relu) if use_batch and not (torch.jit.is_tracing() or torch.compiler.is_compiling()) \
            else 0
        if per_sample and k and (x.shape[2] * x.shape[3]) % k:
            k = 0  # a row of the folded view would hold pixels of two samples
        if k and any(t is not None and t.dtype != torch.float32
                     for t in (self.weight, self.bias, self.running_mean, self.running_var)):
            k = 0  # the kernels read float32 parameters and statistics
        path = 0 if k else self._path(x)
        scalar, factors = (None, scale) if per_sample else (scale, None)
        if k:
            weight, bias, running_mean, running_var, factor = self._arguments(scalar)
            return NativeBatchNorm.apply(x, weight, bias, running_mean, running_var, use_batch, factor, self.eps,
                                         relu, k, factors)
        if not path and scalar is None:
            out = super().forward(x)
        else:
            weight, bias, running_mean, running_var, factor = self._arguments(scalar)
            if not path:
                out = F.batch_norm(x, running_mean, running_var, weight, bias, use_batch, factor, self.eps)
            elif path < 0:
                out = _SerialBatchNorm.apply(x, weight, bias, running_mean, running_var, use_batch, factor,
                                             self.eps)
            else:
                out = _FoldedBatchNorm.apply(x, weight, bias, running_mean, running_var, use_batch, factor,
                                             self.eps, path)
        out = F.relu(out) if relu else out
        return out if factors is None else out * factors.view(-1, 1, 1, 1)

    def _arguments(self, scale: Optional[torch.Tensor]):
        """``nn.BatchNorm2d.forward``'s bookkeeping (momentum, batch count, which statistics) and the
        weight and bias times a scalar ``scale``: ``(weight, bias, running_mean, running_var, factor)``."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        keep = not self.training or self.track_running_stats
        running_mean: Optional[torch.Tensor] = self.running_mean if keep else None
        running_var: Optional[torch.Tensor] = self.running_var if keep else None
        weight, bias = self.weight, self.bias
        if scale is not None:
            # Dense, not expand()ed: a stride-0 weight sends ATen's channels-last backward down
            # a path 3x slower than the unscaled one ((32, 16, 16, 16): 0.97 against 0.29 ms).
            weight = scale.expand(self.num_features).contiguous() if weight is None else weight * scale
            bias = None if bias is None else bias * scale
        return weight, bias, running_mean, running_var, factor
