"""Uniform policy: random search over a cell space (Li and Talwalkar 2019).

Same ``sample`` interface as :class:`~controller.lstm.Controller`, so the search
loop can run random search with weight sharing by swapping the policy. Every
decision is uniform over its choices, hence log-probability and entropy are the
constant ``-/+ sum log(num_choices)``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

from controller.lstm import Sample, plan_decisions
from shared_model.spaces import Decision


class UniformPolicy:
    """Uniform random architectures; nothing to learn.

    Args:
        decisions: the flat decision list of a search space.
        device: device of the returned ``log_prob`` / ``entropy`` tensors.
    """

    def __init__(self, decisions: Sequence[Decision], device: torch.device | str = "cpu") -> None:
        self.decisions: Tuple[Decision, ...] = tuple(decisions)
        plan_decisions(self.decisions)  # same validation as the controller
        self.device = torch.device(device)
        self._entropy = sum(math.log(d.num_choices) for d in self.decisions)

    @property
    def num_decisions(self) -> int:
        return len(self.decisions)

    def sample(self, generator: Optional[torch.Generator] = None, greedy: bool = False) -> Sample:
        """One uniform architecture.

        Raises:
            ValueError: ``greedy=True`` (a uniform policy has no mode).
        """
        if greedy:
            raise ValueError("a uniform policy has no greedy (argmax) architecture")
        # One uniform draw per decision, scaled to its choice count.
        u = torch.rand(self.num_decisions, generator=generator, dtype=torch.float64)
        actions = [min(int(x * d.num_choices), d.num_choices - 1) for x, d in zip(u.tolist(), self.decisions)]
        log_prob, entropy = self.log_prob(actions)
        return Sample(actions, log_prob, entropy)

    def sample_batch(self, n: int, generator: Optional[torch.Generator] = None,
                     greedy: bool = False) -> List[Sample]:
        if n < 1:
            raise ValueError(f"need at least one sample, got {n}")
        return [self.sample(generator, greedy) for _ in range(n)]

    def log_prob(self, actions: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Constant log-probability and entropy of any valid action list."""
        if len(actions) != self.num_decisions:
            raise ValueError(f"expected {self.num_decisions} actions, got {len(actions)}")
        for k, (a, d) in enumerate(zip(actions, self.decisions)):
            if not 0 <= int(a) < d.num_choices:
                raise ValueError(f"action {a} at decision {k} out of range 0..{d.num_choices - 1}")
        return (torch.tensor(-self._entropy, device=self.device),
                torch.tensor(self._entropy, device=self.device))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"UniformPolicy has no state, got keys {sorted(state)}")

    def train(self, mode: bool = True) -> "UniformPolicy":
        """No-op, for drop-in use where a module's ``train()`` is called."""
        return self

    def eval(self) -> "UniformPolicy":
        return self
