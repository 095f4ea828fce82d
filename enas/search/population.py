"""Regularized evolution and Bayesian optimisation (TPE) on the shared supernet.

Both run the ENAS schedule (Pham et al. 2018, Sec. 2.2) with the controller replaced by a
propose / tell policy (:class:`controller.evolution.RegularizedEvolution`,
:class:`controller.tpe.TPEProposer`). Each epoch has two phases:

1. ``train``: one shared-weight step per child minibatch on one architecture: with
   probability ``explore`` a uniform random one (and always while the population is still
   empty), otherwise a uniform member of the current population (evolution: the living
   members; BO: the latest ``population`` trials). The supernet thus trains mostly on the
   architectures the search currently keeps, as ENAS trains on its controller's samples,
   and the uniform share keeps every op trained (SPOS, Guo et al. 2020, trains on uniform
   paths only).
2. ``evolution`` / ``bo``: ``cycles`` units, each one proposal (:meth:`propose`), scored by
   :attr:`reward_fn` (default :meth:`valid_batch_reward`: accuracy of the shared weights on
   one fresh validation minibatch, no augmentation, ENAS's reward) and told to the policy.

A reward is measured with the weights of its epoch, so later rewards are measured on a
better-trained supernet; aging removes evolution's old members after ``population``
cycles, and Optuna's TPE down-weights old trials (its default ``weights``). Derive
re-scores the final population and the best rewarded architectures of the whole search
on one validation minibatch with the final weights (the same batch for all) and keeps the
best, so the choice never mixes rewards of different weights.

Cost-aware search (``cost``, README "Searching for a device"): :attr:`reward_fn` becomes the
MnasNet reward of accuracy and cost, :meth:`propose` rejects proposals over a hard budget
(``Proposer.reject``) and proposes again, training steps draw uniform architectures within
the budget, and derive chooses among candidates within it and lists the Pareto front.

Under torch.distributed (:mod:`enas.distributed`) each process trains its own architecture
per step (its own random stream) with gradients averaged over the processes, as in ENAS;
the proposal phase runs identically on every process (each proposal depends on the rewards
of the previous ones, so splitting it would change the algorithm) and derive too.
"""
from __future__ import annotations

import heapq
import logging
import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

from controller.proposer import Proposer
from controller.uniform import UniformPolicy
from enas.distributed import Dist
from enas.errors import UserError
from enas.search.base import Phase, Strategy
from enas.search.trainer import ChildTrainer
from shared_model.spaces import Space

logger = logging.getLogger(__name__)

SELECTION = ("the highest accuracy on one validation minibatch (the same batch for every candidate) with "
             "the final shared weights, among the final population and the best rewarded architectures "
             "of the whole search")


