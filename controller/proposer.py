"""The propose / tell interface of the population-based policies (evolution, TPE).

A proposer hands out one architecture at a time (``propose``), is told its reward (``tell``)
or that it was discarded unevaluated (``reject``, e.g. over a hard cost budget), and keeps a
*population*: the architectures it currently builds on (evolution: the living members; TPE:
the latest trials), from which a weight-sharing search draws its training paths.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch


def diversity(population: Sequence[Sequence[int]]) -> float:
    """Mean pairwise Hamming distance between action lists, as a fraction of the decisions (0..1)."""
    if len(population) < 2:
        return 0.0
    a = torch.tensor([list(m) for m in population])  # (P, D)
    differ = (a[:, None, :] != a[None, :, :]).float().mean(dim=2)  # (P, P)
    n = len(population)
    return float(differ.sum() / (n * (n - 1)))


class Proposer:
    """Base class: subclasses implement ``propose``, ``tell``, ``reject``, ``scored_members``,
    ``state_dict`` and ``load_state_dict``; ``extra_stats`` adds their own statistics."""

    def propose(self, generator: Optional[torch.Generator] = None) -> List[int]:
        raise NotImplementedError

    def tell(self, actions: Sequence[int], reward: float) -> None:
        raise NotImplementedError

    def reject(self, actions: Sequence[int]) -> None:
        raise NotImplementedError

    def scored_members(self) -> List[Tuple[List[int], float]]:
        """The population's actions and told rewards, oldest first."""
        raise NotImplementedError

    def members(self) -> List[List[int]]:
        """The population's actions, oldest first."""
        return [a for a, _ in self.scored_members()]

    def sample_member(self, generator: Optional[torch.Generator] = None) -> Optional[List[int]]:
        """A uniform member of the population (None while it is empty)."""
        members = self.members()
        if not members:
            return None
        return members[int(torch.randint(len(members), (1,), generator=generator))]

    def update(self, reward_fn: Callable[[List[int]], float],
               generator: Optional[torch.Generator] = None) -> Dict[str, float]:
        """One step: propose, score with ``reward_fn``, tell. Returns scalar statistics."""
        actions = self.propose(generator)
        reward = float(reward_fn(actions))
        self.tell(actions, reward)
        return dict(self.stats(), reward=reward)

    def stats(self) -> Dict[str, float]:
        """Population best / mean reward (finite ones), diversity, unique fraction, then ``extra_stats``."""
        scored = self.scored_members()
        finite = [r for _, r in scored if math.isfinite(r)]
        members = [a for a, _ in scored]
        return {
            "population_best": max(finite) if finite else math.nan,
            "population_mean": sum(finite) / len(finite) if finite else math.nan,
            "diversity": diversity(members),
            "unique": len({tuple(m) for m in members}) / max(1, len(members)),
            **self.extra_stats(),
        }

    def extra_stats(self) -> Dict[str, float]:
        return {}
