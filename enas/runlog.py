"""Run-folder outputs: ``metrics.jsonl`` and TensorBoard events under ``tb/``.

``metrics.jsonl`` holds one JSON object per logged event with at least
``step``, ``epoch`` and ``phase``. Its byte length is saved in every
checkpoint; on resume the file is cut back to that length and TensorBoard
purges events past the checkpoint's step, so an interrupted and resumed run
leaves exactly the records of an uninterrupted one.
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
    """Metrics file and TensorBoard writer of one run folder.

    Args:
        run_dir: the run folder.
        resume_offset: byte length of ``metrics.jsonl`` at the checkpoint being
            resumed (None for a fresh run: the file is started empty).
        purge_step: TensorBoard global step from which older events are purged.
        tensorboard: write TensorBoard events (disable for tests or tools).
    """

    def __init__(self, run_dir: Path, resume_offset: Optional[int] = None,
                 purge_step: Optional[int] = None, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if resume_offset is None:
            self.metrics_path.write_text("")
        else:
            with open(self.metrics_path, "a+b") as fh:
                fh.truncate(resume_offset)
        self._fh = open(self.metrics_path, "a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge_step)

    def offset(self) -> int:
        """Current byte length of ``metrics.jsonl`` (flushed)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return self.metrics_path.stat().st_size

    def record(self, step: int, epoch: int, phase: str, values: Dict[str, Any],
               tb_prefix: Optional[str] = None) -> None:
        """Append one metrics line; numeric values also go to TensorBoard."""
        row = {"step": step, "epoch": epoch, "phase": phase}
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)
            row[key] = value
        self._fh.write(json.dumps(row) + "\n")
        if self.writer is not None and tb_prefix is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{tb_prefix}/{key}", value, step)

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
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self.flush()
        self._fh.close()
        if self.writer is not None:
            self.writer.close()
