"""Cost-aware objectives and budgets for any policy that proposes architectures.

Two reusable pieces, independent of the policy:

* **Soft constraint** (:class:`CostReward`): the reward of an architecture
  with accuracy ``acc`` and cost ``c`` (latency, MACs, parameters) against a
  target ``T``. MnasNet (Tan et al. 2019, Sec. 3, Eq. 2):
  ``acc * (c / T) ** w`` with ``w = alpha`` if ``c <= T`` else ``beta``, and
  ``alpha = beta = -0.07`` (their "soft constraint"; ``alpha = 0, beta = -1``
  is their hard-ish variant). ProxylessNAS's REINFORCE objective (Cai et al.
  2019, Sec. 3.3) is the same product with one exponent, here written
  ``acc * (T / c) ** 0.1``.
* **Hard constraint** (:func:`propose_within_budget`, :class:`BudgetedPolicy`):
  architectures over budget are rejected and drawn again, up to ``max_tries``
  draws; an infeasible budget raises :class:`BudgetInfeasible` naming the
  cheapest cost seen. A REINFORCE policy then learns only from architectures
  within budget (its gradient uses the unconditioned log-probability of the
  accepted sample, the usual rejection-sampling approximation).

For DARTS, :func:`expected_cost` is the differentiable expected cost of the
mixing weights. Wiring a new sampling strategy (e.g. evolution) takes two calls::

    child = propose_within_budget(lambda: mutate(parent), cost, budget, max_tries)[0]
    reward = objective(accuracy(child), cost(child))      # objective: a CostReward
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch

T = TypeVar("T")

REWARDS = ("mnasnet", "proxyless")


@dataclass(frozen=True)
class CostReward:
    """Accuracy and cost to one reward (MnasNet Eq. 2 or ProxylessNAS Sec. 3.3).

    Attributes:
        target: the target cost ``T`` (> 0), in the cost model's unit.
        form: ``mnasnet`` (``acc * (c / T) ** w``, ``w = alpha`` when ``c <= T``
            else ``beta``) or ``proxyless`` (``acc * (T / c) ** exponent``).
        alpha, beta: MnasNet's exponents (both -0.07 in the paper).
        exponent: ProxylessNAS's exponent (0.1).
    """

    target: float
    form: str = "mnasnet"
    alpha: float = -0.07
    beta: float = -0.07
    exponent: float = 0.1

    def __post_init__(self) -> None:
        if not self.target > 0:
            raise ValueError(f"the cost target must be > 0, got {self.target!r}")
        if self.form not in REWARDS:
            raise ValueError(f"reward form must be one of {', '.join(REWARDS)}, got {self.form!r}")

    def weight(self, cost: float) -> float:
        """The exponent ``w`` applied to ``cost / target``."""
        if self.form == "proxyless":
            return -self.exponent
        return self.alpha if cost <= self.target else self.beta

    def __call__(self, accuracy: float, cost: float) -> float:
        if not cost > 0:
            raise ValueError(f"a cost-weighted reward needs a positive cost, got {cost!r}")
        return accuracy * (cost / self.target) ** self.weight(cost)


class BudgetInfeasible(ValueError):
    """No architecture within budget was drawn in ``max_tries`` attempts."""


def propose_within_budget(propose: Callable[[], T], cost: Callable[[T], float], budget: float,
                          max_tries: int) -> Tuple[T, float, int]:
    """Draw proposals until one costs at most ``budget``.

    Args:
        propose: draws one candidate (a sample, a mutation, ...).
        cost: its cost.
        budget: the largest allowed cost.
        max_tries: draws before giving up (>= 1).

    Returns:
        ``(candidate, its cost, draws used)``.

    Raises:
        BudgetInfeasible: ``max_tries`` draws were all over budget.
    """
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    cheapest = float("inf")
    for tries in range(1, max_tries + 1):
        candidate = propose()
        value = cost(candidate)
        if value <= budget:
            return candidate, value, tries
        cheapest = min(cheapest, value)
    raise BudgetInfeasible(f"no architecture within the budget {budget:g} in {max_tries} draws (the cheapest "
                           f"cost {cheapest:g}); raise the target, raise the tries or use the soft constraint")


class BudgetedPolicy:
    """Any policy with ``sample``/``sample_batch`` (LSTM controller, uniform) whose samples fit a budget.

    Samples over budget are drawn again with the same generator, so a seeded
    run stays reproducible and resumable. Everything else (``parameters``,
    ``state_dict``, ``train``, ...) is the wrapped policy's.

    Args:
        policy: the wrapped policy.
        cost: the cost of an action list.
        budget: the largest allowed cost.
        max_tries: draws per sample before :class:`BudgetInfeasible`.

    Attributes:
        rejected: over-budget draws so far (read and reset by the caller for logging).
    """

    def __init__(self, policy: Any, cost: Callable[[Sequence[int]], float], budget: float, max_tries: int = 1000):
        self.policy, self.cost, self.budget, self.max_tries = policy, cost, float(budget), int(max_tries)
        self.rejected = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["policy"], name)

    def _fits(self, sample: Any) -> bool:
        return self.cost(list(sample.actions)) <= self.budget

    def _redraw(self, generator: Optional[torch.Generator]) -> Any:
        sample, _, tries = propose_within_budget(lambda: self.policy.sample(generator=generator),
                                                 lambda s: self.cost(list(s.actions)), self.budget, self.max_tries)
        self.rejected += tries - 1
        return sample

    def sample(self, generator: Optional[torch.Generator] = None, greedy: bool = False) -> Any:
        """A sample within budget; a greedy sample over budget raises :class:`BudgetInfeasible`."""
        if greedy:
            sample = self.policy.sample(generator=generator, greedy=True)
            if not self._fits(sample):
                raise BudgetInfeasible(f"the greedy architecture costs {self.cost(list(sample.actions)):g}, "
                                       f"over the budget {self.budget:g}")
            return sample
        return self._redraw(generator)

    def sample_batch(self, n: int, generator: Optional[torch.Generator] = None) -> List[Any]:
        """``n`` samples within budget; each over-budget one of the batch is replaced by fresh draws."""
        out = []
        for sample in self.policy.sample_batch(n, generator=generator):
            if self._fits(sample):
                out.append(sample)
            else:
                self.rejected += 1
                out.append(self._redraw(generator))
        return out


def expected_cost(probs: Dict[str, torch.Tensor], costs: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Differentiable expected cost of DARTS mixing weights (FBNet Sec. 3.2, ProxylessNAS Eq. 4).

    ``sum over cell types, edges e and ops k of probs[e, k] * costs[e, k]``: with
    ``probs`` the softmaxed architecture weights ``(E, K)`` of a cell type and
    ``costs`` the cost of op ``k`` on edge ``e`` summed over every cell of that
    type in the child network. Its gradient with respect to the logits of edge
    ``e`` is ``p_k (c_k - sum_j p_j c_j)``: pushing weight to cheaper ops lowers it.
    """
    terms = [(probs[cell] * costs[cell].to(probs[cell])).sum() for cell in probs]
    return torch.stack(terms).sum()
