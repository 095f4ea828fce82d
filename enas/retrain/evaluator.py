"""Test accuracy, size and speed of a retrained checkpoint (``enas evaluate``, ``enas.evaluate``)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Optional

from enas.errors import UserError


def _test_loader(cfg, info: Dict[str, Any], data_dir, batch_size, device):
    from enas.data.augment import DeviceLoader
    from enas.data.datasets import load_dataset
    from enas.data.prep import match_classes
    from enas.retrain.trained import input_shape

    channels, height, width = input_shape(info)
    where = f"the test data in {data_dir or cfg.data.data_dir or info['dataset']}"
    # Decoded as in training (resize, channels), at the network's input size.
    # A --data-dir of bare class folders is scored whole (test_fraction 1); the run's own folder
    # keeps its train/test split, so training images are never scored.
    test = load_dataset(info["dataset"], "test", data_dir or cfg.data.data_dir, [height, width],
                        resize=cfg.data.resize, channels=cfg.data.channels, test_fraction=1.0 if data_dir else 0.2)
    if test.channels != channels:
        raise UserError(f"{where} has {test.channels}-channel images, the checkpoint was trained on "
                        f"{channels}-channel ones; check --data-dir")
    # By name, not by count: a renamed class folder must not silently score another class.
    test = match_classes(test, info.get("classes") or [], where)
    # Normalise exactly as in training (the checkpoint's statistics, e.g. for image folders).
    test = replace(test, mean=tuple(info["mean"]), std=tuple(info["std"]))
    return DeviceLoader(test, batch_size or cfg.data.eval_batch_size or cfg.data.batch_size, device, train=False)


def evaluate_checkpoint(path: str, device_name: str, data_dir, batch_size, latency_batch: int,
                        repeats: int, lut: Optional[str] = None, threads: Optional[int] = None) -> Dict[str, Any]:
    """Everything ``enas evaluate`` reports, as a JSON-ready dict (with ``lut``: ``table_latency``,
    the table's prediction next to a measurement, README "Searching for a device")."""
    from enas.retrain.trained import evaluate_model, input_shape, load_train_checkpoint, network_from_checkpoint
    from enas.runtime import resolve_device
    import torch

    from shared_model.profile import count_macs, count_parameters, measure_latency

    if batch_size is not None and batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if latency_batch < 1 or repeats < 1:
        raise UserError("--latency-batch and --repeats must be >= 1")
    if threads is not None and threads < 1:
        raise UserError("--threads must be >= 1")
    state, ckpt = load_train_checkpoint(path)
    model, cfg, genotype, info = network_from_checkpoint(state, inference=True)
    # The run's own thread count by default: a small network timed with more threads than it
    # trained with mostly measures the threads waiting for each other (docs/performance.md).
    if threads or cfg.run.threads:
        torch.set_num_threads(threads or cfg.run.threads)
    device = resolve_device(device_name)
    model.to(device).eval()
    loader = _test_loader(cfg, info, data_dir, batch_size, device)
    test = evaluate_model(model, loader, device, cfg.run.amp)
    shape = input_shape(info)
    latency = {}
    for b in sorted({1, latency_batch}):
        lat = measure_latency(model, shape, device=device, batch_size=b, warmup=min(5, repeats), repeats=repeats)
        lat["images_per_s"] = b * 1000.0 / lat["median_ms"] if lat["median_ms"] > 0 else None
        latency[f"batch_{b}"] = lat
    pos = state.get("position", {})
    table_latency = None
    if lut:
        from enas.cost.report import checkpoint_latency

        table_latency = checkpoint_latency(lut, cfg, genotype, info, model, repeats)
    return {
        "checkpoint": str(ckpt), "epoch": pos.get("epoch"), "epochs": cfg.epochs, "step": pos.get("step"),
        "genotype_source": state.get("genotype_source"), "dataset": info["dataset"], "split": "test",
        "test_images": test["n"], "top1": test["top1"], "top5": test["top5"], "test_loss": test["loss"],
        "params": count_parameters(model), "multiply_adds": count_macs(model, shape), "input_shape": list(shape),
        "device": str(device), "threads": torch.get_num_threads(), "precision": "bf16 autocast" if device.type == "cuda" and cfg.run.amp != "off"
        else "fp32", "latency": latency, "genotype": genotype.to_dict(),
        **({"table_latency": table_latency} if table_latency else {}),
    }
