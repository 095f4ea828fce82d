"""Faster CPU kernels for the convolutions of the cell ops: the same maths, other ATen calls.

Profiling the search steps on CPU (docs/performance.md) showed two oneDNN
convolution kernels far off their forward cost at the small channel counts of
a search network (C 8-80, channels-last):

* a 1x1 stride-1 convolution on a channels-last tensor *is* a matrix product
  of the ``(B*H*W, C_in)`` view with the ``(C_out, C_in)`` weight; MKL's GEMMs
  do its forward and both backward products about 2x faster than oneDNN's
  1x1 convolution (:func:`pointwise_conv`);
* the input gradient of a stride-1 depthwise convolution with "same" padding
  is the same depthwise convolution of the output gradient with the kernel
  flipped; oneDNN's forward kernel computes it about 2x faster than its
  backward-data kernel (:class:`DepthwiseConv2d`). The weight gradient stays
  oneDNN's, for kernels wider than 3 taken in column blocks of width 3
  (:func:`_depthwise_weight_grad`).

Both are used only on CPU (CUDA keeps cuDNN's kernels). The cells also take
each state's ReLU once for all the ReLU-first ops that read it
(:func:`shared_model.ops.takes_relu`) and add DARTS's weighted terms with one
``addcmul``. :func:`reference_kernels` switches all of it off (plain
``F.conv2d``, one ReLU per op, ``out + w * y``): the tests compare the two
paths and ``scripts/ab_step.py`` times them against each other.
Parameter shapes and names are those of ``nn.Conv2d``, so checkpoints load
either way.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

_FAST = True
#: Benchmarks only (``scripts/ab_step.py --against flipped-everywhere``): the flipped-kernel
#: depthwise path at every size, as before the size rule of :class:`DepthwiseConv2d`.
_FLIPPED_EVERYWHERE = False


def fast_kernels_enabled() -> bool:
    """Whether the CPU fast paths are active (they are unless :func:`reference_kernels` is open)."""
    return _FAST


@contextlib.contextmanager
def reference_kernels() -> Iterator[None]:
    """The plain PyTorch path inside the block: ``F.conv2d`` and its autograd, one ReLU per op."""
    global _FAST
    saved, _FAST = _FAST, False
    try:
        yield
    finally:
        _FAST = saved


def _cpu(x: torch.Tensor) -> bool:
    return _FAST and x.device.type == "cpu" and x.dim() == 4


def fold_factor(c: int, lanes: int = 16) -> int:
    """The least ``k`` (a power of two) with ``k * c`` a multiple of ``lanes``: how many pixels one row
    of the ``(B*H*W/k, k*C)`` view of a channels-last tensor holds so that rows fill whole vector
    registers (16 floats: one AVX-512 register, two AVX2 ones)."""
    k = 1
    while (k * c) % lanes:
        k *= 2
    return k


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1x1 stride-1 convolution without bias: ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    On CPU with a channels-last input it is one matrix product of views (no
    copy); the output is channels-last too, as oneDNN's would be.
    """
    if _cpu(x) and x.is_contiguous(memory_format=torch.channels_last) and x.dtype == weight.dtype:
        b, c, h, w = x.shape
        o = weight.shape[0]
        y = x.permute(0, 2, 3, 1).reshape(-1, c) @ weight.reshape(o, c).t()  # (B*H*W, C_out)
        return y.view(b, h, w, o).permute(0, 3, 1, 2)  # (B, C_out, H, W), channels-last
    return F.conv2d(x, weight)


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(c_in, c_out, 1, bias=False)`` computed by :func:`pointwise_conv`."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv(x, self.weight)


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format


