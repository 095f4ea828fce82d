"""Table-mode search: a policy proposes NAS-Bench-201 cells, a benchmark table scores them.

This is the protocol of NAS-Bench-201's non-weight-sharing baselines (Dong & Yang, ICLR 2020,
Sec. 5): no network is trained; each proposal is one *query* whose reward is a table column
(default ``valid_acc_epoch12``, the 12-epoch validation accuracy) and whose cost is another
(default ``train_time_s``, the simulated seconds of that training). The result of a run is the
**best-by-reward** cell seen within the budget, reported by a third column (default
``test_acc``): search on validation, report test.

Budget (``budget.queries`` or ``budget.seconds``):

* every proposal is one query, **duplicates included**: proposing a cell again costs a query and
  its ``train_time_s`` again, as NAS-Bench-201 charges re-sampled architectures;
* with a time budget a query is made only if the spent time plus its cost stays within the
  budget; the first query that does not fit ends the run (NAS-Bench-201's rule; its REINFORCE
  script also kept that last, unpaid proposal in its trace, which is not done here). The real
  time of the policy's own step, which NAS-Bench-201 adds, is left out so runs are exact.

Runs are seeded and deterministic. With a run folder, a checkpoint (plain data, atomic,
:mod:`enas.runs.checkpoint`) is written every ``checkpoint_every`` queries (at the first update
boundary after) and at the end; a killed run resumed from it ends exactly as an uninterrupted
one, with ``metrics.jsonl`` cut back to the checkpoint.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from enas.benchmark.policies import TablePolicy, greedy_actions, make_policy
from enas.benchmark.table import BenchmarkTable, arch_index
from enas.benchmark.table_config import TableConfig
from enas.runs.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from enas.errors import UserError
from enas.runs.runlog import RunLog
from shared_model.nb201_arch import NB201Arch, all_archs

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = "table-search"
# Logged per policy update: REINFORCE's values; evolution's and BO's population statistics.
_UPDATE_KEYS = ("reward", "baseline", "entropy", "loss", "population_best", "population_mean", "diversity",
                "unique")
_ARCHS: List[NB201Arch] = []


def _arch(index: int) -> NB201Arch:
    if not _ARCHS:
        _ARCHS.extend(all_archs())
    return _ARCHS[index]


class BudgetExhausted(Exception):
    """The next query does not fit in the budget."""


class SimulatedKill(Exception):
    """Raised after ``stop_after`` queries (tests: a kill at an arbitrary point)."""


class TableSearch:
    """One run of one method with one seed against one table.

    Args:
        table: the benchmark table (must hold the reward, report and cost columns).
        cfg: the table config (budget, columns, method settings).
        method: one of :data:`~enas.benchmark.table_config.METHODS`.
        seed: the run's seed (sampling stream and initial weights).
        run_dir: folder for ``metrics.jsonl``, ``checkpoints/last.pt`` and ``result.json``;
            None runs in memory.
        stop_after: raise :class:`SimulatedKill` right after this many queries (tests).
    """

    def __init__(self, table: BenchmarkTable, cfg: TableConfig, method: str, seed: int,
                 run_dir: Optional[Path] = None, stop_after: Optional[int] = None) -> None:
        cols = cfg.columns
        table.require([cols.reward, cols.report, cols.cost])
        self.table, self.cfg, self.method, self.seed = table, cfg, method, int(seed)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.stop_after = stop_after
        self.tp: TablePolicy = make_policy(method, cfg, self.seed)
        self.generator = torch.Generator().manual_seed(self.seed * 2)
        self._reward = table.column(cols.reward)
        self._report = table.column(cols.report)
        self._cost = table.column(cols.cost)
        self.queries, self.spent = 0, 0.0
        self.history: Dict[str, List[Any]] = {"arch": [], "reward": [], "report": [], "cost": []}
        self.best: Optional[Dict[str, Any]] = None
        self._seen: set = set()
        self.log: Optional[RunLog] = None

    # -- spec and state ----------------------------------------------------
    def spec(self) -> Dict[str, Any]:
        c, b = self.cfg.columns, self.cfg.budget
        return {"method": self.method, "seed": self.seed, "table_sha256": self.table.sha256,
                "budget_queries": b.queries, "budget_seconds": b.seconds,
                "columns": [c.reward, c.report, c.cost]}

    def _save(self) -> None:
        assert self.run_dir is not None and self.log is not None
        save_checkpoint(self.run_dir / "checkpoints" / "last.pt", CHECKPOINT_KIND, {
            "spec": self.spec(), "policy": self.tp.state_dict(), "generator": self.generator.get_state(),
            "queries": self.queries, "spent": self.spent, "history": self.history,
            "metrics_offset": self.log.offset()})
        self._last_checkpoint = self.queries

    def _restore(self) -> int:
        assert self.run_dir is not None
        state = load_checkpoint(self.run_dir / "checkpoints" / "last.pt", kind=CHECKPOINT_KIND)
        if state["spec"] != self.spec():
            raise UserError(f"checkpoint {self.run_dir / 'checkpoints' / 'last.pt'} belongs to another run "
                            f"({state['spec']}), not {self.spec()}")
        self.tp.load_state_dict(state["policy"])
        self.generator.set_state(state["generator"])
        self.queries, self.spent = int(state["queries"]), float(state["spent"])
        history = state["history"]
        for k in range(len(history["arch"])):
            self._remember(int(history["arch"][k]), float(history["reward"][k]), float(history["report"][k]),
                           float(history["cost"][k]))
        return int(state["metrics_offset"])

    def _remember(self, index: int, reward: float, report: float, cost: float) -> bool:
        h = self.history
        h["arch"].append(index), h["reward"].append(reward), h["report"].append(report), h["cost"].append(cost)
        duplicate = index in self._seen
        self._seen.add(index)
        if self.best is None or reward > self.best["reward"]:
            self.best = {"arch": index, "reward": reward, "report": report, "query": len(h["arch"])}
        return duplicate

    # -- the loop ------------------------------------------------------------
    def _query(self, actions: List[int]) -> float:
        budget = self.cfg.budget
        if budget.queries is not None and self.queries >= budget.queries:
            raise BudgetExhausted
        arch = NB201Arch.from_actions([int(a) for a in actions])
        row = self.table.row_of(arch)  # a partial table: one clear line
        cost = float(self._cost[row])
        if budget.seconds is not None and self.spent + cost > budget.seconds:
            raise BudgetExhausted
        reward, report = float(self._reward[row]), float(self._report[row])
        self.queries += 1
        self.spent += cost
        duplicate = self._remember(arch_index(arch), reward, report, cost)
        if self.log is not None:
            self.log.record(self.queries, 0, "query", {
                "arch": arch.to_string(), "reward": reward, "report": report, "cost": cost,
                "seconds": self.spent, "duplicate": duplicate, "best_reward": self.best["reward"],
                "best_report": self.best["report"]}, tb_prefix="table")
        if self.stop_after is not None and self.queries >= self.stop_after:
            raise SimulatedKill(f"stopped after {self.queries} queries")
        return reward * self.tp.reward_scale

    def run(self, resume: bool = False) -> Dict[str, Any]:
        """Run to the end of the budget (from the last checkpoint with ``resume``); the result."""
        offset = None
        if self.run_dir is not None:
            if resume:
                offset = self._restore()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.log = RunLog(self.run_dir, resume_offset=offset, purge_step=self.queries + 1 if resume else None,
                              tensorboard=self.cfg.tensorboard)
        self._last_checkpoint = self.queries
        try:
            while True:
                try:
                    if self.tp.trainer is None:
                        self._query(self.tp.policy.sample(self.generator).actions)
                    else:
                        stats = self.tp.trainer.update(self._query, self.generator)
                        if self.log is not None:
                            self.log.record(self.queries, 0, "update", {
                                k: stats[k] for k in _UPDATE_KEYS if k in stats}, tb_prefix="policy")
                except BudgetExhausted:
                    break
                if self.log is not None and self.queries - self._last_checkpoint >= self.cfg.checkpoint_every:
                    self._save()
            result = self.result()
            if self.run_dir is not None:
                self._save()
                atomic_write_text(self.run_dir / "result.json", json.dumps(result, indent=2) + "\n")
            return result
        finally:
            if self.log is not None:
                self.log.close()

    def result(self) -> Dict[str, Any]:
        """The best-by-reward cell, its reported value, regret and rank, and the trajectory."""
        if self.best is None:
            raise UserError(f"{self.method} seed {self.seed}: the budget allows no query at all "
                            f"(the cheapest proposal costs more than {self.cfg.budget.seconds} s)")
        cols = self.cfg.columns
        best = _arch(self.best["arch"])
        opt_arch, optimum = self.table.best(cols.report)
        traj: Dict[str, List[float]] = {"seconds": [], "best_reward": [], "best_report": []}
        spent, top = 0.0, None
        for reward, report, cost in zip(self.history["reward"], self.history["report"], self.history["cost"]):
            spent += cost
            if top is None or reward > top[0]:
                top = (reward, report)
            traj["seconds"].append(spent), traj["best_reward"].append(top[0]), traj["best_report"].append(top[1])
        greedy = greedy_actions(self.tp)
        return {
            "method": self.method, "seed": self.seed, "queries": self.queries, "seconds": self.spent,
            "unique_archs": len(self._seen), "duplicates": self.queries - len(self._seen),
            "reward_column": cols.reward, "report_column": cols.report, "cost_column": cols.cost,
            "best_arch": best.to_string(), "best_query": self.best["query"],
            "best_reward": self.best["reward"], "best_report": self.best["report"],
            "table_optimum": optimum, "table_optimum_arch": opt_arch.to_string(),
            "regret": optimum - self.best["report"], "rank": self.table.rank(best, cols.report),
            "final_mode_arch": None if greedy is None else NB201Arch.from_actions(greedy).to_string(),
            "trajectory": traj,
        }


def best_report_at(result: Dict[str, Any], queries: int) -> float:
    """The reported value of the best-by-reward cell after the first ``queries`` queries."""
    traj = result["trajectory"]["best_report"]
    if not traj:
        raise ValueError("empty trajectory")
    return float(traj[min(queries, len(traj)) - 1])
