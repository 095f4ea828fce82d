"""The cost side of a search: cost model, objective and budget, built from the ``cost`` config.

:class:`SearchCost` is what a search strategy receives: it prices
architectures, turns accuracy and cost into the reward (the MnasNet soft
constraint in ``soft``/``both`` mode, plain accuracy otherwise), says whether
an architecture fits the budget (``hard``/``both``), wraps a policy so that
it only proposes architectures within budget, and chooses the derived
architecture among scored candidates.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from controller.constraints import BudgetedPolicy, BudgetInfeasible, CostReward, expected_cost
from enas.cost.lut import read_table
from enas.cost.models import CostModel, build_cost_model, cost_spec
from enas.cost.pareto import pareto_front
from enas.errors import UserError
from shared_model.spaces import Space

logger = logging.getLogger(__name__)

LUT_FILE = "latency_table.json"


@dataclass
class SearchCost:
    """Everything cost-related a strategy needs.

    Attributes:
        model: prices architectures.
        target: the target cost, or None (costs only logged).
        objective: the soft reward (``soft``/``both``), or None.
        hard: architectures over ``target`` are rejected (``hard``/``both``).
        max_tries: draws per architecture under the hard constraint.
        darts_weight: weight of DARTS's expected-cost term.
    """

    model: CostModel
    target: Optional[float] = None
    objective: Optional[CostReward] = None
    hard: bool = False
    max_tries: int = 1000
    darts_weight: float = 0.1
    darts_scale: Optional[float] = None
    _edge_costs: Optional[Dict[str, torch.Tensor]] = None

    def cost(self, arch: Any) -> float:
        return self.model(arch)

    def reward(self, accuracy: float, cost: float) -> float:
        """The reward a policy learns from (the soft objective, or the accuracy)."""
        if self.objective is None or accuracy != accuracy:
            return accuracy
        return self.objective(accuracy, cost)

    def fits(self, cost: float) -> bool:
        """Within the hard budget (always, without one)."""
        return not self.hard or cost <= self.target

    def budgeted(self, policy: Any, space: Space) -> Any:
        """``policy`` itself, or (hard constraint) a wrapper that only proposes architectures within budget."""
        if not self.hard:
            return policy
        return BudgetedPolicy(policy, lambda actions: self.model(space.decode(actions)), self.target, self.max_tries)

    def darts_term(self, probs: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """DARTS's cost term ``darts_weight * E[cost] / scale`` and ``E[cost]`` for softmaxed weights.

        ``scale`` is the target, or without one ``E[cost]`` at uniform weights.
        """
        if self._edge_costs is None:
            self._edge_costs = self.model.edge_costs()
            uniform = sum(float(t.mean(-1).sum()) for t in self._edge_costs.values())
            self.darts_scale = float(self.target or uniform or 1.0)
        like = next(iter(probs.values()))
        if next(iter(self._edge_costs.values())).device != like.device:  # moved once, not every step
            self._edge_costs = {c: t.to(like.device) for c, t in self._edge_costs.items()}
        expected = expected_cost(probs, self._edge_costs)
        return self.darts_weight * expected / self.darts_scale, expected

    def derived_details(self, arch: Any) -> Dict[str, Any]:
        """``derive.json`` fields of a single derived architecture (DARTS), warning when over budget."""
        cost = self.cost(arch)
        if not self.fits(cost):
            logger.warning("the derived architecture costs %g %s, over the budget %g: raise cost.darts_weight",
                           cost, self.model.unit, self.target)
        return {"cost": self.summary(), "best_cost": cost, "within_budget": self.fits(cost),
                "darts_weight": self.darts_weight, "cost_scale": self.darts_scale}

    def summary(self) -> Dict[str, Any]:
        """The cost settings for ``derive.json``."""
        out: Dict[str, Any] = {"model": self.model.name, "unit": self.model.unit, "target": self.target,
                               "constraint": "both" if self.hard and self.objective else
                               "hard" if self.hard else "soft" if self.objective else None,
                               "network": self.model.spec.to_dict()}
        if self.objective is not None:
            o = self.objective
            out["reward"] = {"form": o.form, "alpha": o.alpha, "beta": o.beta, "exponent": o.exponent}
        return out

    def choose(self, candidates: List[Dict[str, Any]], score_key: str = "valid_acc") -> Dict[str, Any]:
        """Annotate candidates (``cost``, ``within_budget``, ``reward``) and pick the derived one.

        Candidates over the hard budget never win; among the others the highest
        reward wins (the soft objective, else the accuracy), the first of equals.

        Raises:
            UserError: no candidate with a finite score fits the budget.
        """
        for c in candidates:
            c["within_budget"] = self.fits(c["cost"])
            c["reward"] = self.reward(c[score_key], c["cost"]) if score_key in c else None
        ok = [c for c in candidates if c["within_budget"] and c.get("reward") is not None
              and c["reward"] == c["reward"]]
        if not ok:
            raise UserError(f"no derive candidate within the budget {self.target:g} {self.model.unit} had a finite "
                            "score; raise cost.target or derive.samples")
        return max(ok, key=lambda c: c["reward"])

    def pareto_images(self, candidates: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        """TensorBoard's ``derive/pareto``: scored candidates' accuracy against cost, the front in red."""
        from enas.cost.pareto import pareto_image

        scored = [c for c in candidates if c.get("valid_acc") is not None and "cost" in c]
        return {"derive/pareto": pareto_image(scored, pareto_front(scored), self.model.unit, self.target)}

    def pareto(self, candidates: Sequence[Dict[str, Any]], score_key: str = "valid_acc") -> List[Dict[str, Any]]:
        """The accuracy-cost Pareto front of the scored candidates (cheapest first)."""
        scored = [c for c in candidates if c.get(score_key) is not None]
        return [scored[i] for i in pareto_front(scored, acc_key=score_key)]


def build_search_cost(cfg: Any, space: Space, num_classes: int, in_channels: int, image_size: Any,
                      run_dir: Optional[Path] = None) -> Optional[SearchCost]:
    """The search's :class:`SearchCost` from ``cfg.cost`` (None without a cost model).

    A ``latency`` model without ``cost.lut`` measures a table for the priced
    network into ``RUN/latency_table.json`` (or reuses it on resume) and records
    its path in ``cfg.cost.lut``.
    """
    k = cfg.cost
    if k.model is None:
        return None
    spec = cost_spec(k.channels or cfg.model.channels, k.layers or cfg.model.layers, num_classes, in_channels,
                     image_size, cfg.model.stem_multiplier)
    table = None
    if k.model == "latency" and k.lut is None:
        if run_dir is None:
            raise UserError("--cost latency needs a latency table (--lut FILE)")
        path = Path(run_dir) / LUT_FILE
        if path.is_file():
            table = read_table(path)
        else:
            from enas.cost.measure import measure_table
            from enas.runtime import resolve_device

            logger.info("measuring a latency table for %s, batch %d, %d thread(s) (cost.lut unset) into %s",
                        k.device, k.batch_size, k.threads, path)
            table = measure_table(space, spec, k.batch_size, resolve_device(k.device), threads=k.threads,
                                  clock=k.clock)
            table.save(path)
        k.lut = str(path)
    model = build_cost_model(k.model, space, spec, lut=k.lut, table=table)
    objective = None
    if k.target is not None and k.constraint in ("soft", "both"):
        objective = CostReward(k.target, k.reward, k.alpha, k.beta, k.exponent)
    out = SearchCost(model, k.target, objective, k.constraint in ("hard", "both") and k.target is not None,
                     k.max_tries, k.darts_weight)
    logger.info("cost: %s%s", model.describe(),
                f", target {k.target:g} ({k.constraint} constraint)" if k.target is not None else " (logged only)")
    return out


def check_feasible(strategy: Any, generator: Any) -> None:
    """Refuse an infeasible hard budget before a search starts: each budgeted policy of the
    strategy (its ``policy``, evolution's uniform exploration, ...) must draw one architecture
    within budget. A no-op without a hard budget; the generator is left as it was.
    """
    for policy in vars(strategy).values():
        if not isinstance(policy, BudgetedPolicy):
            continue
        state = generator.get_state()
        try:
            policy.sample(generator=generator)
        except BudgetInfeasible as exc:
            raise UserError(f"infeasible cost budget: {exc}") from None
        finally:
            generator.set_state(state)
            policy.rejected = 0
