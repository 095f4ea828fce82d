"""Device, precision, memory format, threads and determinism for a run."""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from typing import ContextManager, List, Optional

import torch

from enas.errors import UserError
from enas.flat_sgd import FlatSGD, flattenable

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an unavailable CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UserError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def autocast(device: torch.device, amp: str) -> ContextManager:
    """bf16 autocast on CUDA (``auto``/``bf16``); a no-op elsewhere or with ``off``."""
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    # No weight-cast cache: every supernet weight is read once per forward, and CUDA graph
    # capture (run.cuda_graphs) refuses a caching autocast.
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False)


def use_channels_last(device: torch.device, setting: str, amp: str = "auto") -> bool:
    """Whether to store activations and conv weights channels-last (NHWC).

    ``auto`` picks per device what docs/performance.md measured:

    * CPU: on. oneDNN's depthwise convs are much faster in NHWC (a 5x5
      depthwise conv forward+backward at the ENAS search shapes 2.3-3.8x on
      a 2-core Xeon); whole steps at the paper sizes, re-measured after the
      factorized-reduction fix on an AMD EPYC (1 thread): ENAS 1.46x,
      reward 2.65x, DARTS 1.93x, retrain 1.68x. Safe on AVX2 because
      ``FactorizedReduce`` avoids oneDNN's broken 1x1 stride-2 kernel.
    * CUDA: on with bf16 autocast (tensor-core convs want NHWC), off with
      ``amp="off"``. Not measured yet: ``scripts/bench.py --device cuda
      --channels-last on|off`` decides.
    """
    if setting == "on":
        return True
    if setting == "off":
        return False
    if device.type == "cuda":
        return amp != "off"
    return True


def accelerate_supernet(model: torch.nn.Module, device: torch.device, compile: bool = False,
                        cuda_graphs: bool = False) -> str:
    """Apply ``run.compile`` / ``run.cuda_graphs`` to a supernet's op banks; returns a log line.

    Raises:
        UserError: CUDA graphs asked for on a device that is not CUDA.
    """
    from shared_model.accel import compile_op_banks, graph_op_banks

    if cuda_graphs and device.type != "cuda":
        raise UserError(f"run.cuda_graphs needs a CUDA device, this run uses {device.type}; "
                        "set run.cuda_graphs=false")
    if compile:
        n = compile_op_banks(model, device)
        return f"run.compile: {n} op modules compiled per input shape" if n else "run.compile: unavailable, eager"
    if cuda_graphs:
        return f"run.cuda_graphs: {len(graph_op_banks(model))} op modules captured per input shape on first use"
    return ""


def configure_threads(threads: Optional[int]) -> None:
    """Process-wide CPU settings of a run: torch's thread count, :func:`retain_freed_memory` and the
    compiled CPU kernels (:func:`enas.native.load_native_kernels`; PyTorch's without a compiler)."""
    from enas.native import load_native_kernels

    if threads:
        torch.set_num_threads(threads)
    retain_freed_memory()
    load_native_kernels()


def retain_freed_memory() -> bool:
    """Keep freed tensor memory in the process instead of returning it to the OS (glibc only).

    glibc serves blocks above 32 MiB (and, depending on its adaptive threshold, smaller
    ones) with fresh ``mmap`` pages and unmaps them when freed, so every training step
    page-faults its activations in again and the kernel zeroes them: 20 % of a DARTS_V2
    retrain step's CPU time at paper size (docs/performance.md). With ``mmap`` off and
    trimming only above 2 GiB, freed blocks are reused. The resident size then stays at
    its peak, which a training process reaches in its first step anyway. Returns whether
    the settings took (False off glibc, e.g. macOS or musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def set_determinism(seed: int, deterministic: bool) -> None:
    """Seed the global RNG; with ``deterministic`` also force deterministic kernels."""
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    from shared_model.native_bn import native_kernels

    native = ", compiled kernels" if native_kernels() is not None else ""
    return f"cpu ({torch.get_num_threads()} threads{native})"


def sgd(params: List[torch.nn.Parameter], lr: float, momentum: float, nesterov: bool,
        weight_decay: float, flat: bool = True) -> torch.optim.SGD:
    """SGD with momentum as one fused kernel over all parameters (CPU and CUDA).

    torch's fused SGD takes the first step (``buf = grad``) for all parameters or
    for none: it fails once some hold momentum buffers and others get their
    first gradient, which a weight-sharing supernet trained without off-path
    updates does on most steps. Every parameter therefore starts with a zero
    buffer, here and after ``load_state_dict`` (a checkpoint holds buffers only
    for the parameters that had gradients). With no dampening that is exactly
    the first step: ``momentum * 0 + grad == grad``. Against the multi-tensor
    (``foreach``) step of the ENAS supernet's 1,367 tensors: 7.4 -> 4.1 ms
    (docs/performance.md). Parameters on another device, or a torch without a
    fused CPU step, take ``foreach``.

    With ``flat`` (the default) and parameters of one device and dtype it is a
    :class:`enas.flat_sgd.FlatSGD`: the parameters, their gradients and the momentum
    buffers become views of three flat buffers, so the step, the zeroing and the
    gradient norm are one operation each instead of one per tensor (ENAS step at the
    peers' size: 12 ms -> about 1 ms with its checks). Call it once the model has its device
    and memory format, before anything records parameter addresses.
    """
    devices = {p.device.type for p in params}
    fused = momentum > 0 and devices <= {"cpu", "cuda"} and len(devices) == 1 and \
        all(p.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16) for p in params)
    options = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if fused and flat and flattenable(params):
        try:
            return FlatSGD(params, **options)
        except (RuntimeError, ValueError):  # no fused kernel for this device in this torch
            pass
    try:
        optimizer = torch.optim.SGD(params, fused=True, **options) if fused else None
    except (RuntimeError, ValueError):  # no fused kernel for this device in this torch
        optimizer = None
    if optimizer is None:
        return torch.optim.SGD(params, foreach=True, **options)

    def fill_buffers(opt: torch.optim.Optimizer) -> None:
        for group in opt.param_groups:
            # A loaded state brings its writer's flags (a foreach checkpoint: fused None).
            group["fused"], group["foreach"] = True, None
            for p in group["params"]:
                state = opt.state[p]
                if state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    fill_buffers(optimizer)
    optimizer.register_load_state_dict_post_hook(fill_buffers)
    return optimizer
