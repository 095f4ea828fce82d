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
``--warmup`` untimed ones.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from controller import Controller, Reinforce  # noqa: E402
from enas.data.augment import DeviceLoader  # noqa: E402
from enas.errors import UserError  # noqa: E402
from enas.runtime import (accelerate_supernet, resolve_device, retain_freed_memory, sgd,  # noqa: E402
                          use_channels_last)
from enas.search.sampling import SamplingStrategy  # noqa: E402
from enas.search.trainer import ChildTrainer  # noqa: E402
from shared_model.child import ChildNetwork  # noqa: E402
from enas.native import load_native_kernels  # noqa: E402
from shared_model.kernels import reference_kernels  # noqa: E402
from shared_model.native_bn import native_kernels  # noqa: E402
from shared_model.ops import make_op  # noqa: E402
from shared_model.spaces import enas_op_bias, make_space  # noqa: E402
from shared_model.supernet import Supernet  # noqa: E402
from shared_model.zoo import get_genotype  # noqa: E402
from bench_common import (NUM_CLASSES, Clock, Contention, Split, forever, peak_memory,  # noqa: E402
                          reset_peak_memory, spread, synthetic)


@dataclass(frozen=True)
class Size:
    channels: int
    layers: int
    batch: int
    image: int


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
CIFAR_TRAIN, CTRL_UPDATES, CTRL_SAMPLES = 45_000, 30, 10


