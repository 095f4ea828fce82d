"""The timed units of ``scripts/bench.py``: the ENAS step and reward, the DARTS units, the DARTS_V2
retrain step, the controller and single ops, built as ``enas search`` / ``enas train`` build them.

``bench.py`` holds the sizes (``CONFIGS``), the command line and the report; ``ab_step.py`` and
``profile_step.py`` build their units from :class:`Bench` too.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

import torch

from controller import Controller, Reinforce
from enas.data.augment import DeviceLoader
from enas.runtime import accelerate_supernet, sgd, use_channels_last
from enas.search.sampling import SamplingStrategy
from enas.search.trainer import ChildTrainer
from shared_model.child import ChildNetwork
from shared_model.ops import make_op
from shared_model.spaces import enas_op_bias, make_space
from shared_model.supernet import Supernet
from shared_model.zoo import get_genotype
from bench_common import NUM_CLASSES, Clock, Split, forever, peak_memory, reset_peak_memory, spread, synthetic


@dataclass(frozen=True)
class Size:
    channels: int
    layers: int
    batch: int
    image: int


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
