"""Model size, compute and speed: parameters, multiply-accumulates, latency.

Parameter counts follow the DARTS convention (Liu et al. 2019, Sec. 3.3 and
``utils.count_parameters_in_MB``): the auxiliary head is excluded because it
is dropped at inference.

Multiply-accumulates are counted by PyTorch's maintained
:class:`torch.utils.flop_counter.FlopCounterMode`, which sees every aten
convolution and matrix product, including functional ones (``F.conv2d`` in
the supernet's cell output), and runs on the meta device without computing
anything. It replaced a hand-written hook counter that saw only
``nn.Conv2d``/``nn.Linear`` modules: both give the same counts on the child
networks (DARTS_V2 at C 36 / 20 cells 528,359,040; ENAS_RELEASED with the ENAS
options 620,907,552; NAS-Bench-201 all-3x3 at C 16 / N 5 220,119,680), the
hooks missed the supernet's functional output convs (2,609,792 vs 2,773,632 on
a toy micro supernet).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Iterable, List, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

logger = logging.getLogger(__name__)


def count_parameters(model: nn.Module, exclude: Iterable[str] = ("auxiliary",)) -> int:
    """Number of parameter elements whose name contains none of ``exclude``."""
    exclude = tuple(exclude)
    return sum(p.numel() for name, p in model.named_parameters() if not any(e in name for e in exclude))


def _input_tensor(input_shape: Sequence[int], batch_size: int, device, dtype) -> torch.Tensor:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (batch_size,) + shape
    elif len(shape) != 4:
        raise ValueError(f"input_shape must be (C, H, W) or (B, C, H, W), got {tuple(input_shape)}")
    return torch.randn(shape, device=device, dtype=dtype)


def _param_device_dtype(model: nn.Module):
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def count_call_macs(fn: Callable[[], object]) -> int:
    """Multiply-accumulates of one call of ``fn`` (FLOPs of conv and matmul ops / 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    # FlopCounterMode counts 2 FLOPs per multiply-accumulate for every op it has a formula for.
    return int(counter.get_total_flops()) // 2


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulate operations of one eval-mode forward pass.

    Counted by :class:`~torch.utils.flop_counter.FlopCounterMode`: every
    convolution (``out_elements * in_channels / groups * kH * kW``) and matrix
    product (``nn.Linear``: ``out_elements * in_features``) that actually runs,
    so eval-only paths are what is measured (the auxiliary head is skipped, as
    at inference). Biases, BatchNorm, activations, pooling and additions are
    not counted; on DARTS-style cells they are well under 1% of the conv MACs.
    A model on the meta device is counted without computing anything.

    Args:
        model: any module; it runs in eval mode and its training flag is
            restored afterwards.
        input_shape: ``(C, H, W)`` (batch 1 is added, giving MACs per image)
            or ``(B, C, H, W)`` (MACs for the whole batch).

    Returns:
        The MAC count as an integer (FLOPs are roughly twice this).
    """
    device, dtype = _param_device_dtype(model)
    x = _input_tensor(input_shape, 1, device, dtype)
    was_training = model.training
    model.eval()
    try:
        return count_call_macs(lambda: model(x))
    finally:
        model.train(was_training)


CLOCKS = ("wall", "cpu")


def time_calls(fn: Callable[[], object], device="cpu", warmup: int = 5, repeats: int = 20,
               keep_times: bool = False, clock: str = "wall") -> Dict[str, Any]:
    """Time of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    On CUDA each call is bracketed by ``torch.cuda.synchronize`` so the time
    covers the kernels, not just their launch. ``clock="cpu"`` reads the
    calling thread's CPU time instead of the wall clock: with one intra-op
    thread on a CPU (ops then run on the calling thread) it is the latency an
    idle machine would show, and time spent descheduled by other processes on a
    busy machine does not count; it is refused on CUDA.

    Returns:
        ``median_ms``, ``p10``, ``p90``, ``min_ms``, ``max_ms`` (all in
        milliseconds) and ``repeats``; with ``keep_times`` also ``times_ms``,
        every timed call.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0; got {repeats}, {warmup}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda and clock == "cpu":
        raise ValueError("the cpu clock cannot time CUDA kernels; use the wall clock")
    now = time.thread_time if clock == "cpu" else time.perf_counter
    times: List[float] = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize(device)
            start = now()
            fn()
            if cuda:
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((now() - start) * 1000.0)
    arr = np.asarray(times)
    out: Dict[str, Any] = {"median_ms": float(np.median(arr)), "p10": float(np.percentile(arr, 10)),
                           "p90": float(np.percentile(arr, 90)), "min_ms": float(arr.min()),
                           "max_ms": float(arr.max()), "repeats": repeats}
    if keep_times:
        out["times_ms"] = times
    return out


def measure_latency(model: nn.Module, input_shape: Sequence[int], device="cpu", batch_size: int = 1,
                    warmup: int = 5, repeats: int = 20) -> Dict[str, float]:
    """Wall-clock time of eval-mode forward passes on ``device``.

    The model is moved to ``device`` (in place, like ``model.to``) and its
    training flag is restored afterwards.

    Args:
        model: the network.
        input_shape: ``(C, H, W)`` of one image.
        device: where to run.
        batch_size: images per forward pass.
        warmup: untimed passes first (allocator, cuDNN autotune).
        repeats: timed passes; at least 1.

    Returns:
        ``{"median_ms", "p10", "p90"}``: median and 10th/90th percentile of
        the per-pass time, all in milliseconds, plus ``min_ms``, ``max_ms``,
        ``"batch_size"`` and ``"repeats"``.
    """
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, batch_size >= 1; got {repeats}, {warmup}, {batch_size}")
    if len(tuple(input_shape)) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    device = torch.device(device)
    model.to(device)
    _, dtype = _param_device_dtype(model)
    x = _input_tensor(input_shape, batch_size, device, dtype)  # (B, C, H, W)
    was_training = model.training
    model.eval()
    try:
        result = dict(time_calls(lambda: model(x), device, warmup, repeats), batch_size=batch_size)
    finally:
        model.train(was_training)
    logger.debug("latency on %s: %s", device, result)
    return result
