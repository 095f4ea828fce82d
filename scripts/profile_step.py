#!/usr/bin/env python
"""Where a search or retrain step spends its CPU time: ``torch.profiler`` by op type and by cell.

    python scripts/profile_step.py --row enas --config peers --threads 1 --steps 3 [--markdown]

Builds the step exactly as ``scripts/bench.py`` does (same components, sizes and
synthetic data), runs ``--warmup`` untimed steps, then profiles ``--steps``
steps and prints one JSON object (``--markdown``: the tables pasted into
docs/performance.md). Self CPU time of every profiled op is attributed

* to an **op type**: depthwise / pointwise / full conv (told apart by the
  weight shape), batch norm, ReLU, pooling, the optimizer (SGD ``step`` and
  ``zero_grad``), the remaining element-wise and copy ops, forward or backward;
* to a **position** (forward only): the stem, each cell (``cell3:reduce``),
  the auxiliary head, the classifier, the optimizer, or ``other`` (backward,
  loss, data, controller), through ``record_function`` ranges opened by module
  hooks. Backward time has no position: full backward hooks cannot bracket a
  cell whose inputs reach it through ReLUs the network shares between cells.

Rows: ``enas`` (ENAS shared step), ``reward`` (one reward evaluation),
``darts1`` / ``darts2`` (first / second-order DARTS unit), ``retrain``
(DARTS_V2 retrain step). Profiling adds overhead: compare profiles with
profiles, times with ``scripts/bench.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

import bench  # noqa: E402
from enas.runtime import configure_threads  # noqa: E402
from shared_model.kernels import reference_kernels  # noqa: E402
from bench_common import forever  # noqa: E402

ROWS = ("enas", "reward", "darts1", "darts2", "retrain")


class Ranges:
    """``record_function`` ranges around module forwards, opened and closed by hooks."""

    def __init__(self):
        self.open: Dict[Tuple[int, str], Any] = {}
        self.handles: List[Any] = []

    def add(self, module: nn.Module, label: str) -> None:
        def enter(key):
            def hook(*_):
                rf = record_function(key[1])
                rf.__enter__()
                self.open[key] = rf
            return hook

        def leave(key):
            def hook(*_):
                rf = self.open.pop(key, None)
                if rf is not None:
                    rf.__exit__(None, None, None)
            return hook

        fwd = (id(module), f"pos:{label}:fwd")
        self.handles += [module.register_forward_pre_hook(enter(fwd)), module.register_forward_hook(leave(fwd))]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def positions(model: nn.Module) -> List[Tuple[nn.Module, str]]:
    """Stem, cells, aux head and classifier of a supernet or child network."""
    net = getattr(model, "net", model)  # bench's _Fixed adapter
    out = []
    if hasattr(net, "stem"):
        out.append((net.stem, "stem"))
    for i, cell in enumerate(getattr(net, "cells", [])):
        out.append((cell, f"cell{i}:{'reduce' if getattr(cell, 'reduction', False) else 'normal'}"))
    for name in ("aux_head", "auxiliary_head"):
        if getattr(net, name, None) is not None:
            out.append((getattr(net, name), "aux_head"))
    if hasattr(net, "classifier"):
        out.append((net.classifier, "classifier"))
    return out


def conv_kind(shapes: List[List[int]]) -> str:
    """Depthwise / pointwise / full conv from the weight shape among an op's input shapes."""
    for s in shapes:
        if len(s) == 4 and s[0] > 0:
            o, i_per_g, kh, kw = s
            if i_per_g == 1 and o > 1 and kh * kw > 1:
                return f"depthwise conv {kh}x{kw}"
            if kh == kw == 1:
                return "pointwise conv 1x1"
    for s in shapes:
        if len(s) == 4 and s[0] > 0 and s[2] > 1:
            return f"conv {s[2]}x{s[3]}"
    return "conv"


