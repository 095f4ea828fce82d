"""Measurement helpers shared by the benchmark scripts (``bench.py``, ``profile_step.py``).

Clocks, per-component time splits, contention from other processes, robust
spreads, per-item peak memory and synthetic CIFAR-shaped data. Timing rules are
in docs/performance.md ("A busy machine").
"""
from __future__ import annotations

import math
import os
import resource
import time
from collections import defaultdict
from typing import Callable, Dict, Iterator, List, Optional

import torch

from enas.data.datasets import ImageData

NUM_CLASSES = 10


class Clock:
    """Wall clock that first waits for queued CUDA work (no sync on CPU).

    ``process`` reads this process's CPU time instead (all its threads): with
    ``--threads 1`` it ignores the time other processes take on a busy machine.
    """

    def __init__(self, device: torch.device, kind: str = "wall"):
        self.cuda = device.type == "cuda"
        self.read = time.process_time if kind == "process" else time.perf_counter

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return self.read()


class Split:
    """Accumulates the time spent inside wrapped callables of the real loop."""

    def __init__(self, clock: Clock):
        self.clock, self.acc, self.seen = clock, defaultdict(float), {}

    def delta(self) -> Dict[str, float]:
        """Time per wrapped callable since the previous call."""
        out = {k: v - self.seen.get(k, 0.0) for k, v in self.acc.items()}
        self.seen = dict(self.acc)
        return out

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            t = self.clock.now()
            try:
                return fn(*args, **kwargs)
            finally:
                self.acc[name] += self.clock.now() - t
        return timed

    def wrap_iter(self, name: str, factory: Callable[..., Iterator]) -> Callable[..., Iterator]:
        def make(*args, **kwargs):
            it = self.wrap(name, factory)(*args, **kwargs)
            while True:
                try:
                    item = self.wrap(name, next)(it)
                except StopIteration:
                    return
                yield item
        return make


class Contention:
    """Share of the machine's CPU used by *other* processes during the run (Linux).

    ``/proc/stat`` busy time minus this process's CPU time, over wall time x
    cores: 0 means the figures come from an otherwise idle machine.
    """

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        own = os.times()
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.monotonic()

    def share(self) -> Optional[float]:
        end = self._read()
        if self.start is None or end is None:
            return None
        busy, own, wall = (e - s for e, s in zip(end, self.start))
        return round(max(0.0, (busy - own) / (wall * (os.cpu_count() or 1))), 3)


def spread(times: List[float]) -> Dict[str, float]:
    """Median, p10, p90, min and max of ``times`` (seconds), in milliseconds."""
    xs = sorted(times)

    def q(p: float) -> float:
        k = (len(xs) - 1) * p
        lo, hi = math.floor(k), math.ceil(k)
        return 1e3 * (xs[lo] + (xs[hi] - xs[lo]) * (k - lo))

    return {"median": q(0.5), "p10": q(0.1), "p90": q(0.9), "min": 1e3 * xs[0], "max": 1e3 * xs[-1]}


def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory window; False if only the process-wide CPU peak is available.

    CUDA: ``reset_peak_memory_stats``. CPU (Linux >= 4.0): writing ``5`` to
    ``/proc/self/clear_refs`` resets the resident-set high-water mark ``VmHWM``.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def peak_memory(device: torch.device, scoped: bool = True) -> Dict[str, object]:
    """Peak memory since :func:`reset_peak_memory` (``scoped``) or of the whole process so far."""
    if device.type == "cuda":
        return {"peak_cuda_mib": torch.cuda.max_memory_allocated(device) / 2**20}
    hwm = _status_kib("VmHWM") if scoped else None
    if hwm is not None:
        return {"peak_rss_mib": hwm / 1024, "peak_rss_scope": "item"}
    # ru_maxrss is the process-wide high-water mark so far (it never goes down between items).
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_rss_scope": "process"}


def synthetic(n: int, size: int, seed: int) -> ImageData:
    """``n`` random uint8 CIFAR-shaped images (3 x size x size) with 10 classes."""
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
                     torch.randint(0, NUM_CLASSES, (n,), generator=g), [str(i) for i in range(NUM_CLASSES)],
                     (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


def forever(fn: Callable) -> Iterator:
    while True:
        yield fn()