class _Fixed(torch.nn.Module):
    """``model(x, arch)`` adapter so that :class:`ChildTrainer` drives a fixed network."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, arch: Any = None):
        return self.net(x)


class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device, self.clock = args, device, Clock(device, args.clock)
        self.cl = use_channels_last(device, args.channels_last, args.amp)
        self.n_units = args.warmup + args.repeats
        self.scoped = False

    def time(self, units: Iterator, repeats: Optional[int] = None, split: Optional[Split] = None):
        """Run ``warmup`` untimed then ``repeats`` timed units.

        Returns seconds per timed unit and, with ``split``, the seconds each wrapped
        component took in each timed unit.
        """
        times, parts = [], defaultdict(list)
        for i in range(self.args.warmup + (repeats or self.args.repeats)):
            if split:
                split.delta()
            t = self.clock.now()
            next(units)
            if i >= self.args.warmup:
                times.append(self.clock.now() - t)
                for k, v in (split.delta() if split else {}).items():
                    parts[k].append(v)
        return (times, parts) if split else times

    def result(self, times: List[float], images: int, **extra) -> Dict[str, Any]:
        ms = spread(times)
        return dict({"images_per_s": images / (ms["median"] / 1e3), "batch": images, "step_ms": ms},
                    **peak_memory(self.device, self.scoped), **extra)

    def reset_peak(self) -> None:
        """Start the peak-memory window of one item (CPU: RSS high-water mark; CUDA: allocator)."""
        self.scoped = reset_peak_memory(self.device)

    def loader(self, size: Size, seed: int, train: bool, cutout: int = 0) -> DeviceLoader:
        data = synthetic(size.batch * self.n_units, size.image, seed)
        return DeviceLoader(data, size.batch, self.device, train=train, pad=max(1, size.image // 8),
                            cutout=cutout, channels_last=self.cl, seed=seed, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(seed))

    def trainer(self, model: torch.nn.Module, lr: float, wd: float, nesterov: bool,
                grad_clip: Optional[float], supernet: bool = True) -> ChildTrainer:
        model = model.to(self.device)
        if self.cl:
            model = model.to(memory_format=torch.channels_last)
        opt = sgd(list(model.parameters()), lr=lr, momentum=0.9, nesterov=nesterov,
                  weight_decay=wd, flat=self.args.flat == "on")  # as enas.search.build and enas.retrain.setup
        if supernet:  # run.compile / run.cuda_graphs act on the op banks, as enas.search.build does
            accelerate_supernet(model, self.device, compile=self.args.compile == "on",
                                cuda_graphs=self.args.cuda_graphs == "on")
        return ChildTrainer(model, opt, self.device, aux_weight=0.4, grad_clip=grad_clip, amp=self.args.amp,
                            update_off_path=self.args.off_path == "on")

    # -- builders (also used by scripts/profile_step.py) ----------------------------
    def enas_strategy(self, size: Size) -> SamplingStrategy:
        """ENAS micro search with the official settings (REFERENCE Sec. 2-3)."""
        space = make_space("micro")
        trainer = self.trainer(Supernet(space.ops, space.num_nodes, size.channels, size.layers, NUM_CLASSES,
                                        image_size=size.image, auxiliary=True, dropout=0.1, loose_inputs=True),
                               lr=0.05, wd=1e-4, nesterov=True, grad_clip=None)  # official: no clipping
        bias, prior = enas_op_bias(space.sample_ops)
        ctrl = Controller(space.decisions, len(space.sample_ops), op_bias_init=bias, normal_op_prior=prior)
        gen = torch.Generator().manual_seed(0)
        train, valid = self.loader(size, 1, True), self.loader(size, 2, False)
        return SamplingStrategy(space, ctrl, trainer, train, valid, gen, Reinforce(ctrl), CTRL_UPDATES)

    def darts_strategy(self, size: Size, order: int):
        """DARTS search with the official settings (REFERENCE Sec. 4)."""
        from enas.search.darts import build_darts_strategy
        from shared_model.arch_params import ArchParameters

        space = make_space("darts")
        trainer = self.trainer(Supernet(space.ops, space.num_nodes, size.channels, size.layers, NUM_CLASSES,
                                        image_size=size.image, cell_output="concat"),
                               lr=0.025, wd=3e-4, nesterov=False, grad_clip=5.0)
        arch = ArchParameters.for_space(space, device=self.device)
        # Architecture batches are augmented like the weight batches (the search build does so).
        train, valid = self.loader(size, 3, True), self.loader(size, 4, True)
        return build_darts_strategy(space, trainer.model, arch, trainer, train, valid, order=order)

    def retrain_trainer(self, size: Size) -> ChildTrainer:
        """DARTS_V2 retraining (DARTS ``train.py``: aux 0.4, drop path 0.2, clip 5)."""
        net = ChildNetwork(get_genotype("DARTS_V2"), size.channels, size.layers, NUM_CLASSES, auxiliary=True,
                           drop_path_prob=0.2, image_size=size.image)
        trainer = self.trainer(_Fixed(net), lr=0.025, wd=3e-4, nesterov=False, grad_clip=5.0, supernet=False)
        self.last_model = trainer.model
        return trainer

    def retrain_units(self, size: Size) -> Iterator:
        """DARTS_V2 retrain steps on cutout-16 batches."""
        trainer = self.retrain_trainer(size)
        batches = self.loader(size, 5, True, cutout=size.image // 2).epoch_batches(0)
        return forever(lambda: trainer.train_step(*next(batches), None))

    # -- a, b, e: ENAS ---------------------------------------------------------------
    def enas(self, size: Size, items: List[str]) -> Dict[str, Any]:
        strategy = self.enas_strategy(size)
        space, trainer, ctrl, reinforce = strategy.space, strategy.trainer, strategy.policy, strategy.reinforce
        gen, valid = strategy.generator, strategy.valid_loader
        out = {}
        if "a" in items:
            out["enas_step"] = self.enas_step(strategy, size)
        if "b" in items:
            self.reset_peak()
            with torch.no_grad():
                archs = iter([ctrl.sample(generator=gen).actions for _ in range(self.n_units)])
            split = Split(self.clock)
            accuracy = split.wrap("accuracy", trainer.accuracy)
            full, parts = self.time(forever(lambda: accuracy(*valid.sample_batch(), space.decode(next(archs)))),
                                    split=split)
            out["reward_eval"] = self.result(parts["accuracy"], size.batch, reward_ms=spread(full))
        if "e" in items:
            n = 10 * self.args.repeats  # cheap: more samples for a stable median
            with torch.no_grad():
                sample = self.time(forever(lambda: ctrl.sample(generator=gen)), n)
                # One batched pass for a whole epoch's architectures (what pre-sampling would cost).
                n_epoch = min(CIFAR_TRAIN // size.batch, 512)
                batched = self.time(forever(lambda: ctrl.sample_batch(n_epoch, generator=gen)), self.args.repeats)
            acts = ctrl.sample(generator=gen).actions
            decode_t = self.time(forever(lambda: space.decode(acts)), n)
            update = self.time(forever(lambda: reinforce.update(lambda a: (sum(a) % 7) / 7.0, generator=gen)),
                               2 * self.args.repeats)
            batched_ms = spread(batched)
            out["controller"] = {"sample_ms": spread(sample), "decode_ms": spread(decode_t),
                                 "sample_batch": {"n": n_epoch, "ms": batched_ms,
                                                  "per_arch_ms": batched_ms["median"] / n_epoch},
                                 "update_ms": spread(update), "samples_per_update": reinforce.samples_per_update}
        return out

    def enas_step(self, strategy: SamplingStrategy, size: Size) -> Dict[str, Any]:
        """The real train phase, its components wrapped (instance attributes shadow the methods)."""
        trainer, ctrl, train = strategy.trainer, strategy.policy, strategy.train_loader
        self.reset_peak()
        split = Split(self.clock)
        trainer.train_step = split.wrap("child", trainer.train_step)
        ctrl.sample = split.wrap("sample", ctrl.sample)
        # The phase draws all its architectures in one batched pass when it starts (untimed
        # warm-up unit): timed here and spread over the phase's steps below.
        ctrl.sample_batch = split.wrap("presample", ctrl.sample_batch)
        train.epoch_batches = split.wrap_iter("data", train.epoch_batches)
        try:
            times, parts = self.time(strategy.phases(0)[0].run(0), split=split)
        finally:
            del trainer.train_step, ctrl.sample, ctrl.sample_batch, train.epoch_batches
        presample_s = split.acc.get("presample", 0.0)
        per_step = presample_s / len(train)
        parts.pop("presample", None)
        other = [t - sum(v[i] for v in parts.values()) for i, t in enumerate(times)]
        parts_ms = dict({k: spread(v)["median"] for k, v in parts.items()}, other=spread(other)["median"],
                        presample_per_step=1e3 * per_step)
        share = 1.0 - sum(parts["child"]) / (sum(times) + per_step * len(times))
        return self.result(times, size.batch, overhead_share=share, parts_ms=parts_ms,
                           presample_ms={"phase": 1e3 * presample_s, "steps": len(train)})

    # -- c, d, f ---------------------------------------------------------------------
    def darts(self, size: Size, order: int = 1) -> Dict[str, Any]:
        strategy = self.darts_strategy(size, order)
        self.reset_peak()
        times = self.time(strategy.phases(0)[0].run(0))
        return self.result(times, size.batch, order=order, note="images/s counts weight-step images; each "
                           "unit also runs an architecture step on as many validation images")

    def retrain(self, size: Size) -> Dict[str, Any]:
        units = self.retrain_units(size)
        self.reset_peak()
        times = self.time(units)
        return self.result(times, size.batch)

    def ops(self, size: Size) -> Dict[str, Any]:
        """Op-level layout comparison at the three stage shapes of the ENAS search network."""
        out = {}
        for stage in range(3):
            c, h = size.channels * 2 ** stage, max(1, size.image // 2 ** stage)
            for name in ("dw_conv_5x5", "sep_conv_3x3", "sep_conv_5x5"):
                ms = {}
                for layout, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
                    op = (torch.nn.Conv2d(c, c, 5, padding=2, groups=c, bias=False) if name.startswith("dw")
                          else make_op(name, c, 1, affine=False)).to(self.device, memory_format=fmt)
                    x = torch.randn(size.batch, c, h, h, device=self.device).contiguous(memory_format=fmt)
                    x.requires_grad_(True)
                    ms[layout] = spread(self.time(forever(lambda: op(x).sum().backward())))
                out[f"{name}@C{c}x{h}"] = {"nchw_ms": ms["nchw"], "nhwc_ms": ms["nhwc"],
                                           "speedup_nhwc": ms["nchw"]["median"] / ms["nhwc"]["median"]}
        return out


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
