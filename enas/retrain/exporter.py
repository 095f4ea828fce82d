"""Export a retrained network (``enas export``, ``enas.export``) as a standalone ONNX or TorchScript file.

The exported model is the eval-mode network (no auxiliary head, no drop path)
mapping normalised images ``(N, C, H, W)`` float32 to logits ``(N, classes)``;
the batch dimension is dynamic. The normalisation statistics, class names and
genotype travel in the file's metadata (ONNX ``metadata_props``, TorchScript
extra file ``enas.json``). Files are written to a temporary name, verified
against PyTorch, then renamed, so a failed export never leaves a bad file.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch
from torch import nn

from enas.errors import UserError

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'enas[export]'"
ONNX_OPSET = 18
MAX_RELATIVE_DIFF = 1e-3
FORMATS = ("onnx", "torchscript")


class LogitsOnly(nn.Module):
    """The child network in eval mode returning logits only (a plain tensor, for export)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]  # (N, classes)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def _compare(reference: torch.Tensor, got: np.ndarray) -> Tuple[float, float]:
    """Max absolute difference and that difference relative to the largest reference logit."""
    diff = float(np.max(np.abs(reference.numpy() - got)))
    return diff, diff / max(float(reference.abs().max()), 1e-6)


def _export_onnx(model: nn.Module, example: torch.Tensor, path: str) -> str:
    """Export with the default (dynamo-based) exporter, falling back to the TorchScript-based one."""
    names = dict(input_names=["images"], output_names=["logits"])
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), path, dynamo=True, opset_version=ONNX_OPSET, verbose=False,
                              external_data=False, dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
        return "dynamo"
    except Exception as exc:  # noqa: BLE001 - any exporter failure: try the other exporter
        logger.warning("dynamo-based ONNX export failed (%s); using the TorchScript-based exporter",
                       _one_line(exc))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), path, dynamo=False, opset_version=17,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, **names)
    return "torchscript-based"


def _write_onnx(model: nn.Module, example: torch.Tensor, tmp: str, meta: Dict[str, Any]) -> Dict[str, Any]:
    try:
        import onnx
    except ImportError:
        raise UserError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from None
    exporter = _export_onnx(model, example, tmp)
    proto = onnx.load(tmp)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, tmp)
    onnx.checker.check_model(tmp)
    info: Dict[str, Any] = {"format": "onnx", "opset": max(o.version for o in proto.opset_import
                                                            if o.domain in ("", "ai.onnx")),
                            "exporter": exporter}
    try:
        import onnxruntime as ort
    except ImportError:
        info["verified"] = f"not verified: onnxruntime is not installed ({INSTALL_HINT})"
        return info
    session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    run: Callable[[torch.Tensor], np.ndarray] = lambda x: session.run(None, {"images": x.numpy()})[0]
    info.update(_verify(model, example, run, f"onnxruntime {ort.__version__}"))
    return info


def _write_torchscript(model: nn.Module, example: torch.Tensor, tmp: str, meta: Dict[str, Any]) -> Dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream but still the portable format
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, tmp, _extra_files={"enas.json": json.dumps(meta)})
        loaded = torch.jit.load(tmp, map_location="cpu")
    info: Dict[str, Any] = {"format": "torchscript", "exporter": "torch.jit.trace"}
    info.update(_verify(model, example, lambda x: loaded(x).detach().numpy(), "torch.jit.load"))
    return info


def _verify(model: nn.Module, example: torch.Tensor, run: Callable[[torch.Tensor], np.ndarray],
            runtime: str) -> Dict[str, Any]:
    """Compare the exported file with PyTorch at the export batch size and another one."""
    gen = torch.Generator().manual_seed(0)
    worst = (0.0, 0.0)
    batches = sorted({example.shape[0], example.shape[0] + 2})
    for b in batches:
        x = torch.randn((b,) + tuple(example.shape[1:]), generator=gen)  # (b, C, H, W)
        with torch.no_grad():
            ref = model(x)
        try:
            got = run(x)
        except Exception as exc:  # noqa: BLE001 - report any runtime failure as a failed check
            raise UserError(f"the exported model fails to run in {runtime} at batch {b}: {_one_line(exc)}") from None
        if got.shape != tuple(ref.shape):
            raise UserError(f"exported model gives shape {got.shape} at batch {b}, PyTorch {tuple(ref.shape)}")
        worst = max(worst, _compare(ref, got), key=lambda t: t[1])
    if not worst[1] <= MAX_RELATIVE_DIFF:
        raise UserError(f"exported model differs from PyTorch in {runtime}: max abs diff {worst[0]:.3g} "
                        f"(relative {worst[1]:.3g} > {MAX_RELATIVE_DIFF}); nothing written")
    return {"verified": runtime, "max_abs_diff": worst[0], "max_rel_diff": worst[1], "verify_batches": batches}


def is_enas_export(path: Path) -> bool:
    """Whether ``path`` is a file ``enas export`` wrote (its ``enas.json`` or ONNX metadata)."""
    try:
        if zipfile.is_zipfile(path):  # TorchScript archives are zip files
            with zipfile.ZipFile(path) as archive:
                return any(n.endswith("extra/enas.json") for n in archive.namelist())
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return any(p.key == "producer" and p.value == "enas" for p in proto.metadata_props)
    except Exception:  # noqa: BLE001 - unreadable, not ONNX, onnx missing: not ours
        return False


def export_checkpoint(checkpoint: str, fmt: str, out: str | None, batch_size: int,
                      force: bool = False) -> Dict[str, Any]:
    """Export a retrain checkpoint; returns what was written and how it was checked.

    An existing ``out`` is replaced only when it is an earlier enas export, or with ``force``.
    """
    from enas.retrain.trained import input_shape, load_train_checkpoint, network_from_checkpoint

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose from {', '.join(FORMATS)}")
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    state, ckpt = load_train_checkpoint(checkpoint)
    net, cfg, genotype, info = network_from_checkpoint(state, inference=True)
    net.drop_path_prob = 0.0
    model = LogitsOnly(net).eval()
    if out is None:
        base = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        out = str(base / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt"))
    path = Path(out)
    shape = input_shape(info)
    meta = {"producer": "enas", "input": f"images float32 (N, {shape[0]}, {shape[1]}, {shape[2]}), "
                                         "normalised: (pixel / 255 - mean) / std per channel",
            "output": f"logits (N, {info['num_classes']})", "mean": info["mean"], "std": info["std"],
            "classes": info["classes"], "dataset": info["dataset"], "genotype": genotype.to_dict(),
            "channels": cfg.model.channels, "layers": cfg.model.layers}
    example = torch.randn((batch_size,) + shape, generator=torch.Generator().manual_seed(1))
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; give a file name")
    replaced = path.exists()
    if replaced and not force and not is_enas_export(path):
        raise UserError(f"{path} exists and is not a file enas exported; use --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A private folder beside the target: exporters may write side files, and the
        # final rename stays on one file system (atomic).
        tmp_dir = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        tmp = os.path.join(tmp_dir, path.name)
        with torch.no_grad():
            writer = _write_onnx if fmt == "onnx" else _write_torchscript
            result = writer(model, example, tmp, meta)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    result.update({"path": str(path), "replaced": replaced, "bytes": path.stat().st_size,
                   "input_shape": ["N", *shape],
                   "num_classes": info["num_classes"], "mean": info["mean"], "std": info["std"]})
    return result
