"""Run folders: creation, refusal to clobber, resume lookup, log file.

A run folder holds ``config.json`` (the resolved config), ``log.txt``,
``metrics.jsonl``, ``tb/`` (TensorBoard) and ``checkpoints/`` (``last.pt``,
``best.pt``), plus per-command outputs (see README "Run folder").
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from enas.errors import UserError

RUN_MARKERS = ("config.json", "checkpoints", "metrics.jsonl")
RUN_FILES = ("config.json", "log.txt", "metrics.jsonl", "tb", "checkpoints", "genotypes",
             "genotype.json", "derive.json", "benchmark.json", "result.json", "cells", "model.onnx",
             "model.torchscript.pt")


def is_run_dir(path: Path) -> bool:
    return any((path / m).exists() for m in RUN_MARKERS)


def prepare_run_dir(out: Path, resume: bool, force: bool) -> Path:
    """Create or check ``out``.

    Raises:
        UserError: ``out`` holds a run and neither ``resume`` nor ``force`` is
            given, ``resume`` is asked for a folder without a checkpoint, or the
            folder cannot be created or written.
    """
    out = Path(out)
    if resume and force:
        raise UserError("--resume and --force exclude each other")
    if resume:
        if not (out / "checkpoints" / "last.pt").is_file():
            raise UserError(f"nothing to resume in {out}: no checkpoints/last.pt")
        remove_stale_temp_files(out)
        return out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.exists() and is_run_dir(out):
        if not force:
            raise UserError(f"{out} already holds a run; use --resume to continue it or --force to replace it")
        for name in RUN_FILES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to run folder {out}: {exc.strerror or exc}") from None
    return out


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete temporary files left by a process killed in the middle of an atomic write."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "genotypes"):
        for tmp in folder.glob(".*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass


def attach_log_file(run_dir: Path) -> logging.Handler:
    """Send all ``enas`` log records to ``run_dir/log.txt`` (appending on resume)."""
    handler = logging.FileHandler(run_dir / "log.txt", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler
