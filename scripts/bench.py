#!/usr/bin/env python
"""Throughput harness for the search and retrain steps (see docs/performance.md).

Items, timed on synthetic uint8 images fed through
:class:`enas.data.augment.DeviceLoader` (so the on-device augmentation is included):

* ``a`` / ``enas``: the ENAS shared-weight step as the search loop runs it
  (controller sample, decode, supernet forward/backward/SGD; Pham et al. 2018,
  Sec. 2.2), split into data / sample / child (``ChildTrainer.train_step``) / other;
* ``b`` / ``reward``: one reward evaluation (``ChildTrainer.accuracy`` on one
  validation batch of a sampled architecture);
* ``c`` / ``darts``: one first-order DARTS unit (arch step + weight step; Liu et
  al. 2019, Sec. 2.3);
* ``d`` / ``retrain``: one DARTS_V2 retrain step (aux 0.4, drop path 0.2, cutout);
* ``e`` / ``controller``: one controller sample, one decode and one REINFORCE
  update with a cheap synthetic reward (the controller's own cost only);
* ``f`` / ``ops`` (not run by default): forward+backward of single ops at the
  ENAS search shapes in NCHW and in channels-last, whatever ``--channels-last`` says.

Prints one JSON object to stdout and a short table to stderr. Each timing is
the median (with p10/p90, min, max) of ``--repeats`` timed units after
``--warmup`` untimed ones. The units themselves are built in ``bench_harness.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from enas.errors import UserError  # noqa: E402
from enas.runtime import resolve_device, retain_freed_memory  # noqa: E402
from enas.native import load_native_kernels  # noqa: E402
from shared_model.kernels import reference_kernels  # noqa: E402
from shared_model.native_bn import native_kernels  # noqa: E402
from bench_common import Contention, forever  # noqa: E402,F401 (forever: used as bench.forever)
from bench_harness import CIFAR_TRAIN, CTRL_SAMPLES, CTRL_UPDATES, Bench, Size  # noqa: E402,F401


#: ENAS micro search, DARTS search and DARTS evaluation sizes (REFERENCE Sec. 3-4). ``peers``: the
#: sizes at which issue 16 timed quark0/darts (C 8, 5 cells, batch 32) and MengTianjian/enas-pytorch
#: (C 8, 6 + 2 cells, batch 32) on CIFAR-10; its retrain is the DARTS_V2 ``train.py`` default.
CONFIGS: Dict[str, Dict[str, Size]] = {
    "paper": {"enas": Size(20, 8, 160, 32), "darts": Size(16, 8, 64, 32), "retrain": Size(36, 20, 96, 32)},
    "peers": {"enas": Size(8, 8, 32, 32), "darts": Size(8, 5, 32, 32), "retrain": Size(36, 20, 96, 32)},
    "small": {k: Size(8, 5, 32, 16) for k in ("enas", "darts", "retrain")},
    "tiny": {k: Size(4, 3, 4, 8) for k in ("enas", "darts", "retrain")},
}
ITEMS = {"a": "enas", "b": "reward", "c": "darts", "d": "retrain", "e": "controller", "f": "ops", "g": "darts2"}


def estimate(res: Dict[str, Any], batch: int) -> Dict[str, float]:
    """Seconds per CIFAR-10 micro-search epoch: 45k training images, then 30 updates x 10 rewards."""
    steps = CIFAR_TRAIN // batch
    train_s = steps * res["enas_step"]["step_ms"]["median"] / 1e3
    ctrl_s = CTRL_UPDATES * (res["controller"]["update_ms"]["median"]
                             + CTRL_SAMPLES * res["reward_eval"]["reward_ms"]["median"]) / 1e3
    return {"train_steps": steps, "train_s": train_s, "controller_s": ctrl_s, "epoch_s": train_s + ctrl_s,
            "search_150_epochs_h": 150 * (train_s + ctrl_s) / 3600}


def run_config(bench: Bench, name: str, items: List[str]) -> Dict[str, Any]:
    sizes, out = CONFIGS[name], {"sizes": {k: asdict(v) for k, v in CONFIGS[name].items()}}
    if {"a", "b", "e"} & set(items):
        out.update(bench.enas(sizes["enas"], items))
    if "c" in items:
        out["darts_step"] = bench.darts(sizes["darts"])
    if "g" in items:
        out["darts2_step"] = bench.darts(sizes["darts"], order=2)
    if "d" in items:
        out["retrain_step"] = bench.retrain(sizes["retrain"])
    if "f" in items:
        out["ops"] = bench.ops(sizes["enas"])
    if {"enas_step", "reward_eval", "controller"} <= out.keys():
        out["epoch_estimate"] = estimate(out, sizes["enas"].batch)
    return out


def meta(args: argparse.Namespace, device: torch.device, bench: Bench) -> Dict[str, Any]:
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
            "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "channels_last": bench.cl, "amp": args.amp, "clock": args.clock,
            "amp_active": device.type == "cuda" and args.amp != "off", "off_path": args.off_path,
            "kernels": args.kernels, "native": native_kernels() is not None, "malloc": args.malloc,
            "compile": args.compile, "cuda_graphs": args.cuda_graphs,
            "warmup": args.warmup, "repeats": args.repeats, "load_avg": os.getloadavg()}


def table(report: Dict[str, Any]) -> str:
    lines = [f"{'config':7} {'item':13} {'images/s':>9} {'median ms':>10} {'p10-p90 ms':>17}"]
    for cfg, res in report["results"].items():
        for key in ("enas_step", "reward_eval", "darts_step", "darts2_step", "retrain_step"):
            r = res.get(key)
            if r and "skipped" in r:
                lines.append(f"{cfg:7} {key:13} skipped: {r['skipped']}")
            elif r:
                s = r["step_ms"]
                lines.append(f"{cfg:7} {key:13} {r['images_per_s']:9.1f} {s['median']:10.1f} "
                             f"{s['p10']:8.1f}-{s['p90']:<8.1f}")
        if "enas_step" in res:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in res["enas_step"]["parts_ms"].items())
            lines.append(f"{cfg:7} outside train_step: {100 * res['enas_step']['overhead_share']:.1f}% "
                         f"of the ENAS step (ms: {parts})")
        if "controller" in res:
            c = res["controller"]
            lines.append(f"{cfg:7} controller: sample {c['sample_ms']['median']:.2f} ms, decode "
                         f"{c['decode_ms']['median']:.3f} ms, update {c['update_ms']['median']:.1f} ms; "
                         f"batched {c['sample_batch']['per_arch_ms']:.3f} ms/arch (n {c['sample_batch']['n']})")
        for key, r in res.get("ops", {}).items():
            lines.append(f"{cfg:7} op {key:22} NCHW {r['nchw_ms']['median']:8.1f} ms  NHWC "
                         f"{r['nhwc_ms']['median']:8.1f} ms  x{r['speedup_nhwc']:.2f}")
        if "epoch_estimate" in res:
            e = res["epoch_estimate"]
            lines.append(f"{cfg:7} CIFAR-10 epoch ~{e['epoch_s']:.0f} s (train {e['train_s']:.0f} s + controller "
                         f"{e['controller_s']:.0f} s); 150 epochs ~{e['search_150_epochs_h']:.2f} h")
    share = report["meta"].get("other_cpu_share")
    if share is not None:
        lines.append(f"other processes used {100 * share:.0f}% of the machine's CPU during the run")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="both", choices=["paper", "peers", "small", "both", "tiny"],
                   help="sizes (docs/performance.md); both = paper then small")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--repeats", type=int, default=None, help="timed units per item (default 3; tiny: 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed units first (default 1; tiny: 0)")
    p.add_argument("--only", default="a,b,c,d,e",
                   help="comma list: a enas, b reward, c darts (1st order), g darts2 (2nd order), d retrain, "
                        "e controller, f ops (letters or names)")
    p.add_argument("--channels-last", default="auto", choices=["on", "off", "auto"])
    p.add_argument("--amp", default="auto", choices=["auto", "off"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--off-path", default="on", choices=["on", "off"],
                   help="on: weight decay and momentum for off-path weights too (ENAS default); "
                        "off: the optimizer skips them (optim.update_off_path=false)")
    p.add_argument("--compile", default="off", choices=["on", "off"],
                   help="run.compile: torch.compile every op-bank module of the supernets per input shape")
    p.add_argument("--cuda-graphs", default="off", choices=["on", "off"],
                   help="run.cuda_graphs: CUDA graphs of every op-bank module per input shape (CUDA only)")
    p.add_argument("--malloc", default="retain", choices=["retain", "default"],
                   help="retain: keep freed memory in the process like `enas search/train` do "
                        "(enas.runtime.retain_freed_memory); default: glibc's own settings")
    p.add_argument("--native", default="on", choices=["on", "off"],
                   help="on: the compiled CPU kernels as `enas search/train` load them (enas.native); "
                        "off: PyTorch's kernels only")
    p.add_argument("--flat", default="on", choices=["on", "off"],
                   help="on: SGD over flat parameter, gradient and momentum buffers (enas.flat_sgd, as "
                        "`enas search/train`); off: one fused step over the parameter tensors")
    p.add_argument("--kernels", default="fast", choices=["fast", "reference"],
                   help="reference: every conv through F.conv2d (shared_model.kernels.reference_kernels)")
    p.add_argument("--clock", default="wall", choices=["wall", "process"],
                   help="process: this process's CPU time (CPU only; for A/B runs on a busy machine)")
    args = p.parse_args(argv)
    tiny = args.config == "tiny"
    args.repeats = args.repeats if args.repeats is not None else (1 if tiny else 3)
    args.warmup = args.warmup if args.warmup is not None else (0 if tiny else 1)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if args.clock == "process" and args.device.startswith("cuda"):
        p.error("--clock process measures CPU time; use the wall clock on CUDA")
    if args.compile == "on" and args.cuda_graphs == "on":
        p.error("--compile and --cuda-graphs exclude each other (as run.compile and run.cuda_graphs)")
    names = {v: k for k, v in ITEMS.items()}
    try:
        args.items = sorted({k if k in ITEMS else names[k] for k in args.only.split(",") if k})
    except KeyError as exc:
        p.error(f"unknown --only item {exc}; use {', '.join(f'{k}/{v}' for k, v in ITEMS.items())}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc == "retain":
        retain_freed_memory()  # what `enas search` and `enas train` do (enas.runtime.configure_threads)
    if args.native == "on":
        load_native_kernels()
    try:
        device = resolve_device(args.device)
        if args.cuda_graphs == "on" and device.type != "cuda":
            raise UserError(f"--cuda-graphs needs a CUDA device, not {device.type}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    bench, contention = Bench(args, device), Contention()
    report = {"meta": meta(args, device, bench), "results": {}}
    with reference_kernels() if args.kernels == "reference" else contextlib.nullcontext():
        for name in (["paper", "small"] if args.config == "both" else [args.config]):
            report["results"][name] = run_config(bench, name, args.items)
            print(f"[bench] {name} done", file=sys.stderr, flush=True)
    report["meta"]["load_avg_end"] = os.getloadavg()
    report["meta"]["other_cpu_share"] = contention.share()
    print(table(report), file=sys.stderr)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
