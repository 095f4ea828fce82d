"""Measuring latency: every block of a space (a lookup table) and whole networks.

Each block is built on its own (:func:`~shared_model.cost_blocks.build_block`),
fed random inputs of its shapes at the table's batch size and timed in eval
mode without gradients, with PyTorch or with ONNX Runtime (the block exported
to ONNX first). Timing is interleaved: ``rounds`` passes over all blocks, each
taking ``repeats / rounds`` timed runs per block after a warm-up, so a burst of
load from other processes spreads over many entries instead of spoiling a few;
an entry is the median of all its runs. The thread count is set for the
measurement and restored afterwards. With ONNX Runtime every block is one
session run while a network is a single one, so the time of an empty
session run is taken off every entry (the calibrated overhead restores it once).
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import platform
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from enas.cost.lut import LatencyTable, entry_stats, space_identity
from enas.errors import UserError
from shared_model.cost_blocks import Block, NetSpec, block_inputs, build_block
from shared_model.profile import time_calls
from shared_model.spaces import Space

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime")


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads, then restore the previous count."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _onnx_runner(module: nn.Module, inputs: Sequence[torch.Tensor], device: torch.device,
                 threads: Optional[int]) -> Callable[[], Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("--runtime onnxruntime needs onnxruntime: pip install 'enas[export]'") from None
    buffer = io.BytesIO()
    names = [f"x{i}" for i in range(len(inputs))]
    # The TorchScript-based exporter: fast for hundreds of small blocks, and every block op has a symbolic.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # A block's Python flags (e.g. an op's relu_done) are constants of its shape: the tracer's
        # warning that they will be treated as such says what is intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module.cpu(), tuple(t.cpu() for t in inputs), buffer, dynamo=False, opset_version=17,
                          input_names=names)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    providers = ["CUDAExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(buffer.getvalue(), options, providers=providers)
    # An input the graph does not read (a zeros_like block needs only its shape) is dropped from it.
    kept = {i.name for i in session.get_inputs()}
    feeds = {n: t.cpu().numpy() for n, t in zip(names, inputs) if n in kept}
    return lambda: session.run(None, feeds)


def runner(module: nn.Module, inputs: Sequence[torch.Tensor], runtime: str, device: torch.device,
           threads: Optional[int] = None) -> Callable[[], Any]:
    """A no-argument callable that runs ``module`` on ``inputs`` once with ``runtime``."""
    module.eval()
    if runtime == "onnxruntime":
        return _onnx_runner(module, inputs, device, threads)
    if runtime != "torch":
        raise UserError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    module.to(device)
    xs = [t.to(device) for t in inputs]
    return lambda: module(*xs)


def time_interleaved(runners: Sequence[Callable[[], Any]], device: torch.device, warmup: int, repeats: int,
                     rounds: int, clock: str = "wall") -> List[List[float]]:
    """Per runner the times (ms) of ``repeats`` runs, taken in ``rounds`` passes over all runners."""
    per_round = max(1, math.ceil(repeats / rounds))
    times: List[List[float]] = [[] for _ in runners]
    with torch.no_grad():
        for r in range(rounds):
            for i, run in enumerate(runners):
                stats = time_calls(run, device, warmup if r == 0 else min(warmup, 2), per_round, keep_times=True,
                                   clock=clock)
                times[i] += stats["times_ms"]
    return times


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device, threads: Optional[int]) -> Dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"type": device.type, "name": name, "threads": threads or torch.get_num_threads(),
            "cores": os.cpu_count()}


def versions(runtime: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda}
    if runtime == "onnxruntime":
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    return out


def load_average() -> List[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def build_child(space: Space, arch: Any, spec: NetSpec) -> nn.Module:
    """The eval-mode child network of ``arch`` at ``spec`` (random weights)."""
    return space.build_child(arch, spec.channels, spec.layers, spec.num_classes, in_channels=spec.in_channels,
                             image_size=min(spec.hw), **dict(spec.options)).eval()


def check_clock(clock: str, device: torch.device, threads: Optional[int]) -> None:
    """The cpu clock times one CPU thread: refuse it for CUDA or several threads."""
    if clock == "cpu" and (device.type != "cpu" or threads != 1):
        raise UserError("--clock cpu times the calling thread: it needs --device cpu and --threads 1")


def measure_networks(space: Space, archs: Sequence[Any], spec: NetSpec, batch_size: int, device: torch.device,
                     runtime: str = "torch", threads: Optional[int] = 1, warmup: int = 10, repeats: int = 50,
                     rounds: int = 5, seed: int = 0, clock: str = "wall") -> List[Dict[str, float]]:
    """Measured end-to-end latency of each architecture's child network: ``median``, ``p10``, ``p90`` (ms)."""
    check_clock(clock, device, threads)
    gen = torch.Generator().manual_seed(seed)
    shape = (batch_size, spec.in_channels) + spec.hw
    with torch_threads(threads):
        runs = [runner(build_child(space, a, spec), [torch.randn(shape, generator=gen)], runtime, device, threads)
                for a in archs]
        times = time_interleaved(runs, device, warmup, repeats, rounds, clock)
    return [dict(zip(("median", "p10", "p90"), entry_stats(t))) for t in times]


