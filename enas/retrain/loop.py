"""Run a retrain in its run folder and test it (DARTS Sec. 3.2; ENAS Sec. 3.2 final training).

The network is tested on the test split every ``run.test_every`` epochs and
always after the last one. As in the DARTS protocol the reported number is the
*last* epoch's test accuracy; ``best.pt`` (highest test accuracy) is kept as a
file only, because choosing an epoch on the test set is not a valid result.

A run is resumable like a search: checkpoints every N steps / minutes and at
every epoch end hold the weights, optimizer, RNG generators, the position
``(epoch, batch, step)`` and the byte length of ``metrics.jsonl``. They also
hold the genotype, the full config and the data shape, so ``enas evaluate``
and ``enas export`` rebuild the network from the checkpoint alone. Under
torch.distributed the test split is shared out and its sums gathered, and
process 0 alone writes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from enas.config.lib import to_dict
from enas.config.train import TrainConfig
from enas.distributed import Dist
from enas.retrain.schedules import batch_scaled, epoch_lr
from enas.retrain.setup import RetrainSetup, build_retrain, load_retrain_data
from enas.retrain.trained import KIND, evaluate_model, input_shape, load_train_checkpoint
from enas.runs.checkpoint import atomic_write_text, save_checkpoint
from enas.runs.progress import RunClock, duration
from enas.runs.runlog import NullRunLog, RunLog
from shared_model.profile import count_macs, count_parameters

logger = logging.getLogger(__name__)

NOTE = ("single training run (seed {seed}); test accuracy varies by a few tenths of a percent "
        "between seeds: report the mean and standard deviation over several seeds (--seed)")


@dataclass
class Position:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    step: int = 0  # global optimizer steps (skipped ones included)


class Retrainer:
    """Runs a configured retrain in a run folder; see the module docstring.

    Args:
        cfg: the resolved config (saved in every checkpoint).
        genotype: the architecture.
        source: where the genotype came from (``zoo:NAME`` or a path).
        setup: components from :func:`build_retrain`.
        run_dir: the run folder.
        progress: factory ``progress(total, initial, desc)`` returning a tqdm-like bar, or None.
        stop_after: testing hook: stop (as if killed) after this many steps in this process.
    """

    def __init__(self, cfg: TrainConfig, genotype: Any, source: str, setup: RetrainSetup, run_dir: Path,
                 progress: Optional[Callable[..., Any]] = None, stop_after: Optional[int] = None):
        self.cfg, self.genotype, self.source, self.setup = cfg, genotype, source, setup
        self.run_dir = Path(run_dir)
        self.progress, self.stop_after = progress, stop_after
        self.pos = Position()
        self.sums = {"loss": 0.0, "acc": 0.0, "n": 0}
        self.best_test_acc, self.best_epoch = -1.0, 0
        self.last_test: Optional[Dict[str, Any]] = None
        self.elapsed = 0.0
        self.log: Optional[RunLog] = None
        self.steps_per_epoch = len(setup.train_loader)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self._steps_here = 0
        self._t0 = time.monotonic()
        self._last_ckpt_time, self._last_ckpt_step = time.monotonic(), 0
        self.clock = RunClock(cfg.epochs)
        self.dist = setup.dist

    # -- checkpoints -----------------------------------------------------------
    def _payload(self, rng: Dict[str, Any]) -> Dict[str, Any]:
        return {
            "config": to_dict(self.cfg), "genotype": self.genotype.to_dict(), "genotype_source": self.source,
            "data_info": self.setup.info, "model": self.setup.model.state_dict(),
            "optimizer": self.setup.trainer.optimizer.state_dict(), "trainer": self.setup.trainer.state_dict(),
            "rng": rng, "world_size": self.dist.world, "position": dict(self.pos.__dict__),
            "metrics_offset": self.log.offset() if self.log else 0, "epoch_sums": dict(self.sums),
            "best_test_acc": self.best_test_acc, "best_epoch": self.best_epoch, "last_test": self.last_test,
            "elapsed": self.elapsed + time.monotonic() - self._t0,
        }

    def checkpoint(self, best: bool = False) -> None:
        rng = self.dist.rng_state(self.setup.generators)  # every process's (a collective)
        if self.dist.world > 1:
            self.dist.sync_buffers(self.setup.model)  # BatchNorm running statistics: process 0's
            self.dist.check_same("network weights", self.setup.model.state_dict())
        if self.dist.is_main:
            payload = self._payload(rng)
            save_checkpoint(self.run_dir / "checkpoints" / "last.pt", KIND, payload)
            if best:
                save_checkpoint(self.run_dir / "checkpoints" / "best.pt", KIND, payload)
        self._last_ckpt_time, self._last_ckpt_step = time.monotonic(), self.pos.step

    def restore(self) -> int:
        """Load ``checkpoints/last.pt``; returns the metrics offset to truncate to."""
        state = self.dist.load_checkpoint(self.run_dir, loader=lambda path: load_train_checkpoint(path)[0])
        self.setup.model.load_state_dict(state["model"])
        self.setup.trainer.optimizer.load_state_dict(state["optimizer"])
        self.setup.trainer.load_state_dict(state["trainer"])
        self.pos = Position(**state["position"])
        self.dist.set_rng_state(state["rng"], self.setup.generators, self.pos.step)
        self.sums = dict(state["epoch_sums"])
        self.best_test_acc, self.best_epoch = float(state["best_test_acc"]), int(state["best_epoch"])
        self.last_test = state["last_test"]
        self.elapsed = float(state["elapsed"])
        self._last_ckpt_step = self.pos.step
        logger.info("resumed at epoch %d, batch %d, step %d", self.pos.epoch + 1, self.pos.batch, self.pos.step)
        return int(state["metrics_offset"])

    # -- schedule --------------------------------------------------------------
    def drop_prob(self) -> float:
        """Drop-path probability of the next step (per cell for ``enas``: times ``(i + 1) / L``)."""
        m = self.cfg.model
        if m.drop_path_schedule == "enas":  # ENAS micro_child: (global_step + 1) / num_train_steps
            return m.drop_path_prob * min(1.0, (self.pos.step + 1) / self.total_steps)
        return m.drop_path_prob * self.pos.epoch / self.cfg.epochs  # DARTS train.py, per epoch

    # -- main loop -------------------------------------------------------------
    def run(self, resume: bool = False, tensorboard: bool = True) -> Dict[str, Any]:
        """Train to the last epoch (from the last checkpoint with ``resume``); returns result.json's dict."""
        offset = self.restore() if resume else None
        if not resume:
            self.dist.seed_processes()
        # Events at the checkpoint's step were all written before it was taken.
        self.log = (RunLog(self.run_dir, resume_offset=offset, purge_step=self.pos.step + 1 if resume else None,
                           tensorboard=tensorboard) if self.dist.is_main else NullRunLog())
        self._t0 = time.monotonic()
        try:
            if not resume:
                if self.dist.is_main:
                    atomic_write_text(self.run_dir / "data.json", _json(self.setup.described))
                    self._log_start()
                self.checkpoint()
            while self.pos.epoch < self.cfg.epochs:
                self._run_epoch()
            result = self._result()
        finally:
            self.log.close()
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "result.json", _json(result))
        return result

    def _log_start(self) -> None:
        from enas.retrain.trained import train_space
        from enas.runs.draw import graph_image_array

        for cell, graph in train_space(self.cfg, self.genotype).graphs(self.genotype).items():
            try:
                self.log.image(f"cells/{cell}", graph_image_array(graph), 0)
            except Exception as exc:  # noqa: BLE001 - a drawing problem must not stop training
                logger.warning("could not draw the %s cell for TensorBoard: %s", cell, exc)
        self.log.text("retrain/genotype", f"```\n{self.genotype.to_json(indent=1)}\n```", 0)

    def _run_epoch(self) -> None:
        cfg, setup, epoch = self.cfg, self.setup, self.pos.epoch
        o = cfg.optim
        b = cfg.data.batch_size
        lr = epoch_lr(o.schedule, epoch, cfg.epochs, batch_scaled(o.lr_max, b, o.lr_batch),
                      batch_scaled(o.lr_min, b, o.lr_batch), o.sgdr_t0, o.sgdr_tmul)
        setup.trainer.set_lr(lr)
        if self.pos.batch == 0:
            self.sums = {"loss": 0.0, "acc": 0.0, "n": 0}
        self.clock.start_epoch()
        bar = self.progress(total=self.steps_per_epoch, initial=self.pos.batch,
                            desc=f"epoch {epoch + 1}/{cfg.epochs}") if self.progress else None
        try:
            for x, y in setup.train_loader.epoch_batches(epoch, self.pos.batch):
                p = self.drop_prob()
                setup.model.drop_path_prob = p
                metrics = setup.trainer.train_step(x, y, None)  # loss and accuracy: all processes' mean
                self.pos.batch += 1
                self.pos.step += 1
                if not metrics["skipped"]:
                    self.sums["loss"] += metrics["loss"]
                    self.sums["acc"] += metrics["acc"]
                    self.sums["n"] += 1
                if self.pos.step % cfg.run.log_every == 0 or self.pos.batch == self.steps_per_epoch:
                    self.log.record(self.pos.step, epoch + 1, "train",
                                    {"loss": metrics["loss"], "acc": metrics["acc"], "lr": lr, "drop_path_prob": p,
                                     "grad_norm": metrics["grad_norm"]}, tb_prefix="retrain")
                if bar is not None:
                    eta = self.clock.eta(epoch, self.pos.batch / self.steps_per_epoch)
                    bar.set_postfix(**{"loss": f"{metrics['loss']:.3f}", "acc": f"{metrics['acc']:.3f}",
                                       "run ETA": duration(eta)})
                    bar.update(1)
                self._steps_here += 1
                if self.stop_after is not None and self._steps_here >= self.stop_after:
                    raise KeyboardInterrupt("stop_after reached")
                if self.pos.batch < self.steps_per_epoch and self.dist.any(  # one decision for all processes
                        self.pos.step - self._last_ckpt_step >= cfg.run.checkpoint_every_steps
                        or time.monotonic() - self._last_ckpt_time >= 60 * cfg.run.checkpoint_every_minutes):
                    self.checkpoint()
        finally:
            if bar is not None:
                bar.close()
        self._end_epoch(epoch, lr)

    def _end_epoch(self, epoch: int, lr: float) -> None:
        n = self.sums["n"] or 1
        summary: Dict[str, Any] = {"train_loss": self.sums["loss"] / n, "train_acc": self.sums["acc"] / n, "lr": lr,
                                   "nonfinite_skipped": self.setup.trainer.nonfinite_total}
        last = epoch + 1 == self.cfg.epochs
        best = False
        if last or (epoch + 1) % self.cfg.run.test_every == 0:
            bar = self.progress(total=len(self.setup.test_loader), initial=0,
                                desc=f"epoch {epoch + 1}/{self.cfg.epochs} test") if self.progress else None
            if self.dist.world > 1:
                self.dist.sync_buffers(self.setup.model)  # every process tests with process 0's statistics
            test = evaluate_model(self.setup.model, self.setup.test_loader, self.setup.trainer.device,
                                  self.cfg.run.amp, bar, all_sum=self.dist.all_sum_ if self.dist.world > 1 else None)
            self.last_test = {"epoch": epoch + 1, **test}
            values = {"test_acc": test["top1"], "test_loss": test["loss"]}
            if test["top5"] is not None:
                values["test_top5"] = test["top5"]
            self.log.record(self.pos.step, epoch + 1, "test", values, tb_prefix="retrain")
            summary.update(values)
            best = test["top1"] > self.best_test_acc
            if best:
                self.best_test_acc, self.best_epoch = test["top1"], epoch + 1
        self.log.record(self.pos.step, epoch + 1, "epoch", summary, tb_prefix="epoch")
        self.clock.end_epoch()
        test = f", test {summary['test_acc']:.4f}" if "test_acc" in summary else ""
        top5 = f" (top-5 {summary['test_top5']:.4f})" if "test_top5" in summary else ""
        eta = f", run ETA {duration(self.clock.after_epoch(epoch))}" if epoch + 1 < self.cfg.epochs else ""
        logger.info("epoch %d/%d: loss %.4f, acc %.4f%s%s, lr %.3g (%s%s)", epoch + 1, self.cfg.epochs,
                    summary["train_loss"], summary["train_acc"], test, top5, lr,
                    duration(self.clock.epoch_times[-1]), eta)
        self.pos = Position(epoch + 1, 0, self.pos.step)
        self.checkpoint(best=best)

    def _result(self) -> Dict[str, Any]:
        model, info, test = self.setup.model, self.setup.info, self.last_test or {}
        shape = input_shape(info)
        params = count_parameters(model)
        return {
            "test_acc": test.get("top1"), "test_top5": test.get("top5"), "test_loss": test.get("loss"),
            "test_error_pct": None if test.get("top1") is None else round(100.0 * (1.0 - test["top1"]), 4),
            "test_images": test.get("n"), "reported": "last epoch (DARTS protocol)",
            "best_test_acc": self.best_test_acc, "best_epoch": self.best_epoch,
            "params": params, "params_m": round(params / 1e6, 6), "multiply_adds": count_macs(model, shape),
            "input_shape": list(shape), "epochs": self.cfg.epochs, "steps": self.pos.step,
            "nonfinite_skipped": self.setup.trainer.nonfinite_total,
            "train_hours": round((self.elapsed + time.monotonic() - self._t0) / 3600.0, 4),
            "dataset": info["dataset"], "num_classes": info["num_classes"],
            "channels": self.cfg.model.channels, "layers": self.cfg.model.layers,
            "preset": self.cfg.preset, "seed": self.cfg.run.seed,
            "genotype": self.genotype.to_dict(), "genotype_source": self.source,
            "checkpoint": "checkpoints/last.pt", "note": NOTE.format(seed=self.cfg.run.seed),
        }


def _json(data: Dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=1) + "\n"


def run_retrain(cfg: TrainConfig, genotype: Any, source: str, run_dir: Path, device: torch.device,
                resume: bool = False, progress: Optional[Callable[..., Any]] = None,
                stop_after: Optional[int] = None, tensorboard: bool = True, expect: Any = None,
                dist: Optional[Dist] = None) -> Dict[str, Any]:
    """Build and run a retrain in ``run_dir`` (already prepared); returns the result dict."""
    dist = dist or Dist(device=device, seed=cfg.run.seed)
    data = dist.agree(lambda: load_retrain_data(cfg, expect))  # a data problem on any process stops all
    setup = build_retrain(cfg, genotype, device, dist=dist, data=data)
    trainer = Retrainer(cfg, genotype, source, setup, run_dir, progress=progress, stop_after=stop_after)
    return trainer.run(resume=resume, tensorboard=tensorboard)
