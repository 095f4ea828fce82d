"""Model size, compute and speed: parameters, multiply-accumulates, latency.

Parameter counts follow the DARTS convention (Liu et al. 2019, Sec. 3.3 and
``utils.count_parameters_in_MB``): the auxiliary head is excluded because it
is dropped at inference.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Iterable, List, Sequence

import numpy as np
import torch
from torch import nn

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


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulate operations of one eval-mode forward pass.

    Counted: every ``nn.Conv2d`` (``out_elements * in_channels / groups *
    kH * kW``) and every ``nn.Linear`` (``out_elements * in_features``) that
    actually runs, so eval-only paths are what is measured (the auxiliary head
    is skipped, as at inference). Biases, BatchNorm, activations, pooling and
    additions are not counted; on DARTS-style cells they are well under 1% of
    the conv MACs.

    Args:
        model: any module; it runs in eval mode under ``torch.no_grad`` and
            its training flag is restored afterwards.
        input_shape: ``(C, H, W)`` (batch 1 is added, giving MACs per image)
            or ``(B, C, H, W)`` (MACs for the whole batch).

    Returns:
        The MAC count as an integer (FLOPs are roughly twice this).
    """
    total = [0]

    def conv_hook(module: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        kh, kw = module.kernel_size
        total[0] += out.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inp, out: torch.Tensor) -> None:
        total[0] += out.numel() * module.in_features

    handles: List = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    device, dtype = _param_device_dtype(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(_input_tensor(input_shape, 1, device, dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total[0])


def measure_latency(model: nn.Module, input_shape: Sequence[int], device="cpu", batch_size: int = 1,
                    warmup: int = 5, repeats: int = 20) -> Dict[str, float]:
    """Wall-clock time of eval-mode forward passes on ``device``.

    The model is moved to ``device`` (in place, like ``model.to``) and its
    training flag is restored afterwards. On CUDA each pass is bracketed by
    ``torch.cuda.synchronize`` so the time covers the kernels, not just their
    launch.

    Args:
        model: the network.
        input_shape: ``(C, H, W)`` of one image.
        device: where to run.
        batch_size: images per forward pass.
        warmup: untimed passes first (allocator, cuDNN autotune).
        repeats: timed passes; at least 1.

    Returns:
        ``{"median_ms", "p10", "p90"}``: median and 10th/90th percentile of
        the per-pass time, all in milliseconds, plus ``"batch_size"`` and
        ``"repeats"``.
    """
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, batch_size >= 1; got {repeats}, {warmup}, {batch_size}")
    if len(tuple(input_shape)) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    device = torch.device(device)
    model.to(device)
    _, dtype = _param_device_dtype(model)
    x = _input_tensor(input_shape, batch_size, device, dtype)  # (B, C, H, W)
    cuda = device.type == "cuda"
    was_training = model.training
    model.eval()
    times: List[float] = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                if cuda:
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                model(x)
                if cuda:
                    torch.cuda.synchronize(device)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    arr = np.asarray(times)
    result = {
        "median_ms": float(np.median(arr)),
        "p10": float(np.percentile(arr, 10)),
        "p90": float(np.percentile(arr, 90)),
        "batch_size": batch_size,
        "repeats": repeats,
    }
    logger.debug("latency on %s: %s", device, result)
    return result
