#!/usr/bin/env python
"""Scaling of the search and retrain steps over processes (torch.distributed; docs/performance.md).

For every ``--nproc N`` it starts ``python -m torch.distributed.run --standalone
--nproc-per-node N`` (a rendezvous on localhost) with this script as the worker, and
prints one JSON object: per item and process count the median wall time of one unit at
the same *global* batch, the images per second, the speed-up over the first count and
the share of the CPU other programs used meanwhile. Items (built through the library, on
the built-in digits data resized to the config's image size):

* ``enas``: one unit of the ENAS train phase (each process its own architecture on its
  part of the batch, gradients averaged);
* ``controller``: one controller update (its ``samples_per_update`` rewards split);
* ``darts``: one first-order DARTS unit (architecture step + weight step);
* ``retrain``: one DARTS_V2 retrain step at the config's channels and layers, drop path
  0.2 (DistributedDataParallel).

    python scripts/bench_distributed.py --nproc 1 2 --config small            # CPU (gloo)
    python scripts/bench_distributed.py --nproc 1 2 4 8 --config paper --device cuda   # GPUs (NCCL)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (channels, layers, global batch, image size): bench.py's sizes (ENAS micro search for all items).
CONFIGS = {"paper": (20, 8, 160, 32), "small": (8, 5, 64, 16), "tiny": (4, 3, 8, 8)}
ITEMS = ("enas", "controller", "darts", "retrain")


def _units(strategy: Any, phase: int) -> Iterator[Dict[str, Any]]:
    """The units of one phase, epoch after epoch (digits has few batches per epoch)."""
    epoch = 0
    while True:
        strategy.begin_epoch(epoch)
        yield from strategy.phases(epoch)[phase].run(0)
        epoch += 1


def _time(dist: Any, it: Iterator[Any], warmup: int, units: int, device: Any) -> List[float]:
    import torch

    for _ in range(warmup):
        next(it)
    times = []
    for _ in range(units):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dist.any(False)  # a barrier: every process starts the unit together
        t0 = time.perf_counter()
        next(it)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dist.any(False)
        times.append(time.perf_counter() - t0)
    return times


def worker(args: argparse.Namespace) -> None:
    import torch

    from enas.distributed import session
    from enas.runtime import configure_threads
    from enas.search.build import build_search
    from enas.config.search import build_search_config

    c, layers, batch, image = CONFIGS[args.config]
    common = {"data.dataset": "digits", "data.image_size": image, "data.batch_size": batch, "model.channels": c,
              "model.layers": layers, "run.device": args.device, "epochs": 1000}
    with session() as dist:
        device = dist.configure(args.device, 0)
        configure_threads(args.threads)
        out: Dict[str, Any] = {}
        for item in args.only.split(","):
            torch.manual_seed(0)
            if item in ("enas", "controller"):
                cfg = build_search_config("enas", "quick", None, dict(common, **{
                    "controller.samples_per_update": 10, "controller.updates_per_epoch": 10_000}))
                setup = build_search(cfg, device, dist=dist)
                it = _units(setup.strategy, 0 if item == "enas" else 1)
            elif item == "darts":
                cfg = build_search_config("darts", "quick", None, dict(common, **{"darts.order": 1}))
                it = _units(build_search(cfg, device, dist=dist).strategy, 0)
            else:
                it = _retrain_steps(dist, device, common)
            times = _time(dist, it, args.warmup, args.units, device)
            ms = 1000 * statistics.median(times)
            images = batch * (10 if item == "controller" else 1)  # a reward scores one (global-size) batch
            out[item] = {"unit_ms": round(ms, 2), "min_ms": round(1000 * min(times), 2),
                         "max_ms": round(1000 * max(times), 2), "images_per_s": round(images / ms * 1000, 1)}
        if dist.is_main:
            print("RESULT " + json.dumps({"nproc": dist.world, "threads": torch.get_num_threads(),
                                          "device": str(device), "items": out}), flush=True)


def _retrain_steps(dist: Any, device: Any, common: Dict[str, Any]) -> Iterator[Dict[str, float]]:
    from enas.retrain.setup import build_retrain
    from enas.config.train import build_train_config
    from shared_model.spaces import space_for_arch
    from shared_model.zoo import get_genotype

    geno = get_genotype("DARTS_V2")
    flags = {k: v for k, v in common.items() if k.startswith(("data.", "model.", "run."))}
    cfg = build_train_config(None, flags, preset="quick", arch_space=space_for_arch(geno), arch=geno)
    setup = build_retrain(cfg, geno, device, dist=dist)
    setup.model.drop_path_prob = 0.2  # DARTS train.py's
    epoch = 0
    while True:
        for x, y in setup.train_loader.epoch_batches(epoch):
            yield setup.trainer.train_step(x, y, None)
        epoch += 1


def _busy() -> float:
    """Busy CPU seconds of the whole machine so far (``/proc/stat``; NaN elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def launch(args: argparse.Namespace) -> None:
    runs = []
    env = dict(os.environ, GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
               OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    for n in args.nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
               __file__, "--worker", "--config", args.config,
               "--device", args.device, "--units", str(args.units), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--only", args.only]
        busy, ours, t0 = _busy(), _children_cpu(), time.monotonic()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"error: the {n}-process run failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
        # The share of the machine's CPU that other programs used meanwhile: > 0.1 means the
        # figures are slowed down by them (see docs/performance.md, "A busy machine").
        wall = time.monotonic() - t0
        other = (_busy() - busy - (_children_cpu() - ours)) / (wall * os.cpu_count())
        runs.append(dict(json.loads(lines[0][7:]), wall_s=round(wall, 1), other_cpu_share=round(max(other, 0.0), 3)))
    base = runs[0]["items"]
    for run in runs:
        for item, v in run["items"].items():
            v["speedup"] = round(base[item]["unit_ms"] / v["unit_ms"], 2)
    c, layers, batch, image = CONFIGS[args.config]
    print(json.dumps({"meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                               "cpus": os.cpu_count(), "config": args.config,
                               "sizes": {"channels": c, "layers": layers, "global_batch": batch, "image": image},
                               "units": args.units, "warmup": args.warmup},
                      "runs": runs}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    p.add_argument("--config", choices=sorted(CONFIGS), default="small")
    p.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    p.add_argument("--units", type=int, default=8, help="timed units per item (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="threads per process (CPU)")
    p.add_argument("--only", default=",".join(ITEMS), help="comma-separated items")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    unknown = set(args.only.split(",")) - set(ITEMS)
    if unknown:
        p.error(f"unknown items {sorted(unknown)}; choose from {', '.join(ITEMS)}")
    if args.worker:
        from enas.distributed import exit_worker

        worker(args)
        exit_worker(0)  # as the enas CLI's workers: no interpreter shutdown racing gloo's threads
    else:
        launch(args)


if __name__ == "__main__":
    main()
