"""Run folders: creation, refusal to clobber, resume lookup, log file.

A run folder holds ``config.json`` (the resolved config), ``log.txt``,
``metrics.jsonl``, ``tb/`` (TensorBoard) and ``checkpoints/`` (``last.pt``,
``best.pt``), plus per-command outputs (see README "Run folder").
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from enas.errors import UserError

logger = logging.getLogger(__name__)

RUN_MARKERS = ("config.json", "checkpoints", "metrics.jsonl")
#: Written into every run folder enas creates: proof that --force may clean it.
MARKER = ".enas-run"
#: Files a run writes itself (a folder: the files matching its pattern, then the folder if empty).
RUN_FILES = ("config.json", "log.txt", "metrics.jsonl", "genotype.json", "derive.json", "benchmark.json",
             "result.json", "data.json", "results.json", MARKER)
RUN_FOLDERS = {"checkpoints": ("last.pt", "best.pt", ".*.tmp"), "genotypes": ("epoch_*.json", ".*.tmp"),
               "tb": ("events.out.tfevents.*", "*/events.out.tfevents.*")}


def is_run_dir(path: Path) -> bool:
    return any((path / m).exists() for m in RUN_MARKERS)


def written_by_enas(path: Path) -> bool:
    """A folder enas made: its marker, or (runs from before the marker) an enas checkpoint."""
    if (path / MARKER).is_file():
        return True
    ckpt = path / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        return False
    from enas.runs.checkpoint import load_checkpoint

    try:
        load_checkpoint(ckpt)
    except UserError:
        return False
    return True


def _remove_run_outputs(out: Path) -> None:
    """Delete what a run writes and nothing else; report what stays."""
    for name in RUN_FILES:
        target = out / name
        if target.is_file() or target.is_symlink():
            target.unlink()
    for folder, patterns in RUN_FOLDERS.items():
        base = out / folder
        if not base.is_dir():
            continue
        for pattern in patterns:
            for target in base.glob(pattern):
                if target.is_file():
                    target.unlink()
        for sub in sorted((p for p in base.rglob("*") if p.is_dir()), reverse=True):
            _rmdir_if_empty(sub)
        _rmdir_if_empty(base)
    kept = sorted(p.name for p in out.iterdir() if not p.name.startswith(".write-test"))
    if kept:
        logger.info("--force: removed the previous run's files from %s; kept what it did not write: %s",
                    out, ", ".join(kept[:10]) + (" ..." if len(kept) > 10 else ""))


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty: holds files the run did not write


def prepare_run_dir(out: Path, resume: bool, force: bool, kind: str = "run") -> Path:
    """Create or check ``out``; a new run folder gets the marker file ``.enas-run``.

    With ``force``, a folder that holds an enas run loses only the files that run wrote
    (:data:`RUN_FILES`, :data:`RUN_FOLDERS`); anything else (the user's notes, drawings,
    exports) stays. A folder that only looks like a run (e.g. a ``config.json`` of the
    user's) is refused even with ``force``: its files are not enas's to delete.

    Raises:
        UserError: ``out`` holds a run and neither ``resume`` nor ``force`` is
            given, ``force`` is asked for a folder enas did not write, ``resume`` is
            asked for a folder without a checkpoint, or the folder cannot be created or written.
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
        if not written_by_enas(out):
            found = ", ".join(m for m in RUN_MARKERS if (out / m).exists())
            raise UserError(f"{out} holds {found} but no enas run (no {MARKER} marker or enas checkpoint); "
                            "--force only replaces runs enas wrote: choose another --out")
        try:
            _remove_run_outputs(out)
        except OSError as exc:
            raise UserError(f"cannot clean run folder {out}: {exc.strerror or exc}") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
        (out / MARKER).write_text(json.dumps({"kind": kind}) + "\n")
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
