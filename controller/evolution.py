"""Regularized (aging) evolution over a space's decision list (Real et al. 2019, AAAI).

Algorithm 1 of Real et al. ("aging evolution"), as NAS-Bench-201 ran it
(AutoDL-Projects ``exps/algos/R_EA.py``):

* the first ``population_size`` proposals are uniform random architectures
  (:class:`~controller.uniform.UniformPolicy`);
* afterwards each proposal draws ``sample_size`` members of the population
  uniformly *with replacement*, takes the best of that sample as the parent and
  mutates it once;
* every told child joins the population, and once it is full the **oldest**
  member leaves, whatever its fitness (the "regularization" of the title).

**Mutation** (Real et al. Sec. 3, Fig. 2: the hidden-state and the op mutation),
mapped onto the flat :class:`~shared_model.spaces.Decision` list: a decision kind
(``input`` = hidden-state mutation, ``op`` = op mutation) is chosen uniformly
among the kinds the parent can mutate, then a cell, a node of that cell and one
of the node's decisions of that kind, each uniformly; the decision is re-drawn
uniformly among the *other* values, so a child never equals its parent. With
``distinct_inputs`` (the DARTS space) a new input also avoids the node's other
inputs. On NAS-Bench-201 (op decisions only, one node per target) this is
exactly ``R_EA.py``'s ``mutate_arch``: a node uniformly, one of its edges
uniformly, a different op. Real et al. also allow an identity mutation; it is
left out because the child must differ from its parent.

The policy knows nothing of rewards beyond the numbers it is told: callers
``propose`` an architecture, score it and ``tell`` the score (``update`` does
both for table mode). A non-finite reward ranks below every finite one.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import torch

from controller.proposer import Proposer
from controller.uniform import UniformPolicy
from shared_model.spaces import Decision


def _pick(n: int, generator: Optional[torch.Generator]) -> int:
    """A uniform index in ``range(n)``."""
    return int(torch.randint(n, (1,), generator=generator))


def _fitness(reward: float) -> float:
    return reward if math.isfinite(reward) else -math.inf


class Mutator:
    """AmoebaNet's hidden-state and op mutations over a decision list (see the module docstring).

    Args:
        decisions: the flat decision list of a search space.
        distinct_inputs: the input decisions of a node must keep distinct values.
    """

    def __init__(self, decisions: Sequence[Decision], distinct_inputs: bool = False) -> None:
        self.decisions: Tuple[Decision, ...] = tuple(decisions)
        # Per decision: the other input decisions of its node whose values it must avoid.
        self._siblings: List[Tuple[int, ...]] = [() for _ in self.decisions]
        if distinct_inputs:
            nodes: Dict[Tuple[str, int], List[int]] = {}
            for pos, d in enumerate(self.decisions):
                if d.kind == "input":
                    nodes.setdefault((d.cell, d.node), []).append(pos)
            for positions in nodes.values():
                for pos in positions:
                    self._siblings[pos] = tuple(p for p in positions if p != pos)

    def allowed(self, actions: Sequence[int], pos: int) -> List[int]:
        """The values decision ``pos`` may take in a child of ``actions``."""
        avoid = {int(actions[pos])} | {int(actions[p]) for p in self._siblings[pos]}
        return [v for v in range(self.decisions[pos].num_choices) if v not in avoid]

    def mutate(self, actions: Sequence[int], generator: Optional[torch.Generator] = None) -> Tuple[List[int], int]:
        """A child of ``actions`` that differs in exactly one decision; returns it and the position.

        Raises:
            ValueError: wrong length, or no decision can change (a one-architecture space).
        """
        if len(actions) != len(self.decisions):
            raise ValueError(f"expected {len(self.decisions)} actions, got {len(actions)}")
        # kind -> cell -> node -> positions, over the decisions able to change, in order.
        groups: Dict[str, Dict[str, Dict[int, List[int]]]] = {}
        for pos, d in enumerate(self.decisions):
            if self.allowed(actions, pos):
                groups.setdefault(d.kind, {}).setdefault(d.cell, {}).setdefault(d.node, []).append(pos)
        if not groups:
            raise ValueError("no decision of this architecture can change: the space has one architecture")
        level: Any = groups
        for _ in range(3):  # a kind, then a cell, then a node: each uniform
            keys = list(level)
            level = level[keys[_pick(len(keys), generator)]]
        pos = level[_pick(len(level), generator)]
        values = self.allowed(actions, pos)
        child = [int(a) for a in actions]
        child[pos] = values[_pick(len(values), generator)]
        return child, pos


@dataclass
class Member:
    """One evaluated architecture: its actions, the reward it was told and its birth (cycle index)."""

    actions: List[int]
    reward: float
    born: int


class RegularizedEvolution(Proposer):
    """Aging evolution with a propose / tell interface (see the module docstring).

    Args:
        decisions: the flat decision list of a search space.
        population_size: P, the members kept (NAS-Bench-201's REA: 10).
        sample_size: S, the tournament size, drawn with replacement (NAS-Bench-201's REA: 3).
        distinct_inputs: ``Space.distinct_inputs``.
    """

    def __init__(self, decisions: Sequence[Decision], population_size: int = 10, sample_size: int = 3,
                 distinct_inputs: bool = False) -> None:
        if population_size < 1 or sample_size < 1:
            raise ValueError(f"population and sample size must be >= 1, got {population_size}, {sample_size}")
        self.decisions: Tuple[Decision, ...] = tuple(decisions)
        self.population_size, self.sample_size = int(population_size), int(sample_size)
        self.uniform = UniformPolicy(self.decisions, distinct_inputs=distinct_inputs)
        self.mutator = Mutator(self.decisions, distinct_inputs=distinct_inputs)
        self.population: Deque[Member] = deque()
        self.cycles = 0  # children told so far, the random initial ones included
        self.rejected = 0
        self.last_origin: Dict[str, int] = {}  # the last proposal's parent and mutated decision

    # -- propose / tell --------------------------------------------------------
    def propose(self, generator: Optional[torch.Generator] = None) -> List[int]:
        """The next architecture to evaluate: random while filling, else a mutated tournament winner."""
        if len(self.population) < self.population_size:
            self.last_origin = {"parent_born": -1, "mutated": -1}
            return list(self.uniform.sample(generator).actions)
        members = list(self.population)
        sample = [members[_pick(len(members), generator)] for _ in range(self.sample_size)]
        parent = max(sample, key=lambda m: _fitness(m.reward))  # the first of equals wins
        child, pos = self.mutator.mutate(parent.actions, generator)
        self.last_origin = {"parent_born": parent.born, "mutated": pos}
        return child

    def tell(self, actions: Sequence[int], reward: float) -> Member:
        """Add an evaluated child; the oldest member dies once the population is full."""
        member = Member([int(a) for a in actions], float(reward), self.cycles)
        self.cycles += 1
        self.population.append(member)
        if len(self.population) > self.population_size:
            self.population.popleft()
        return member

    def reject(self, actions: Sequence[int]) -> None:
        """Discard a proposal without evaluating it (e.g. over a hard cost budget); propose again."""
        self.rejected += 1

    # -- population ------------------------------------------------------------
    def scored_members(self) -> List[Tuple[List[int], float]]:
        """The population's actions and told rewards, oldest first."""
        return [(list(m.actions), m.reward) for m in self.population]

    def extra_stats(self) -> Dict[str, float]:
        """The last parent's age in cycles (NaN for a random proposal)."""
        origin = self.last_origin.get("parent_born", -1)
        return {"parent_age": float(self.cycles - 1 - origin) if origin >= 0 else math.nan}

    # -- checkpoint ------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain lists and numbers (loads with ``torch.load(weights_only=True)``)."""
        return {"actions": self.members(), "rewards": [m.reward for m in self.population],
                "born": [m.born for m in self.population], "cycles": self.cycles, "rejected": self.rejected,
                "last_origin": dict(self.last_origin)}

    def load_state_dict(self, state: dict) -> None:
        self.population = deque(Member([int(a) for a in acts], float(r), int(b))
                                for acts, r, b in zip(state["actions"], state["rewards"], state["born"]))
        self.cycles, self.rejected = int(state["cycles"]), int(state["rejected"])
        self.last_origin = {k: int(v) for k, v in state["last_origin"].items()}
