#!/usr/bin/env python
"""Validate the latency predictor: table prediction vs measured end-to-end latency of random networks.

    python scripts/bench_latency.py                                  # micro, C 16, 8 cells, 32 px, batch 1
    python scripts/bench_latency.py --space nb201 --channels 16 --layers 5 --clock cpu
    python scripts/bench_latency.py --table lut.json --archs 20      # validate an existing table

Measures a latency table (``enas latency-table`` with the same options) unless ``--table`` is
given, draws ``--archs`` random architectures of the space (seed ``--seed``, distinct from the
table's calibration networks), predicts each network's latency from the table (sum of its blocks
plus the calibrated overhead) and measures it end to end (interleaved rounds, median of
``--repeats`` runs), then prints one JSON object: the Pearson and Spearman correlation, Kendall's
tau and the mean absolute percentage error (MAPE) of prediction vs measurement, the same without
the overhead, the correlation of multiply-adds with the measured latency (for comparison), every
network's figures, the machine, the load average before and after, and the settings.

On a shared machine other processes inflate wall-clock times: use one thread, many repeats and
``--clock cpu`` (the measuring thread's CPU time), and read the load average in the output.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from enas.cost.lut import read_table  # noqa: E402
from enas.cost.measure import cpu_name, load_average, measure_networks, measure_table  # noqa: E402
from enas.cost.models import cost_spec  # noqa: E402
from shared_model.cost_blocks import block_macs, total  # noqa: E402
from shared_model.spaces import get_space, list_spaces  # noqa: E402


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    return ranks


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    return float(s / len(pairs))


def agreement(predicted: np.ndarray, measured: np.ndarray) -> dict:
    """Correlations and errors of a prediction against the measurement."""
    return {"pearson": float(np.corrcoef(predicted, measured)[0, 1]),
            "spearman": float(np.corrcoef(_ranks(predicted), _ranks(measured))[0, 1]),
            "kendall_tau": _kendall(predicted, measured),
            "mape_pct": float(100 * np.mean(np.abs(predicted - measured) / measured)),
            "mean_error_pct": float(100 * np.mean((predicted - measured) / measured))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", choices=list_spaces(), default="micro")
    parser.add_argument("--num-nodes", type=int, default=None)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--repeats", type=int, default=100, help="timed runs per block and per network")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calibrate", type=int, default=5)
    parser.add_argument("--archs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="random architectures (the table calibrates with 0)")
    parser.add_argument("--table", default=None, help="an existing table; its network and settings are used")
    args = parser.parse_args()

    device = torch.device(args.device)
    load_before, started = load_average(), time.time()
    space = get_space(args.space, num_nodes=args.num_nodes)
    if args.table:
        space = space.for_layers(read_table(args.table).network.layers)
    else:
        space = space.for_layers(args.layers)
    if args.table:
        table = read_table(args.table)
        spec = table.network
    else:
        spec = cost_spec(args.channels, args.layers, args.classes, args.in_channels, args.image_size)
        table = measure_table(space, spec, args.batch, device, args.runtime, args.threads, warmup=10,
                              repeats=args.repeats, rounds=args.rounds, calibrate=args.calibrate, clock=args.clock)
    gen = torch.Generator().manual_seed(args.seed)
    archs = [space.decode(space.random_actions(gen)) for _ in range(args.archs)]
    predictions = [table.predict(space.cost_blocks(a, spec)) for a in archs]
    measured = measure_networks(space, archs, spec, table.batch_size, device, table.runtime,
                                int(table.device.get("threads") or 0) or None, 10, args.repeats, args.rounds,
                                args.seed, table.clock)
    pred = np.array([p["total_ms"] for p in predictions])
    raw = np.array([p["total_ms"] - p["overhead_ms"] for p in predictions])
    meas = np.array([m["median"] for m in measured])
    macs = np.array([total(space.cost_blocks(a, spec), block_macs) for a in archs], dtype=float)
    result = {
        "bench": "latency predictor", "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": cpu_name(), "cores": __import__("os").cpu_count(), "device": str(device),
                    "torch": torch.__version__, "load_average_before": load_before,
                    "load_average_after": load_average()},
        "settings": {"space": space.name, "network": spec.to_dict(), "batch": table.batch_size,
                     "threads": table.device.get("threads"), "runtime": table.runtime, "clock": table.clock,
                     "repeats": args.repeats, "rounds": args.rounds, "archs": args.archs, "seed": args.seed,
                     "table": args.table or "measured now"},
        "table": {"entries": len(table.entries), "ops": sum(e["op"] for e in table.entries.values()),
                  "overhead_ms": table.overhead.get("median"),
                  "seconds": table.meta.get("measurement", {}).get("seconds")},
        "predicted_vs_measured": agreement(pred, meas),
        "without_overhead": agreement(raw, meas),
        "macs_vs_measured": {k: v for k, v in agreement(macs, meas).items() if not k.endswith("pct")},
        "networks": [{"predicted_ms": round(float(p), 4), "measured_ms": round(float(m), 4),
                      "measured_p10_ms": round(r["p10"], 4), "measured_p90_ms": round(r["p90"], 4),
                      "macs": int(c)} for p, m, r, c in zip(pred, meas, measured, macs)],
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
