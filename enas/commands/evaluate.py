"""``enas evaluate``: test accuracy, size and speed of a retrained checkpoint."""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Dict

import click

from enas.errors import UserError


def _test_loader(cfg, info: Dict[str, Any], data_dir, batch_size, device):
    from enas.augment import DeviceLoader
    from enas.data import load_dataset
    from enas.dataprep import match_classes
    from enas.trained import input_shape

    channels, height, width = input_shape(info)
    where = f"the test data in {data_dir or cfg.data.data_dir or info['dataset']}"
    # Decoded as in training (resize, channels), at the network's input size.
    test = load_dataset(info["dataset"], "test", data_dir or cfg.data.data_dir, [height, width],
                        resize=cfg.data.resize, channels=cfg.data.channels)
    if test.channels != channels:
        raise UserError(f"{where} has {test.channels}-channel images, the checkpoint was trained on "
                        f"{channels}-channel ones; check --data-dir")
    # By name, not by count: a renamed class folder must not silently score another class.
    test = match_classes(test, info.get("classes") or [], where)
    # Normalise exactly as in training (the checkpoint's statistics, e.g. for image folders).
    test = replace(test, mean=tuple(info["mean"]), std=tuple(info["std"]))
    return DeviceLoader(test, batch_size or cfg.data.eval_batch_size or cfg.data.batch_size, device, train=False)


def evaluate_checkpoint(path: str, device_name: str, data_dir, batch_size, latency_batch: int,
                        repeats: int) -> Dict[str, Any]:
    """Everything ``enas evaluate`` reports, as a JSON-ready dict."""
    from enas.trained import evaluate_model, input_shape, load_train_checkpoint, network_from_checkpoint
    from enas.runtime import resolve_device
    from shared_model.profile import count_macs, count_parameters, measure_latency

    if batch_size is not None and batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if latency_batch < 1 or repeats < 1:
        raise UserError("--latency-batch and --repeats must be >= 1")
    state, ckpt = load_train_checkpoint(path)
    model, cfg, genotype, info = network_from_checkpoint(state, inference=True)
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
    return {
        "checkpoint": str(ckpt), "epoch": pos.get("epoch"), "epochs": cfg.epochs, "step": pos.get("step"),
        "genotype_source": state.get("genotype_source"), "dataset": info["dataset"], "split": "test",
        "test_images": test["n"], "top1": test["top1"], "top5": test["top5"], "test_loss": test["loss"],
        "params": count_parameters(model), "multiply_adds": count_macs(model, shape), "input_shape": list(shape),
        "device": str(device), "precision": "bf16 autocast" if device.type == "cuda" and cfg.run.amp != "off"
        else "fp32", "latency": latency, "genotype": genotype.to_dict(),
    }


def _print_table(r: Dict[str, Any]) -> None:
    rows = [
        ("checkpoint", f"{r['checkpoint']} (epoch {r['epoch']}/{r['epochs']}, step {r['step']})"),
        ("genotype", str(r["genotype_source"])),
        ("test set", f"{r['dataset']}, {r['test_images']} images ({r['precision']})"),
        ("top-1", f"{100 * r['top1']:.2f} % (error {100 * (1 - r['top1']):.2f} %)"),
    ]
    if r["top5"] is not None:
        rows.append(("top-5", f"{100 * r['top5']:.2f} %"))
    c, h, w = r["input_shape"]
    rows += [
        ("test loss", f"{r['test_loss']:.4f}"),
        ("params", f"{r['params']:,} ({r['params'] / 1e6:.3f} M, auxiliary head excluded)"),
        ("multiply-adds", f"{r['multiply_adds']:,} ({r['multiply_adds'] / 1e6:.1f} M) per {c}x{h}x{w} image"),
    ]
    for key, lat in r["latency"].items():
        rows.append((f"latency b={lat['batch_size']}",
                     f"median {lat['median_ms']:.2f} ms (p10 {lat['p10']:.2f}, p90 {lat['p90']:.2f}) on "
                     f"{r['device']}, {lat['images_per_s']:.0f} images/s"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("checkpoint")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
    @click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
    @click.option("--data-dir", default=None, metavar="DIR", help="Folder holding the dataset (default: the run's).")
    @click.option("--batch-size", type=int, default=None, help="Test batch size (default: the run's).")
    @click.option("--latency-batch", type=int, default=64, show_default=True,
                  help="Larger batch for the latency measurement (batch 1 is always measured).")
    @click.option("--repeats", type=int, default=20, show_default=True, help="Timed forward passes per batch size.")
    def evaluate(checkpoint, as_json, device, data_dir, batch_size, latency_batch, repeats):
        """Test a retrained CHECKPOINT (a .pt file or a train run folder).

        Reports top-1/top-5 on the test split of the checkpoint's dataset,
        parameters (auxiliary head excluded), multiply-adds per image and
        forward latency (median, 10th and 90th percentile) on this device.
        """
        result = evaluate_checkpoint(checkpoint, device, data_dir, batch_size, latency_batch, repeats)
        if as_json:
            click.echo(json.dumps(result, indent=1))
        else:
            _print_table(result)