def op_type(name: str, shapes: List[List[int]]) -> str:
    n = name.lower()
    if "conv" in n:
        # convolution_backward's inputs: grad_out, input, weight -> the weight is the 3rd 4-d shape.
        return conv_kind(shapes[2:3] if "backward" in n else shapes[1:2])
    if "batch_norm" in n:
        return "batch norm"
    if "relu" in n or "threshold" in n or "clamp_min" in n:
        return "relu"
    if "pool" in n:
        return "pooling"
    if n.startswith("aten::_foreach") or n in ("aten::addcmul_", "aten::lerp_"):
        return "optimizer (foreach)"
    if n in ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "aten::bmm"):
        return "matmul"
    if n in ("aten::cat", "aten::copy_", "aten::clone", "aten::contiguous", "aten::constant_pad_nd",
             "aten::index", "aten::index_select", "aten::slice", "aten::as_strided"):
        return "copy / cat / index"
    if n in ("aten::zero_", "aten::fill_", "aten::zeros_like", "aten::zeros", "aten::empty", "aten::empty_like",
             "aten::empty_strided", "aten::resize_"):
        return "alloc / fill"
    return "element-wise / other"


def _ancestors(ev) -> Iterator[Any]:
    p = ev.cpu_parent
    while p is not None:
        yield p
        p = p.cpu_parent


def attribute(events, steps: int) -> Dict[str, Any]:
    """Self CPU ms per step by op type (fwd/bwd), by position and by aten op name."""
    by_type: Dict[str, float] = defaultdict(float)
    by_pos: Dict[str, float] = defaultdict(float)
    by_name: Dict[str, List[float]] = defaultdict(lambda: [0.0, 0])
    total = 0.0
    for ev in events:
        if ev.device_type != torch.autograd.DeviceType.CPU:
            continue
        self_ms = ev.self_cpu_time_total / 1e3
        if self_ms <= 0:
            continue
        names = [ev.name] + [a.name for a in _ancestors(ev)]
        backward = any(a.startswith("autograd::engine::evaluate_function") for a in names) or \
            any(a.endswith(":bwd") for a in names)
        pos = next((a[4:] for a in names if a.startswith("pos:")), None)
        phase = next((a for a in names if a.startswith("Optimizer.")), None)
        total += self_ms
        if not ev.name.startswith("aten::") and not ev.name.startswith("mkldnn"):
            by_type["python / dispatcher overhead"] += self_ms
        elif phase is not None:
            by_type["optimizer: " + phase.split("#")[0].split(".")[-1]] += self_ms
        else:
            by_type[f"{op_type(ev.name, ev.input_shapes or [])} ({'bwd' if backward else 'fwd'})"] += self_ms
        by_pos[phase.split("#")[0] if phase else (pos.rsplit(":", 1)[0] + (" bwd" if backward else " fwd")
                                                 if pos else "other")] += self_ms
        entry = by_name[ev.name]
        entry[0] += self_ms
        entry[1] += 1

    def table(d: Dict[str, float]) -> List[Dict[str, Any]]:
        return [{"name": k, "ms_per_step": v / steps, "share": v / total}
                for k, v in sorted(d.items(), key=lambda kv: -kv[1])]

    ops = [{"name": k, "ms_per_step": v[0] / steps, "share": v[0] / total, "calls_per_step": v[1] / steps}
           for k, v in sorted(by_name.items(), key=lambda kv: -kv[1][0])]
    return {"self_cpu_ms_per_step": total / steps, "by_op_type": table(by_type), "by_position": table(by_pos),
            "by_aten_op": ops}


def labelled(label: str, fn):
    """``fn`` inside a ``record_function`` range (controller sampling, data)."""
    def call(*args, **kwargs):
        with record_function(f"pos:{label}:fwd"):
            return fn(*args, **kwargs)
    return call


