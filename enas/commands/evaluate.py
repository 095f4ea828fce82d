"""``enas evaluate``: test accuracy, size and speed of a retrained checkpoint."""
from __future__ import annotations

import json
from typing import Any, Dict

import click

from enas.commands import options as opt


def _threads(r: Dict[str, Any]) -> str:
    n = r.get("threads")
    return "1 thread" if n == 1 else f"{n} threads"


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
                     f"{r['device']} ({_threads(r)}), {lat['images_per_s']:.0f} images/s"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    if r.get("table_latency"):
        from enas.cost.report import format_latency

        for line in format_latency(r["table_latency"]):
            click.echo(line)


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("checkpoint")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
    @opt.device("auto")
    @opt.data_dir("Folder holding the dataset (default: the run's); its class names must be the run's.")
    @opt.option("--batch-size", type=int, default=None, help="Test batch size (default: the run's).")
    @click.option("--latency-batch", type=int, default=64, show_default=True,
                  help="Larger batch for the latency measurement (batch 1 is always measured).")
    @click.option("--repeats", type=int, default=20, show_default=True, help="Timed forward passes per batch size.")
    @opt.option("--lut", default=None,
                help="Latency table (`enas latency-table`) of this network: its predicted latency next to "
                     "one measured at the table's batch, device, threads, runtime and clock.")
    @opt.option("--threads", type=int, default=None,
                help="CPU threads (default: the run's run.threads, else all cores).")
    def evaluate(checkpoint, as_json, device, data_dir, batch_size, latency_batch, repeats, lut, threads):
        """Test a retrained CHECKPOINT (a .pt file or a train run folder).

        Reports top-1/top-5 on the test split of the checkpoint's dataset,
        parameters (auxiliary head excluded), multiply-adds per image and
        forward latency (median, 10th and 90th percentile) on this device.
        """
        import enas

        result = enas.evaluate(checkpoint, device=device, data_dir=data_dir, batch_size=batch_size,
                               latency_batch=latency_batch, repeats=repeats, lut=lut, threads=threads)
        if as_json:
            click.echo(json.dumps(result, indent=1))
        else:
            _print_table(result)