class PopulationStrategy(Strategy):
    """Shared-weight search driven by a propose / tell policy (see the module docstring).

    Args:
        name: ``evolution`` or ``bo`` (also the name of the search phase).
        space: the search space.
        proposer: the policy (:class:`controller.proposer.Proposer`).
        trainer: trains and scores the supernet.
        train_loader, valid_loader: ``DeviceLoader``s (valid: no augmentation).
        generator: CPU generator for every random choice (checkpointed by the driver).
        cycles: proposals per epoch.
        explore: probability of a uniform random architecture for a training step.
        keep: size of the hall of fame of best rewarded architectures (derive candidates).
        cost: an :class:`~enas.cost.objective.SearchCost`, or None.
    """

    def __init__(self, name: str, space: Space, proposer: Proposer, trainer: ChildTrainer, train_loader,
                 valid_loader, generator: torch.Generator, cycles: int, explore: float, keep: int,
                 cost: Any = None) -> None:
        self.name, self.space, self.proposer, self.trainer = name, space, proposer, trainer
        self.train_loader, self.valid_loader, self.generator = train_loader, valid_loader, generator
        self.cycles, self.explore, self.keep = int(cycles), float(explore), int(keep)
        self.uniform = UniformPolicy(space.decisions, distinct_inputs=space.distinct_inputs)
        #: The reward of one proposal: wrap it to transform rewards (e.g. cost-aware ones).
        self.reward_fn: Callable[[List[int]], float] = self.valid_batch_reward
        self.cost = cost
        if cost is not None:
            self.uniform = cost.budgeted(self.uniform, space)
            self.reward_fn = lambda actions: cost.reward(self.valid_batch_reward(actions),
                                                          cost.cost(space.decode(actions)))
        self.hall: List[Tuple[float, int, List[int]]] = []  # min-heap (reward, proposal index, actions)
        self.proposals = 0
        self.best: Tuple[Optional[List[int]], float] = (None, -float("inf"))
        self.epoch_best: Tuple[Optional[List[int]], float] = (None, -float("inf"))
        self.derive_candidates: List[Dict[str, Any]] = []
        self.derive_scores: List[Dict[str, Any]] = []
        self.derive_batch_seed = 0
        self.dist = Dist()  # this process's place in a torch.distributed run (set by the build)

    # -- the search loop -------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        self.epoch_best = (None, -float("inf"))

    def phases(self, epoch: int) -> List[Phase]:
        return [Phase("train", len(self.train_loader), lambda start: self._train(epoch, start), steps=True),
                Phase(self.name, self.cycles, self._search)]

    def training_actions(self, generator: Optional[torch.Generator] = None) -> List[int]:
        """The architecture of one training step: a population member, or uniform w.p. ``explore``."""
        gen = generator or self.generator
        explore = float(torch.rand(1, generator=gen)) < self.explore
        member = None if explore else self.proposer.sample_member(gen)
        return member if member is not None else list(self.uniform.sample(gen).actions)

    def _train(self, epoch: int, start: int) -> Iterator[Dict[str, Any]]:
        from enas.search.sampling import budget_errors

        for i, (x, y) in enumerate(self.train_loader.epoch_batches(epoch, start), start):
            gen = self.dist.generator(epoch, i) if self.dist.world > 1 else None  # one stream per process
            with budget_errors():  # a uniform draw within a hard cost budget may fail
                actions = self.training_actions(gen)
            yield self.trainer.train_step(x, y, self.space.decode(actions))

    def propose(self) -> List[int]:
        """The next candidate of the policy; one over a hard budget is rejected and proposed again."""
        if self.cost is None or not self.cost.hard:
            return self.proposer.propose(self.generator)
        from controller.constraints import propose_within_budget
        from enas.search.sampling import budget_errors

        def cost_or_reject(actions: List[int]) -> float:
            value = self.cost.cost(self.space.decode(actions))
            if not self.cost.fits(value):
                self.proposer.reject(actions)
            return value

        with budget_errors():
            return propose_within_budget(lambda: self.proposer.propose(self.generator), cost_or_reject,
                                         self.cost.target, self.cost.max_tries)[0]

    def valid_batch_reward(self, actions: List[int]) -> float:
        """ENAS's reward: shared-weight accuracy on one fresh validation minibatch."""
        x, y = self.valid_loader.sample_batch()
        return self.trainer.accuracy(x, y, self.space.decode(actions))

    def _search(self, start: int) -> Iterator[Dict[str, Any]]:
        for _ in range(start, self.cycles):
            actions = self.propose()
            reward = float(self.reward_fn(actions))
            self.proposer.tell(actions, reward)
            self._remember(actions, reward)
            best = self.best[1] if self.best[0] is not None else math.nan
            extra = {} if self.cost is None else {"cost": self.cost.cost(self.space.decode(actions))}
            yield dict(self.proposer.stats(), reward=reward, best_reward=best, **extra)

    def _remember(self, actions: List[int], reward: float) -> None:
        self.proposals += 1
        if reward != reward:  # NaN: never a best, never a candidate
            return
        if reward > self.best[1]:
            self.best = (list(actions), reward)
        if reward > self.epoch_best[1]:
            self.epoch_best = (list(actions), reward)
        if self.keep > 0 and all(a != actions for _, _, a in self.hall):
            item = (reward, -self.proposals, list(actions))  # equal rewards: the earlier one stays
            (heapq.heappush if len(self.hall) < self.keep else heapq.heappushpop)(self.hall, item)

    def derive_images(self) -> Dict[str, Any]:
        """The accuracy-cost scatter of the scored candidates with the Pareto front (with a cost)."""
        return {} if self.cost is None else self.cost.pareto_images(self.derive_scores)

    def epoch_result(self) -> Tuple[Optional[Any], Dict[str, Any]]:
        actions, reward = self.epoch_best
        if actions is None:
            return None, {}
        return self.space.decode(actions), {"best_reward": reward, **{
            k: v for k, v in self.proposer.stats().items() if k in ("diversity", "unique", "population_mean")}}

    # -- derive ------------------------------------------------------------------
    def derive_phase(self, samples: int) -> Phase:
        # Derive changes neither the population nor the hall of fame, so a resumed derive
        # recomputes the very same candidates; its scores so far come from the checkpoint.
        self.derive_candidates = self._candidates(samples)
        total = len(self.derive_candidates)
        return Phase("derive", total, lambda start: self._derive(start, total))

    def _candidates(self, samples: int) -> List[Dict[str, Any]]:
        """Every final population member (newest first), then the hall of fame by reward up to ``samples``."""
        out: List[Dict[str, Any]] = []
        seen = set()
        hall = [(a, r) for r, _, a in sorted(self.hall, reverse=True)]
        for source, items in (("population", self.proposer.scored_members()[::-1]), ("hall_of_fame", hall)):
            for actions, reward in items:
                if tuple(actions) in seen or (source == "hall_of_fame" and len(out) >= samples):
                    continue
                seen.add(tuple(actions))
                out.append({"source": source, "actions": list(actions), "search_reward": reward})
        if not out:
            raise UserError(f"{self.name}: nothing to derive from (no architecture was evaluated; "
                            f"set {self.name}.cycles_per_epoch > 0)")
        return out

    def _derive(self, start: int, total: int) -> Iterator[Dict[str, Any]]:
        if start == 0:
            self.derive_scores = []
            self.derive_batch_seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
        x, y = self.valid_loader.sample_batch(generator=torch.Generator().manual_seed(self.derive_batch_seed))
        for i in range(start, total):
            cand = self.derive_candidates[i]
            genotype = self.space.decode(cand["actions"])
            acc = self.trainer.accuracy(x, y, genotype)
            self.derive_scores.append({"source": cand["source"], "valid_acc": acc,
                                       "search_reward": cand["search_reward"],
                                       "genotype": self.space.arch_to_json(genotype)})
            yield {"valid_acc": acc}

    def derive_result(self) -> Tuple[Any, Dict[str, Any]]:
        finite = [s for s in self.derive_scores if s["valid_acc"] == s["valid_acc"]]
        if not finite:
            raise UserError("every derive candidate scored NaN: the shared weights are not finite "
                            "(learning rate too high or bad data); the checkpoints are kept")
        details: Dict[str, Any] = {}
        if self.cost is None:
            best = max(finite, key=lambda s: s["valid_acc"])  # the first wins ties: the newest member
        else:
            for s in finite:
                s["cost"] = self.cost.cost(self.space.arch_from_json(s["genotype"]))
            best = self.cost.choose(finite)
            details = {"best_cost": best["cost"], "best_reward": best["reward"], "cost": self.cost.summary(),
                       "pareto_front": self.cost.pareto(finite)}
        return self.space.arch_from_json(best["genotype"]), {
            **details, "strategy": self.name, "selection": SELECTION, "best_valid_acc": best["valid_acc"],
            "best_source": best["source"], "proposals": self.proposals,
            "best_search_reward": self.best[1] if self.best[0] is not None else None,
            "best_search_genotype": (self.space.arch_to_json(self.space.decode(self.best[0]))
                                     if self.best[0] is not None else None),
            "candidates": self.derive_scores}

    # -- checkpoint ----------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"trainer": self.trainer.state_dict(), "proposer": self.proposer.state_dict(),
                "hall": [[r, i, a] for r, i, a in self.hall], "proposals": self.proposals,
                "best": [self.best[0] or [], self.best[1]], "epoch_best": [self.epoch_best[0] or [], self.epoch_best[1]],
                "derive_scores": self.derive_scores,
                "derive_batch_seed": self.derive_batch_seed}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.trainer.load_state_dict(state["trainer"])
        self.proposer.load_state_dict(state["proposer"])
        self.hall = [(float(r), int(i), [int(x) for x in a]) for r, i, a in state["hall"]]
        heapq.heapify(self.hall)
        self.proposals = int(state["proposals"])
        self.best = ([int(a) for a in state["best"][0]] or None, float(state["best"][1]))
        self.epoch_best = ([int(a) for a in state["epoch_best"][0]] or None, float(state["epoch_best"][1]))
        self.derive_scores = list(state["derive_scores"])
        self.derive_batch_seed = int(state["derive_batch_seed"])


def build_population_strategy(name: str, space: Space, trainer: ChildTrainer, train_loader, valid_loader,
                              generator: torch.Generator, keep: int, population: int, cycles: int,
                              explore: float, sample: int = 1, startup_trials: int = 10,
                              ei_candidates: int = 24, multivariate: bool = True,
                              history: Optional[int] = None, cost: Any = None) -> PopulationStrategy:
    """Evolution (``sample`` is its tournament size) or TPE (``startup_trials`` .. ``history``).

    Raises:
        UserError: ``bo`` without Optuna installed.
    """
    if name == "evolution":
        from controller.evolution import RegularizedEvolution

        proposer: Proposer = RegularizedEvolution(space.decisions, population, sample,
                                             distinct_inputs=space.distinct_inputs)
    else:
        from controller.tpe import TPEProposer

        try:
            proposer = TPEProposer(space.decisions, space.distinct_inputs, startup_trials=startup_trials,
                                   ei_candidates=ei_candidates, multivariate=multivariate, population=population,
                                   history=history)
        except ImportError as exc:
            raise UserError(str(exc)) from None
    return PopulationStrategy(name, space, proposer, trainer, train_loader, valid_loader, generator,
                              cycles=cycles, explore=explore, keep=keep, cost=cost)