def build(b: bench.Bench, row: str, size: bench.Size) -> Tuple[Iterator, Optional[nn.Module]]:
    """Units of ``row`` and the network whose positions get ranges."""
    if row in ("enas", "reward"):
        strategy = b.enas_strategy(size)
        # Instance attributes shadow the methods: the ranges name the controller and the data.
        strategy.policy.sample = labelled("controller", strategy.policy.sample)
        for loader in (strategy.train_loader, strategy.valid_loader):
            loader._batch = labelled("data", loader._batch)
        if row == "enas":
            return strategy.phases(0)[0].run(0), strategy.trainer.model
        gen, space, trainer = strategy.generator, strategy.space, strategy.trainer
        with torch.no_grad():
            archs = [strategy.policy.sample(generator=gen).actions for _ in range(64)]
        it = iter(archs * 1000)
        return forever(lambda: trainer.accuracy(*strategy.valid_loader.sample_batch(),
                                                space.decode(next(it)))), trainer.model
    if row in ("darts1", "darts2"):
        strategy = b.darts_strategy(size, order=int(row[-1]))
        return strategy.phases(0)[0].run(0), strategy.model
    units = b.retrain_units(size)
    return units, b.last_model


def markdown(report: Dict[str, Any], top: int) -> str:
    r, m = report["profile"], report["meta"]
    head = (f"`{m['row']}` at {m['size']} ({m['config']}), {m['threads']} thread(s), channels-last "
            f"{m['channels_last']}, {m['steps']} profiled steps: {r['self_cpu_ms_per_step']:.1f} ms self CPU per step")
    out = [head, ""]
    for key, title in (("by_op_type", "op type"), ("by_position", "position"), ("by_aten_op", "aten op")):
        out += [f"| {title} | ms / step | share |", "|---|---:|---:|"]
        out += [f"| {e['name']} | {e['ms_per_step']:.1f} | {100 * e['share']:.1f} % |" for e in r[key][:top]]
        out.append("")
    return "\n".join(out)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--row", default="enas", choices=ROWS)
    p.add_argument("--config", default="peers", choices=sorted(bench.CONFIGS))
    p.add_argument("--steps", type=int, default=3, help="profiled steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--channels-last", default="auto", choices=["on", "off", "auto"])
    p.add_argument("--top", type=int, default=12, help="rows per table (JSON keeps them all)")
    p.add_argument("--no-positions", action="store_true", help="no module hooks (their overhead is small)")
    p.add_argument("--kernels", default="fast", choices=["fast", "reference"],
                   help="reference: profile the plain PyTorch path (shared_model.kernels.reference_kernels)")
    p.add_argument("--markdown", action="store_true", help="print markdown tables instead of JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_threads(args.threads)  # as `enas search` / `enas train`: threads, malloc, compiled kernels
    torch.manual_seed(0)
    bargs = bench.parse_args(["--device", "cpu", "--warmup", str(args.warmup), "--repeats", str(args.steps),
                              "--channels-last", args.channels_last])
    b = bench.Bench(bargs, torch.device("cpu"))
    size = bench.CONFIGS[args.config]["retrain" if args.row == "retrain" else
                                      "darts" if args.row.startswith("darts") else "enas"]
    units, model = build(b, args.row, size)
    ranges = Ranges()
    if model is not None and not args.no_positions:
        for module, label in positions(model):
            ranges.add(module, label)
    with reference_kernels() if args.kernels == "reference" else contextlib.nullcontext():
        for _ in range(args.warmup):
            next(units)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.steps):
                next(units)
    ranges.remove()
    report = {"meta": {"row": args.row, "config": args.config, "size": str(size), "steps": args.steps,
                       "threads": torch.get_num_threads(), "channels_last": b.cl, "kernels": args.kernels,
                       "torch": torch.__version__},
              "profile": attribute(prof.events(), args.steps)}
    if args.markdown:
        print(markdown(report, args.top))
    else:
        for key in ("by_aten_op",):
            report["profile"][key] = report["profile"][key][:60]
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
