"""Run-folder outputs: ``metrics.jsonl`` and TensorBoard events under ``tb/``.

``metrics.jsonl`` holds one JSON object per logged event with at least
``step``, ``epoch`` and ``phase``. Its byte length is saved in every
checkpoint; on resume the file is cut back to that length and TensorBoard
purges events past the checkpoint's step, so an interrupted and resumed run
leaves exactly the records of an uninterrupted one. Phases whose units are not
training steps (the ENAS controller updates) log to their own sub-run
``tb/<phase>`` with one step per unit, purged by their own count.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

logger = logging.getLogger(__name__)


class RunLog:
    """Metrics file and TensorBoard writers of one run folder.

    Args:
        run_dir: the run folder.
        resume_offset: byte length of ``metrics.jsonl`` at the checkpoint being
            resumed (None for a fresh run: the file is started empty).
        purge_step: TensorBoard global step from which older events are purged.
        tensorboard: write TensorBoard events (disable for tests or tools).
        purge_steps: per sub-run (``tb/<name>``, e.g. ``controller``, whose steps count
            that phase's units rather than training steps) the step to purge from.
    """

    def __init__(self, run_dir: Path, resume_offset: Optional[int] = None,
                 purge_step: Optional[int] = None, tensorboard: bool = True,
                 purge_steps: Optional[Dict[str, int]] = None):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if resume_offset is None:
            self.metrics_path.write_text("")
        else:
            with open(self.metrics_path, "a+b") as fh:
                fh.truncate(resume_offset)
        self._fh = open(self.metrics_path, "a", encoding="utf-8")
        self.writer = None
        self._sub: Dict[str, Any] = {}
        self._purge_steps = dict(purge_steps or {})
        self._resumed = resume_offset is not None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge_step)

    def _writer(self, sub: Optional[str]):
        """The main writer, or the one of sub-run ``tb/<sub>`` (created on first use)."""
        if self.writer is None or sub is None:
            return self.writer
        if sub not in self._sub:
            from torch.utils.tensorboard import SummaryWriter

            purge = self._purge_steps.get(sub) if self._resumed else None
            self._sub[sub] = SummaryWriter(str(self.run_dir / "tb" / sub), purge_step=purge)
        return self._sub[sub]

    def offset(self) -> int:
        """Current byte length of ``metrics.jsonl`` (flushed)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return self.metrics_path.stat().st_size

    def record(self, step: int, epoch: int, phase: str, values: Dict[str, Any],
               tb_prefix: Optional[str] = None, tb_step: Optional[int] = None,
               tb_run: Optional[str] = None) -> None:
        """Append one metrics line (flushed: ``tail -f`` sees it at once); numeric values also go
        to TensorBoard as ``tb_prefix/key`` at ``tb_step`` (default ``step``), in sub-run ``tb_run``."""
        row = {"step": step, "epoch": epoch, "phase": phase}
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)
            row[key] = value
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        writer = self._writer(tb_run)
        if writer is not None and tb_prefix is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"{tb_prefix}/{key}", value, step if tb_step is None else tb_step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def image(self, tag: str, image_hwc: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def flush(self) -> None:
        self._fh.flush()
        for writer in [self.writer, *self._sub.values()]:
            if writer is not None:
                writer.flush()

    def close(self) -> None:
        self.flush()
        self._fh.close()
        for writer in [self.writer, *self._sub.values()]:
            if writer is not None:
                writer.close()


class NullRunLog:
    """What the processes other than 0 of a torch.distributed run log: nothing (process 0 writes)."""

    writer = None

    def offset(self) -> int:
        return 0

    def record(self, *args: Any, **kwargs: Any) -> None:
        pass

    def scalar(self, *args: Any) -> None:
        pass

    text = image = scalar

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
