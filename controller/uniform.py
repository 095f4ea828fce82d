"""Uniform policy: random search over a cell space (Li and Talwalkar 2019).

Same ``sample`` interface as :class:`~controller.lstm.Controller`, so the search
loop can run random search with weight sharing by swapping the policy. Every op
decision is uniform over its choices. Inputs are uniform too; with
``distinct_inputs`` (the DARTS space) a node's inputs are drawn without
replacement, as Li & Talwalkar's ``sample_arch`` does
(``benchmarks/cnn/darts/darts_wrapper_discrete.py``): the k-th input of a node
(0-based) is uniform over the ``n - k`` inputs not taken yet. Log-probability
and entropy are therefore the constant ``-/+ sum log(effective choices)``.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

from controller.lstm import Sample, plan_decisions
from shared_model.spaces import Decision


def input_exclusions(decisions: Sequence[Decision], distinct_inputs: bool) -> List[Tuple[int, ...]]:
    """Per decision, the earlier input decisions of its node whose values it must avoid.

    Empty tuples unless ``distinct_inputs`` (``Space.distinct_inputs``, the DARTS space): then
    the k-th input decision of a node (0-based) must differ from the node's first k inputs and
    effectively has ``num_choices - k`` choices.

    Raises:
        ValueError: an invalid decision list (:func:`~controller.lstm.plan_decisions`), or a
            node with more distinct inputs to draw than choices.
    """
    plan = plan_decisions(decisions, skips=True)  # same validation as the controllers
    exclude: List[Tuple[int, ...]] = [() for _ in decisions]
    if distinct_inputs:
        for _, nodes in plan:
            for inputs, _ in nodes:
                for k, (pos, n) in enumerate(inputs):
                    if n - k < 1:
                        raise ValueError(f"decision {pos}: {k + 1} distinct inputs from {n} choices")
                    exclude[pos] = tuple(p for p, _ in inputs[:k])
    return exclude


def nth_free(index: int, taken: Iterable[int]) -> int:
    """The ``index``-th value (0-based) that is not in ``taken`` (distinct values)."""
    for value in sorted(taken):
        index += index >= value
    return index


class UniformPolicy:
    """Uniform random architectures; nothing to learn.

    Args:
        decisions: the flat decision list of a search space.
        device: device of the returned ``log_prob`` / ``entropy`` tensors.
        distinct_inputs: draw the inputs of a node without replacement
            (``SearchSpace.distinct_inputs``).

    Raises:
        ValueError: a node has more distinct inputs to draw than choices.
    """

    def __init__(self, decisions: Sequence[Decision], device: torch.device | str = "cpu",
                 distinct_inputs: bool = False) -> None:
        self.decisions: Tuple[Decision, ...] = tuple(decisions)
        self.device = torch.device(device)
        self.distinct_inputs = bool(distinct_inputs)
        # Per decision: the earlier input positions of its node it must differ from.
        self._exclude = input_exclusions(self.decisions, self.distinct_inputs)
        self._choices = [d.num_choices - len(ex) for d, ex in zip(self.decisions, self._exclude)]
        self._entropy = sum(math.log(n) for n in self._choices)

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
        # One uniform draw per decision, scaled to its effective choice count.
        u = torch.rand(self.num_decisions, generator=generator, dtype=torch.float64).tolist()
        actions: List[int] = []
        for x, n, exclude in zip(u, self._choices, self._exclude):
            actions.append(nth_free(min(int(x * n), n - 1), [actions[p] for p in exclude]))
        log_prob, entropy = self.log_prob(actions)
        return Sample(actions, log_prob, entropy)

    def sample_batch(self, n: int, generator: Optional[torch.Generator] = None,
                     greedy: bool = False) -> List[Sample]:
        if n < 1:
            raise ValueError(f"need at least one sample, got {n}")
        return [self.sample(generator, greedy) for _ in range(n)]

    def log_prob(self, actions: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Constant log-probability and entropy of any action list the policy can draw.

        Raises:
            ValueError: wrong length, an action out of range, or (with
                ``distinct_inputs``) a node whose inputs repeat (probability 0).
        """
        if len(actions) != self.num_decisions:
            raise ValueError(f"expected {self.num_decisions} actions, got {len(actions)}")
        for k, (a, d) in enumerate(zip(actions, self.decisions)):
            if not 0 <= int(a) < d.num_choices:
                raise ValueError(f"action {a} at decision {k} out of range 0..{d.num_choices - 1}")
            if any(int(actions[p]) == int(a) for p in self._exclude[k]):
                raise ValueError(f"input {a} at decision {k} repeats an earlier input of its node; "
                                 "the inputs of a node are distinct in this space")
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
