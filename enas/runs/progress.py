"""Progress a person can see: tqdm bars on a terminal, timed log lines elsewhere, run ETAs.

On a terminal each phase (an epoch's training steps, the controller updates,
derive) shows a tqdm bar. Under ``nohup``, ``tee``, CI or any other
non-terminal stderr the same factory returns :class:`LogBar`, which logs one
line every ``run.progress_seconds`` seconds with the position, the rate and
the phase's ETA. :class:`RunClock` estimates the whole run's remaining time
from the epochs measured so far; the drivers put it in the bars, the lines
and the end-of-epoch line.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable, List, Optional

logger = logging.getLogger(__name__)


def duration(seconds: Optional[float]) -> str:
    """``3725`` -> ``"1h02m"``, ``75`` -> ``"1m15s"``, ``None`` -> ``"?"``."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class LogBar:
    """A tqdm-like bar (``update``, ``set_postfix``, ``close``) that logs a line every ``every`` s.

    Args:
        total: units of the phase.
        initial: units already done (a resumed phase).
        desc: what the phase is, e.g. ``"epoch 3/150 train"``.
        every: seconds between lines.
        clock: time source (tests pass a fake).
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, **_: Any):
        self.total, self.n, self.desc, self.every, self.clock = total, initial, desc, every, clock
        self.start_n, self.started = initial, clock()
        self.last = self.started
        self.postfix: dict = {}

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            logger.info("%s", self.line(now))

    def line(self, now: float) -> str:
        done = self.n - self.start_n
        rate = done / (now - self.started) if now > self.started else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else None
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        return f"{self.desc}: {self.n}/{self.total}{pct}, {rate:.3g} it/s, ETA {duration(eta)}{extra}"

    def close(self) -> None:
        pass


def progress_factory(every: float = 30.0) -> Callable[..., Any]:
    """``progress(total=, initial=, desc=)``: tqdm bars on a terminal, :class:`LogBar` otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return lambda **kw: tqdm(leave=False, dynamic_ncols=True, **kw)
    return lambda **kw: LogBar(every=every, **kw)


class RunClock:
    """Whole-run ETA from the epochs timed in this process.

    Before the first epoch ends, the current epoch is extrapolated from its
    done fraction (``fraction``: training units done / units of the epoch).
    """

    def __init__(self, epochs: int, clock: Callable[[], float] = time.monotonic):
        self.epochs, self.clock = epochs, clock
        self.epoch_times: List[float] = []
        self.epoch_started = clock()

    def start_epoch(self) -> None:
        self.epoch_started = self.clock()

    def end_epoch(self) -> None:
        self.epoch_times.append(self.clock() - self.epoch_started)

    def eta(self, epoch: int, fraction: float) -> Optional[float]:
        """Seconds left in the run while epoch ``epoch`` (0-based) is ``fraction`` done."""
        spent = self.clock() - self.epoch_started
        if self.epoch_times:
            recent = self.epoch_times[-3:]
            per_epoch = sum(recent) / len(recent)
        elif fraction > 0:
            per_epoch = spent / fraction
        else:
            return None
        return max(per_epoch - spent, 0.0) + per_epoch * max(self.epochs - epoch - 1, 0)

    def after_epoch(self, epoch: int) -> Optional[float]:
        """Seconds left once epoch ``epoch`` (0-based) has ended."""
        if not self.epoch_times:
            return None
        recent = self.epoch_times[-3:]
        return sum(recent) / len(recent) * max(self.epochs - epoch - 1, 0)
