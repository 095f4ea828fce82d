#!/usr/bin/env python
"""Paired A/B timing of the fast kernels against the plain PyTorch path, in one process.

    python scripts/ab_step.py --rows enas,darts1 --config peers --rounds 8 --threads 1
    python scripts/ab_step.py --rows enas,retrain --threads 2 --clock wall --against no-native

On a shared machine the time another process takes moves CPU-time figures by
tens of percent between runs (docs/performance.md). Here every round takes one
unit's inputs (batch, sampled architecture) and runs that unit twice, once with
:mod:`shared_model.kernels`' fast paths and once inside ``reference_kernels()``,
in alternating order, so both see the same contention and the same
architecture. Prints JSON: per row the median time of each path and the median
of the per-round ratios ``reference / fast`` (> 1: the fast path wins).
Each run updates the weights; that does not change what a step costs.

``--against`` picks what the "reference" side switches off (docs/performance.md,
"Two threads: a second pass"): ``reference`` every fast path; ``no-native`` every
compiled kernel (:mod:`enas.native`: the batch norm with its fused ReLU and drop path,
the depthwise weight gradient; PyTorch's paths instead); ``unfolded-drop-path`` the
retrain cells' drop-path factors inside the conv ops' final batch norm (a product after
the op again); ``onednn-dw-wgrad`` the compiled depthwise weight gradient of 5x5 and
dilated kernels (oneDNN's, or the column blocks, again); ``serial-bn`` the folded batch
norm (ATen on one thread instead; with ``--native off``, since the compiled kernels
replace both); ``plain-wide-wgrad`` the 5x5
depthwise weight gradient in column blocks; ``flipped-everywhere`` the size rule
of the flipped-kernel depthwise path (taken at every size again);
``darts-unfrozen`` the frozen weights of DARTS's architecture-only passes;
``unscaled-mixing`` DARTS's mixing weights applied as the conv ops' final BN
weight (``w * op(x)`` as its own pass again); ``strided-reduce`` FactorizedReduce's
pixel grids as strided slices again (``kernels.even_odd_pixels``); ``per-tensor-sgd`` the flat
SGD buffers (:mod:`enas.flat_sgd`: zeroing, gradient norm, step and DARTS's virtual step and
finite differences per tensor again). Both sides
load the compiled kernels as ``enas search`` / ``enas train`` do, unless ``--native off``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, ContextManager, Dict, Iterator, List
from unittest.mock import patch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import bench  # noqa: E402
from enas.flat_sgd import FlatSGD  # noqa: E402
from enas.runtime import configure_threads  # noqa: E402
import enas.search.darts as darts_search  # noqa: E402
import shared_model.child as child  # noqa: E402
import shared_model.batch_norm as batch_norm  # noqa: E402
import shared_model.kernels as kernels  # noqa: E402
import shared_model.native_bn as native_bn  # noqa: E402
import shared_model.nb201 as nb201  # noqa: E402
import shared_model.ops as ops  # noqa: E402
import shared_model.supernet as supernet  # noqa: E402
from shared_model.kernels import reference_kernels  # noqa: E402

ROWS = ("enas", "reward", "darts1", "darts2", "retrain")


@contextlib.contextmanager
def _all(*managers: ContextManager) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for m in managers:
            stack.enter_context(m)
        yield


def _sliced(x: torch.Tensor):
    """FactorizedReduce's two pixel grids as strided slices (``kernels.even_odd_pixels``' plain path)."""
    with reference_kernels():
        return kernels.even_odd_pixels(x)


AGAINST: Dict[str, Callable[[], ContextManager[None]]] = {
    "reference": reference_kernels,
    "serial-bn": lambda: patch.object(batch_norm, "FOLD_MIN_NUMEL", 1 << 62),
    "plain-wide-wgrad": lambda: patch.object(kernels, "_SPLIT_MIN_NUMEL", 1 << 62),
    "flipped-everywhere": lambda: patch.object(kernels, "_FLIPPED_EVERYWHERE", True),
    "darts-unfrozen": lambda: patch.object(darts_search, "weights_frozen", lambda params: contextlib.nullcontext()),
    "unscaled-mixing": lambda: _all(patch.object(supernet, "takes_scale", lambda op: False),
                                    patch.object(nb201, "takes_scale", lambda op: False)),
    "strided-reduce": lambda: patch.object(ops, "even_odd_pixels", _sliced),
    "no-native": lambda: patch.object(native_bn, "_KERNELS", None),
    "unfolded-drop-path": lambda: patch.object(child, "takes_scale", lambda op: False),
    "onednn-dw-wgrad": lambda: patch.object(kernels, "_native", lambda: None),
    "per-tensor-sgd": lambda: _all(patch.object(FlatSGD, "flat_grad", lambda self: None),
                                   patch.object(FlatSGD, "attach_grads", lambda self: False),
                                   patch.object(FlatSGD, "covers", lambda self, params: False)),
}


def unit_factory(b: bench.Bench, row: str, size: bench.Size) -> Callable[[], Callable[[], object]]:
    """``next_inputs()`` -> a closure that runs one unit on those inputs."""
    if row in ("enas", "reward"):
        s = b.enas_strategy(size)
        batches = bench.forever(s.train_loader.sample_batch if row == "enas" else s.valid_loader.sample_batch)

        def make():
            x, y = next(batches)
            with torch.no_grad():
                g = s.space.decode(s.policy.sample(generator=s.generator).actions)
            fn = s.trainer.train_step if row == "enas" else s.trainer.accuracy
            return lambda: fn(x, y, g)
        return make
    if row in ("darts1", "darts2"):
        s = b.darts_strategy(size, order=int(row[-1]))
        train, valid = bench.forever(s.train_loader.sample_batch), bench.forever(s.valid_loader.sample_batch)

        def make():
            (x, y), (xv, yv) = next(train), next(valid)

            def unit():  # DartsStrategy._train's body
                s.arch_step(x, y, xv, yv)
                return s.trainer.train_step(x, y, s.arch.mixed(detach=True))
            return unit
        return make
    trainer = b.retrain_trainer(size)
    loader = b.loader(size, 5, True, cutout=size.image // 2)

    def make_retrain():
        x, y = loader.sample_batch()
        return lambda: trainer.train_step(x, y, None)
    return make_retrain


def run_row(b: bench.Bench, row: str, size: bench.Size, rounds: int, clock: Callable[[], float],
            against: str = "reference") -> Dict:
    make = unit_factory(b, row, size)
    switch_off = AGAINST[against]
    times: Dict[str, List[float]] = {"fast": [], "reference": []}
    make()()  # warm-up, both paths
    with switch_off():
        make()()
    for r in range(rounds):
        unit = make()
        order = ("fast", "reference") if r % 2 == 0 else ("reference", "fast")
        for mode in order:
            with switch_off() if mode == "reference" else contextlib.nullcontext():
                t = clock()
                unit()
                times[mode].append(clock() - t)
    ratios = [r / f for r, f in zip(times["reference"], times["fast"])]
    return {"fast_ms": 1e3 * statistics.median(times["fast"]),
            "reference_ms": 1e3 * statistics.median(times["reference"]),
            "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
            "rounds": rounds, "size": str(size)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="enas,reward,darts1,retrain", help=f"comma list of {', '.join(ROWS)}")
    p.add_argument("--config", default="peers", choices=sorted(bench.CONFIGS))
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", default="process", choices=["process", "wall"])
    p.add_argument("--channels-last", default="auto", choices=["on", "off", "auto"])
    p.add_argument("--against", default="reference", choices=sorted(AGAINST),
                   help="what the reference side switches off (default: every fast path)")
    p.add_argument("--native", default="on", choices=["on", "off"],
                   help="off: both sides without the compiled kernels (enas.native), as --against serial-bn needs")
    args = p.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    bad = [r for r in rows if r not in ROWS]
    if bad or args.rounds < 1:
        p.error(f"unknown row(s) {bad}; use {', '.join(ROWS)}" if bad else "--rounds must be >= 1")
    configure_threads(args.threads)  # as `enas search` / `enas train`: threads, malloc, compiled kernels
    if args.native == "off":
        native_bn.set_native_kernels(None)
    elif args.against == "serial-bn" and native_bn.native_kernels() is not None:
        p.error("--against serial-bn compares ATen's batch-norm paths, which the compiled kernels replace: "
                "add --native off")
    torch.manual_seed(0)
    b = bench.Bench(bench.parse_args(["--device", "cpu", "--channels-last", args.channels_last]),
                    torch.device("cpu"))
    clock = time.process_time if args.clock == "process" else time.perf_counter
    out = {"meta": {"threads": torch.get_num_threads(), "clock": args.clock, "config": args.config,
                    "against": args.against, "native": native_bn.native_kernels() is not None,
                    "channels_last": b.cl, "torch": torch.__version__}, "rows": {}}
    for row in rows:
        size = bench.CONFIGS[args.config]["retrain" if row == "retrain" else
                                          "darts" if row.startswith("darts") else "enas"]
        out["rows"][row] = run_row(b, row, size, args.rounds, clock, args.against)
        r = out["rows"][row]
        print(f"{row:8} fast {r['fast_ms']:9.1f} ms  reference {r['reference_ms']:9.1f} ms  "
              f"x{r['speedup_median']:.2f} ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})",
              file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
