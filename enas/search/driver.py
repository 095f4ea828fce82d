"""The search driver: epochs of phases, logging, checkpoints, resume, derive.

The position of a run is ``(epoch, phase, unit)`` plus the global training
step. A checkpoint can be taken between any two units; it holds every piece
of state (weights, controller, optimizers, baseline, RNG generators, the
position and the length of ``metrics.jsonl``), so ``--resume`` continues
exactly where the last checkpoint was taken.

Under torch.distributed every process runs this loop in lockstep; process 0 alone
writes the run folder (files, logs, TensorBoard, checkpoints), every checkpoint also
holds every process's global random state, and the processes check at each checkpoint
and each epoch end that their weights, strategy state and genotype are bitwise equal.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional


from enas.runs.checkpoint import atomic_write_text, save_checkpoint
from enas.config.lib import to_dict
from enas.distributed import Dist
from enas.errors import UserError
from enas.runs.progress import RunClock, duration
from enas.runs.runlog import NullRunLog, RunLog
from enas.retrain.schedules import batch_scaled, epoch_lr
from enas.search.build import SearchSetup
from enas.search.base import Phase
from enas.config.search import SearchConfig

logger = logging.getLogger(__name__)

DERIVE = "derive"
DONE = "done"


@dataclass
class Position:
    epoch: int = 0
    phase: int = 0  # index into the epoch's phases; unused in derive/done
    unit: int = 0
    step: int = 0  # global training step
    stage: str = "search"  # search | derive | done


class SearchDriver:
    """Runs a configured search in a run folder.

    Args:
        cfg: the resolved config (saved in checkpoints).
        setup: components from :func:`enas.search.build.build_search`.
        run_dir: the run folder.
        progress: factory ``progress(total, desc)`` returning a tqdm-like bar, or None.
        stop_after: testing hook: stop (as if killed) after this many units.
        dist: this process of a torch.distributed run (default: the only process).
    """

    def __init__(self, cfg: SearchConfig, setup: SearchSetup, run_dir: Path,
                 progress: Optional[Callable[..., Any]] = None, stop_after: Optional[int] = None,
                 dist: Optional[Dist] = None):
        self.cfg, self.setup, self.run_dir = cfg, setup, Path(run_dir)
        self.strategy = setup.strategy
        self.pos = Position()
        self.progress = progress
        self.stop_after = stop_after
        self.units_done = 0
        self.last_ckpt_time = time.monotonic()
        self.units_since_ckpt = 0
        self.started = time.monotonic()
        self.elapsed_before = 0.0  # wall time of earlier processes of this run
        self.best_score = -float("inf")
        self.epoch_sums: Dict[str, Dict[str, float]] = {}
        self.log: Optional[RunLog] = None
        self.save_checkpoints = True
        self.clock = RunClock(cfg.epochs)
        self.dist = dist or Dist(seed=cfg.run.seed)
        self.derived: Optional[tuple] = None  # (genotype, derive details) once derived
        # Random state when derive began: `enas derive` replays the search's candidate draws from it.
        self.derive_rng: Optional[Dict[str, Any]] = None

    # -- checkpoints -----------------------------------------------------------
    def _payload(self, rng: Dict[str, Any]) -> Dict[str, Any]:
        return {
            "config": to_dict(self.cfg),
            "model": self.setup.model.state_dict(),
            "optimizer": self.setup.trainer.optimizer.state_dict(),
            "strategy": self.strategy.state_dict(),
            "rng": rng, "world_size": self.dist.world,
            "position": dict(self.pos.__dict__),
            "metrics_offset": self.log.offset() if self.log else 0,
            "best_score": self.best_score,
            "epoch_sums": self.epoch_sums,
            "elapsed_seconds": self._elapsed(),
            "derive_rng": self.derive_rng,
        }

    def _elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def checkpoint(self, best: bool = False) -> None:
        if not self.save_checkpoints:
            return
        rng = self.dist.rng_state(self.setup.generators)  # every process's (a collective)
        if self.pos.stage == DERIVE and self.pos.unit == 0 and self.derive_rng is None:
            self.derive_rng = rng
        if self.dist.world > 1:
            self.dist.check_same("shared weights and search states",
                                 [self.setup.model.state_dict(), self.strategy.state_dict()])
        if self.dist.is_main:
            ckpt_dir = self.run_dir / "checkpoints"
            payload = self._payload(rng)
            save_checkpoint(ckpt_dir / "last.pt", "search", payload)
            if best:
                save_checkpoint(ckpt_dir / "best.pt", "search", payload)
        self.last_ckpt_time = time.monotonic()
        self.units_since_ckpt = 0

    def restore(self) -> int:
        """Load ``checkpoints/last.pt``; returns the metrics offset to truncate to."""
        path = self.run_dir / "checkpoints" / "last.pt"
        state = self.dist.load_checkpoint(path, kind="search")
        try:
            self.setup.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            # E.g. a checkpoint of an older enas whose supernet had other shapes; torch's
            # message is a header line followed by one line per mismatching tensor.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
            detail = detail if len(detail) <= 200 else detail[:197] + "..."
            raise UserError(f"checkpoint {path} does not fit this search network (an older enas "
                            f"or other model settings); start a new search: {detail}") from None
        self.setup.trainer.optimizer.load_state_dict(state["optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        self.pos = Position(**state["position"])
        self.dist.set_rng_state(state["rng"], self.setup.generators, self.pos.step)
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.dist.world:
            logger.info("resuming a run of %d process(es) with %d: same global batch, data order and "
                        "position; the per-process random streams start anew", saved_world, self.dist.world)
        self.best_score = float(state["best_score"])
        self.epoch_sums = {k: dict(v) for k, v in state["epoch_sums"].items()}
        self.elapsed_before = float(state["elapsed_seconds"])
        self.derive_rng = state.get("derive_rng")  # None: before derive, or an older checkpoint
        logger.info("resumed at epoch %d, %s phase %d unit %d, step %d",
                    self.pos.epoch + 1, self.pos.stage, self.pos.phase, self.pos.unit, self.pos.step)
        return int(state["metrics_offset"])

    def _maybe_checkpoint(self) -> None:
        run = self.cfg.run
        self.units_since_ckpt += 1
        due = (self.units_since_ckpt >= run.checkpoint_every_steps
               or time.monotonic() - self.last_ckpt_time >= 60 * run.checkpoint_every_minutes)
        if self.dist.any(due):  # the processes' clocks differ: one decision for all
            self.checkpoint()

    def _tick(self) -> None:
        self.units_done += 1
        if self.stop_after is not None and self.units_done >= self.stop_after:
            raise KeyboardInterrupt("stop_after reached")

    # -- main loop -------------------------------------------------------------
    def run(self, resume: bool = False, tensorboard: bool = True) -> Path:
        offset = self.restore() if resume else None
        if not resume:
            self.dist.seed_processes()
        self.log = (RunLog(self.run_dir, resume_offset=offset, purge_step=self.pos.step + 1 if resume else None,
                           tensorboard=tensorboard, purge_steps=self._unit_purge_steps() if resume else None)
                    if self.dist.is_main else NullRunLog())
        try:
            if not resume:
                if self.dist.is_main:
                    atomic_write_text(self.run_dir / "data.json", json.dumps(self.setup.data_info, indent=1) + "\n")
                self.checkpoint()
            while self.pos.stage == "search" and self.pos.epoch < self.cfg.epochs:
                self._run_epoch()
            if self.pos.stage == "search":
                self.pos = Position(self.cfg.epochs, 0, 0, self.pos.step, DERIVE)
                self.checkpoint()
            if self.pos.stage == DERIVE:
                self._run_derive()
        finally:
            self.log.close()
        return self.run_dir / "genotype.json"

    def derive_only(self) -> Path:
        """Re-run derive from the last checkpoint without changing it (``enas derive``).

        The candidates are drawn from the random state the search's own derive began with, so
        they are the search's draws (the first ``derive.samples`` of them with another count)
        whatever the budget or the number of re-derives.
        """
        self.restore()
        if self.derive_rng is not None:
            self.dist.set_rng_state(self.derive_rng, self.setup.generators, self.pos.step)
        self.save_checkpoints = False
        self.pos = Position(self.cfg.epochs, 0, 0, self.pos.step, DERIVE)
        size = (self.run_dir / "metrics.jsonl").stat().st_size if (self.run_dir / "metrics.jsonl").exists() else 0
        self.log = RunLog(self.run_dir, resume_offset=size)
        try:
            self._run_derive()
        finally:
            self.log.close()
        return self.run_dir / "genotype.json"

    def _unit_purge_steps(self) -> Dict[str, int]:
        """Per non-step phase (TensorBoard sub-run ``tb/<phase>``, one step per unit) the first
        step after the checkpoint being resumed."""
        out = {}
        epoch = min(self.pos.epoch, self.cfg.epochs - 1)
        for i, phase in enumerate(self.strategy.phases(epoch)):
            if phase.steps:
                continue
            if self.pos.stage != "search":
                done = self.cfg.epochs * phase.length
            else:
                done = self.pos.epoch * phase.length + (
                    self.pos.unit if i == self.pos.phase else phase.length if i < self.pos.phase else 0)
            out[phase.name] = done + 1
        return out

    def _run_phase(self, phase: Phase, epoch: int, on_unit: Callable[[Dict[str, Any]], None]) -> None:
        desc = f"epoch {epoch + 1}/{self.cfg.epochs} {phase.name}" if phase.name != "derive" else "derive"
        bar = self.progress(total=phase.length, initial=self.pos.unit, desc=desc) if self.progress else None
        try:
            for metrics in phase.run(self.pos.unit):
                self.pos.unit += 1
                if phase.steps:
                    self.pos.step += 1
                on_unit(metrics)
                if bar is not None:
                    post = {}
                    if "loss" in metrics:
                        post = {"loss": f"{metrics['loss']:.3f}", "acc": f"{metrics.get('acc', 0):.3f}"}
                    elif "reward" in metrics:
                        post = {"reward": f"{metrics['reward']:.3f}"}
                    if phase.name != "derive":
                        fraction = self.pos.unit / phase.length if phase.steps else 1.0
                        post["run ETA"] = duration(self.clock.eta(epoch, fraction))
                    bar.set_postfix(**post)
                    bar.update(1)
                self._tick()
                self._maybe_checkpoint()
        finally:
            if bar is not None:
                bar.close()

    def _run_epoch(self) -> None:
        epoch = self.pos.epoch
        o = self.cfg.optim
        b = self.cfg.data.batch_size
        lr = epoch_lr(o.schedule, epoch, self.cfg.epochs, batch_scaled(o.lr_max, b, o.lr_batch),
                      batch_scaled(o.lr_min, b, o.lr_batch), o.sgdr_t0, o.sgdr_tmul)
        self.setup.trainer.set_lr(lr)
        if self.pos.phase == 0 and self.pos.unit == 0:
            self.strategy.begin_epoch(epoch)
            self.epoch_sums = {}
        self.clock.start_epoch()
        phases = self.strategy.phases(epoch)
        sums = self.epoch_sums
        while self.pos.phase < len(phases):
            phase = phases[self.pos.phase]
            prefix = "shared" if phase.name == "train" else phase.name
            acc = sums.setdefault(phase.name, {})

            def on_unit(metrics: Dict[str, Any], phase=phase, prefix=prefix, acc=acc) -> None:
                row = dict(metrics, lr=lr) if phase.steps else dict(metrics)
                for k, v in metrics.items():
                    acc[k] = acc.get(k, 0.0) + float(v)
                acc["_n"] = acc.get("_n", 0) + 1
                if phase.steps and (self.pos.step % self.cfg.run.log_every == 0 or self.pos.unit == phase.length):
                    self.log.record(self.pos.step, epoch + 1, phase.name, row, tb_prefix=prefix)
                elif not phase.steps:
                    # Its own TensorBoard sub-run and step per unit: all 30 controller updates of an
                    # epoch happen at one training step and would hide each other there.
                    self.log.record(self.pos.step, epoch + 1, phase.name, row, tb_prefix=prefix,
                                    tb_step=epoch * phase.length + self.pos.unit, tb_run=phase.name)

            self._run_phase(phase, epoch, on_unit)
            self.pos.phase += 1
            self.pos.unit = 0
        self._end_epoch(epoch, sums)

    def _end_epoch(self, epoch: int, sums: Dict[str, Dict[str, float]]) -> None:
        summary: Dict[str, Any] = {}
        for name, acc in sums.items():
            n = acc.get("_n", 0) or 1
            summary.update({f"{name}_{k}_mean": v / n for k, v in acc.items() if k != "_n"})
        genotype, extra = self.strategy.epoch_result()
        summary.update(extra)
        score = float(extra.get("best_reward", summary.get("train_acc_mean", 0.0)))
        if genotype is not None:
            text = json.dumps(self.setup.space.arch_to_json(genotype), indent=1)
            self.dist.check_same(f"epoch {epoch + 1} genotypes", text)
            if self.dist.is_main:
                atomic_write_text(self.run_dir / "genotypes" / f"epoch_{epoch + 1:03d}.json", text + "\n")
            self.log.text("search/best_genotype", f"```\n{text}\n```", self.pos.step)
            summary["genotype"] = self.setup.space.arch_to_json(genotype)
            self._log_cells(genotype)
        for tag, image in self.strategy.epoch_images().items():
            self.log.image(tag, image, self.pos.step)
        self.log.record(self.pos.step, epoch + 1, "epoch", summary)
        self.clock.end_epoch()
        logger.info("%s", self._epoch_line(epoch, summary))
        self.pos = Position(epoch + 1, 0, 0, self.pos.step, "search")
        self.epoch_sums = {}
        best = score > self.best_score
        self.best_score = max(self.best_score, score)
        self.checkpoint(best=best)

    def _epoch_line(self, epoch: int, summary: Dict[str, Any]) -> str:
        """A short human line; every value is in metrics.jsonl and TensorBoard."""
        shown = [("loss", "train_loss_mean", ".3f"), ("acc", "train_acc_mean", ".3f"),
                 ("valid acc", "train_valid_acc_mean", ".3f"), ("reward", "controller_reward_mean", ".3f"),
                 ("reward", "score_reward_mean", ".3f"), ("reward", "evolution_reward_mean", ".3f"),
                 ("reward", "bo_reward_mean", ".3f"), ("entropy", "controller_entropy_mean", ".2f"),
                 ("best", "best_reward", ".3f")]
        parts = [f"{name} {summary[key]:{fmt}}" for name, key, fmt in shown
                 if isinstance(summary.get(key), (int, float))]
        took = duration(self.clock.epoch_times[-1]) if self.clock.epoch_times else "?"
        left = self.clock.after_epoch(epoch)
        eta = f", run ETA {duration(left)}" if epoch + 1 < self.cfg.epochs else ""
        return f"epoch {epoch + 1}/{self.cfg.epochs}: {', '.join(parts)} ({took}{eta})"

    def _log_cells(self, genotype) -> None:
        from enas.runs.draw import graph_image_array

        if self.log.writer is None:
            return
        for cell, graph in self.setup.space.graphs(genotype).items():
            self.log.image(f"cells/{cell}", graph_image_array(graph), self.pos.step)

    def _run_derive(self) -> None:
        phase = self.strategy.derive_phase(self.cfg.derive.samples)

        def on_unit(metrics: Dict[str, Any]) -> None:
            self.log.record(self.pos.step, self.cfg.epochs, "derive", metrics)

        self._run_phase(phase, self.cfg.epochs - 1, on_unit)
        genotype, details = self.strategy.derive_result()
        values = {k: v for k, v in details.items() if isinstance(v, (int, float))}
        # Wall time is the one value that differs between an interrupted and an uninterrupted
        # run: it goes to derive.json only, not to metrics.jsonl.
        details = dict(details, search_hours=round(self._elapsed() / 3600.0, 4))
        arch_json = self.setup.space.arch_to_json(genotype)
        text = json.dumps(arch_json, indent=1)
        # The bug of NNI #5013 (each process deriving its own architecture) cannot pass silently.
        self.dist.check_same("derived genotypes", text)
        if self.dist.world > 1:
            logger.info("derived genotype identical on all %d processes (checked)", self.dist.world)
        self.derived = (genotype, details)
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "derive.json", json.dumps(details, indent=1) + "\n")
            atomic_write_text(self.run_dir / "genotype.json", text + "\n")
        self.log.record(self.pos.step, self.cfg.epochs, "derived", dict(values, genotype=arch_json),
                        tb_prefix="derive")
        self.log.text("derive/genotype", f"```\n{text}\n```", self.pos.step)
        for tag, image in self.strategy.derive_images().items():
            self.log.image(tag, image, self.pos.step)
        self._log_cells(genotype)
        self.pos = Position(self.cfg.epochs, 0, 0, self.pos.step, DONE)
        self.checkpoint()