class _CatChannels(torch.autograd.Function):
    """``torch.cat(xs, 1)`` whose backward hands each input a dense gradient in its own layout."""

    @staticmethod
    def forward(ctx, *xs: torch.Tensor) -> torch.Tensor:
        ctx.parts = [(x.shape[1], _format(x)) for x in xs]
        return torch.cat(xs, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # differentiable ops: double backward works (DARTS tests)
        sizes = [c for c, _ in ctx.parts]
        return tuple(g.contiguous(memory_format=fmt) for g, (_, fmt) in zip(grad.split(sizes, dim=1), ctx.parts))


def cat_channels(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``(B, C_i, H, W)`` tensors along the channels.

    ``torch.cat``'s backward gives every input a channel slice of the output
    gradient, which is not contiguous; the op that produced the input (a BN in
    most cells) then runs its backward on strided memory, on CPU through
    PyTorch's generic batch-norm path: 8x slower than the contiguous one at the
    search shapes. On CPU this version copies each slice into a dense tensor
    first (a fraction of that cost).
    """
    xs = list(xs)
    if len(xs) > 1 and _cpu(xs[0]) and torch.is_grad_enabled() and any(x.requires_grad for x in xs):
        return _CatChannels.apply(*xs)
    return torch.cat(xs, dim=1)


def _grids(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Views of the even-even grid and of the odd-odd grid zero-padded to the same size."""
    h, w = x.shape[-2:]
    return x[:, :, ::2, ::2], F.pad(x[:, :, 1::2, 1::2], (0, w % 2, 0, h % 2))


class _EvenOddPixels(torch.autograd.Function):
    """The even-even and the odd-odd pixel grids of ``x``, dense; one gradient tensor back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        ctx.shape, ctx.fmt = x.shape, _format(x)
        even, odd = _grids(x)
        return even.contiguous(memory_format=ctx.fmt), odd.contiguous(memory_format=ctx.fmt)

    @staticmethod
    def backward(ctx, g_even: torch.Tensor, g_odd: torch.Tensor):  # differentiable ops: double backward works
        h, w = ctx.shape[-2:]
        gx = g_even.new_zeros(ctx.shape).contiguous(memory_format=ctx.fmt)  # (B, C, H, W)
        gx[:, :, ::2, ::2] = g_even
        gx[:, :, 1::2, 1::2] = g_odd[:, :, : h // 2, : w // 2]
        return gx


def even_odd_pixels(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x[:, :, ::2, ::2], x[:, :, 1::2, 1::2] zero-padded to the same size)``, dense, in x's layout.

    The two inputs of :class:`shared_model.ops.FactorizedReduce`. Slicing them
    directly hands each branch a strided view, and its backward allocates and
    zeroes a full-size gradient per slice and per dimension, then adds the two
    branches' gradients: the profile of a DARTS step shows those zero fills
    alone at 4 % of its time. On CPU this version returns dense copies (the
    1x1 convolutions then take :func:`pointwise_conv`'s GEMM path) and its
    backward writes both gradients into one zeroed tensor.
    """
    if _cpu(x) and torch.is_grad_enabled() and x.requires_grad:
        return _EvenOddPixels.apply(x)
    return _grids(x)


class _DepthwiseSame(torch.autograd.Function):
    """Stride-1 depthwise convolution with "same" padding; input gradient by the flipped kernel."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: Tuple[int, int],
                dilation: Tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = padding, dilation
        return F.conv2d(x, weight, None, 1, padding, dilation, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # differentiable ops: double backward works
        x, weight = ctx.saved_tensors
        padding, dilation = ctx.conf
        groups = weight.shape[0]
        grad = grad.contiguous(memory_format=_format(x))
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # The transpose of a stride-1 convolution padded by d * (k - 1) / 2 on each side is
            # the same convolution with the kernel rotated by 180 degrees.
            grad_x = F.conv2d(grad, weight.flip(2, 3), None, 1, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            grad_w = _depthwise_weight_grad(grad, x, weight, padding, dilation)
        return grad_x, grad_w, None, None


#: Smaller inputs keep oneDNN's kernel: there the padding copies cost about what the blocks save (a
#: paired DARTS step at (32, 8, 32, 32): 0.99x with blocks; at (64, 16, 32, 32): 1.03x).
_SPLIT_MIN_NUMEL = 1 << 19


#: Undilated kernels wider than 3 take the autograd function from this size on when the compiled
#: weight gradient is there ((32, 8, 16, 16) 5x5, 2 threads: 0.15 ms against oneDNN's 0.26).
_NATIVE_DW_MIN_NUMEL = 1 << 16


def _native():
    """The kernels ``enas.native`` registered (:mod:`shared_model.native_bn`), or ``None``."""
    from shared_model.native_bn import native_kernels  # imported here: native_bn imports this module

    return native_kernels()


def _depthwise_weight_grad(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding: Tuple[int, int],
                           dilation: Tuple[int, int]) -> torch.Tensor:
    """Weight gradient ``(C, 1, kh, kw)`` of a stride-1 "same" depthwise convolution.

    oneDNN's depthwise weight-gradient kernel slows down sharply above a kernel width of 3
    (5x5 at (160, 20, 32, 32): 9 ms against 0.9 ms for 3x3 and 1.3 ms for 5x3 on AVX-512; with
    oneDNN capped to AVX2 the blocks gain less, 7.7 -> 7.0 ms, and 2.7 -> 1.6 ms at (64, 16, 32,
    32)). With the compiled kernels registered (``enas.native``) kernels wider than 3 and
    dilated ones take their ``enas_dw_wgrad`` ((160, 20, 32, 32) 5x5: 4.0 ms, 3x3 dilated 2 at
    (32, 8, 32, 32): 0.20 against 0.54 ms; undilated 3x3 stays with oneDNN, which is faster
    there). Otherwise undilated kernels wider than 3 are computed as column blocks of
    width <= 3: with ``x`` padded by ``p = (kw - 1) / 2`` columns on each side, the block of
    columns ``[s, s + b)`` is the ``(kh, b)`` weight gradient of that padded input against
    the output gradient padded by ``s`` columns on the left and ``kw - b - s`` on the right.
    """
    kh, kw = weight.shape[2:]
    groups = weight.shape[0]
    native = _native()
    if (native is not None and (kh > 3 or kw > 3 or tuple(dilation) != (1, 1)) and not torch.is_grad_enabled()
            and x.dtype == grad.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
            and grad.is_contiguous(memory_format=torch.channels_last)):
        # The compiled kernel (enas.native; double backward keeps ATen's differentiable op).
        return native.depthwise_weight_grad(grad, x, (kh, kw), tuple(padding), tuple(dilation))
    if kw <= 3 or tuple(dilation) != (1, 1) or x.numel() < _SPLIT_MIN_NUMEL:
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], list(padding), list(dilation), False, [0, 0], groups,
            [False, True, False])[1]
    p = (kw - 1) // 2
    x_pad = F.pad(x, (p, p))  # (B, C, H, W + kw - 1), channels-last like x
    blocks = []
    for s in range(0, kw, 3):
        b = min(3, kw - s)
        g = F.pad(grad, (s, kw - b - s))  # (B, C, H, W + kw - b)
        blocks.append(torch.ops.aten.convolution_backward(
            g, x_pad, weight[..., s:s + b], None, [1, 1], [padding[0], 0], [1, 1], False, [0, 0], groups,
            [False, True, False])[1])
    return torch.cat(blocks, dim=3)  # (C, 1, kh, kw)


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise ``nn.Conv2d(c, c, k, stride, padding, dilation, groups=c, bias=False)``.

    At stride 1 with "same" padding (``padding == dilation * (k - 1) / 2``, odd
    ``k``) its CPU backward computes the input gradient with the forward kernel
    (see the module docstring) where that pays for the Python autograd function
    (about 0.07 ms per forward and backward): always when dilated, for
    undilated kernels from :attr:`min_numel` input elements on (fwd+bwd at 2
    threads, 3x3: (32, 16, 16, 16) 0.34 against 0.28 ms plain, (160, 20, 32, 32)
    2.68 against 2.82 ms). Otherwise it is a plain ``nn.Conv2d``.
    """

    def __init__(self, c: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1):
        super().__init__(c, c, kernel, stride=stride, padding=padding, dilation=dilation, groups=c, bias=False)
        self.same = stride == 1 and kernel % 2 == 1 and padding == dilation * (kernel - 1) // 2
        self.min_numel = 0 if dilation > 1 else (1 << 21) if kernel <= 3 else (1 << 18)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        min_numel = self.min_numel
        if self.kernel_size[1] > 3 and min_numel > _NATIVE_DW_MIN_NUMEL and _native() is not None:
            min_numel = _NATIVE_DW_MIN_NUMEL  # the compiled 5x5 weight gradient pays from here
        if (self.same and _cpu(x) and x.dtype == self.weight.dtype and torch.is_grad_enabled()
                and (x.numel() >= min_numel or _FLIPPED_EVERYWHERE)):
            return _DepthwiseSame.apply(x, self.weight, self.padding, self.dilation)
        return super().forward(x)
