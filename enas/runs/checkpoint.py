"""Atomic, versioned checkpoints that never unpickle arbitrary objects.

A checkpoint is a dict of plain data (tensors, numbers, strings, lists, dicts)
written with :func:`torch.save` to a temporary file in the same folder,
flushed and fsynced, then atomically renamed over the target, so a crash or a
full disk leaves the previous checkpoint intact. Loading uses
``torch.load(weights_only=True)``: a payload that needs any other class is
refused without being run.
"""
from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict

import torch

from enas.errors import UserError

logger = logging.getLogger(__name__)

FORMAT = "enas-checkpoint"
_UMASK = os.umask(0)
os.umask(_UMASK)
VERSION = 1


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename).

    Raises:
        UserError: the folder is not writable or the disk is full; the old
            file, if any, is untouched and no temporary file is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        # mkstemp creates 0600; give outputs the usual permissions of new files.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: str | Path, kind: str, payload: Dict[str, Any]) -> None:
    """Save ``payload`` (plain data only) as a checkpoint of ``kind``."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "kind": kind, **payload}, buf)
    atomic_write_bytes(path, buf.getvalue())
    logger.debug("saved %s checkpoint %s", kind, path)


def load_checkpoint(path: str | Path, kind: str | None = None,
                    map_location: str | torch.device = "cpu") -> Dict[str, Any]:
    """Load and check a checkpoint.

    Args:
        path: checkpoint file.
        kind: expected kind (``"search"``, ``"train"``), or None for any.
        map_location: where tensors are loaded.

    Raises:
        UserError: missing, truncated, corrupt, foreign (not written by enas),
            wrong-version or wrong-kind file, or one that carries objects other
            than plain data (never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it contains objects other than plain data (refused, not executed)"
        raise UserError(f"checkpoint {path} is corrupt or not an enas checkpoint: {reason}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not an enas checkpoint")
    if data.get("version") != VERSION:
        raise UserError(f"checkpoint {path} has format version {data.get('version')!r}; "
                        f"this enas reads version {VERSION}")
    if kind is not None and data.get("kind") != kind:
        raise UserError(f"checkpoint {path} is a {data.get('kind')!r} checkpoint, expected {kind!r}")
    return data


def rng_state(generators: Dict[str, torch.Generator], all_cuda: bool = True) -> Dict[str, torch.Tensor]:
    """Plain-tensor snapshot of the global torch RNG and named generators.

    ``all_cuda``: also every visible GPU's RNG (one process per GPU under torchrun passes
    False: reading another GPU's state would open a CUDA context there).
    """
    state = {"torch": torch.get_rng_state()}
    if all_cuda and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    for name, gen in generators.items():
        state[name] = gen.get_state()
    return state


def set_rng_state(state: Dict[str, Any], generators: Dict[str, torch.Generator], all_cuda: bool = True) -> None:
    torch.set_rng_state(state["torch"])
    if all_cuda and "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in generators.items():
        if name in state:
            gen.set_state(state[name])