def measure_table(space: Space, spec: NetSpec, batch_size: int, device: torch.device, runtime: str = "torch",
                  threads: Optional[int] = 1, warmup: int = 10, repeats: int = 100, rounds: int = 5,
                  calibrate: int = 5, seed: int = 0, clock: str = "wall") -> LatencyTable:
    """Measure every block of ``space`` at ``spec`` (a :class:`LatencyTable`), then calibrate the overhead.

    Args:
        calibrate: random architectures (seeded by ``seed``) measured end to end;
            the table's ``overhead`` is the median of measured minus summed entries.
        clock: ``wall``, or ``cpu`` (the thread's CPU time; one thread on a CPU only):
            robust to other processes on a busy machine.

    Raises:
        UserError: the space has no cost blocks, or a bad runtime or device.
    """
    try:
        blocks: List[Block] = space.cost_vocabulary(spec)
    except NotImplementedError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:
        raise UserError(f"cannot build the {space.name} network: {exc}") from None
    check_clock(clock, device, threads)
    started, load_before = time.time(), load_average()
    gen = torch.Generator().manual_seed(seed)
    logger.info("measuring %d blocks of the %s space (%d ops) on %s, batch %d, %s, %s thread(s)", len(blocks),
                space.name, sum(b.is_op for b in blocks), device, batch_size, runtime, threads or "default")
    with torch_threads(threads):
        runs = [runner(build_block(b), block_inputs(b, batch_size, generator=gen), runtime, device, threads)
                for b in blocks]
        if runtime == "onnxruntime":
            # Each block is its own session run, a whole network one run: time an empty graph
            # (an identity) and take its cost off every entry; the calibration adds one back.
            runs.append(runner(nn.Identity(), [torch.zeros(batch_size, 1)], runtime, device, threads))
        times = time_interleaved(runs, device, warmup, repeats, rounds, clock)
    per_run = entry_stats(times.pop())[0] if runtime == "onnxruntime" else 0.0
    entries = {}
    for b, t in zip(blocks, times):
        median, p10, p90 = (max(0.0, v - per_run) for v in entry_stats(t))
        entries[b.key] = {"median": median, "p10": p10, "p90": p90, "op": b.is_op}
    table = LatencyTable(space_identity(space), spec, batch_size, device_info(device, threads), runtime, entries)
    overhead: Dict[str, Any] = {"median": 0.0, "archs": 0}
    if calibrate > 0:
        archs = [space.decode(space.random_actions(gen)) for _ in range(calibrate)]
        measured = measure_networks(space, archs, spec, batch_size, device, runtime, threads, warmup,
                                    repeats, rounds, seed, clock)
        residual = [m["median"] - table.predict(space.cost_blocks(a, spec))["total_ms"]
                    for a, m in zip(archs, measured)]
        # Glue time is not negative: a negative median residual is measurement noise.
        overhead = {"median": max(0.0, entry_stats(residual)[0]), "archs": calibrate,
                    "residuals_ms": [round(r, 5) for r in residual]}
    table.overhead = overhead
    # What uniform draws predict, to choose a target from (tracing is slower: fewer draws).
    draws = 500 if space.exact_cost_blocks else 100
    predicted = sorted(table.predict(space.cost_blocks(space.decode(space.random_actions(gen)), spec))["total_ms"]
                       for _ in range(draws))
    percentiles = {f"p{q}": round(predicted[round(q / 100 * (draws - 1))], 5) for q in (0, 5, 25, 50, 75, 95, 100)}
    table.meta = {
        "random_architectures_ms": dict(percentiles, draws=draws), "versions": versions(runtime),
        "measurement": {"clock": clock, "per_run_ms_removed": per_run, "warmup": warmup, "repeats": repeats,
                        "rounds": rounds, "calibration_seed": seed,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                        "seconds": round(time.time() - started, 2), "load_average_before": load_before,
                        "load_average_after": load_average()}}
    return table
