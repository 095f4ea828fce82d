"""ENAS and random search: one sampled architecture per child minibatch.

ENAS (Pham et al. 2018, Sec. 2.2-2.4): a fresh architecture is sampled from
the controller for every minibatch of shared-weight training; after the child
epoch the controller takes ``updates_per_epoch`` REINFORCE updates whose
rewards are accuracies on one validation minibatch; derive samples
``samples`` architectures plus the greedy one and keeps the best on a
validation minibatch.

Random search with weight sharing (Li & Talwalkar 2019): the same loop with a
uniform policy and no controller phase beyond one scoring round per epoch.
Derive follows their ``get_eval_arch`` (``searchers/random_weight_share.py``):
``rounds`` rounds, each scoring ``samples`` uniform architectures on
``eval_batches`` validation minibatches apiece (fresh minibatches per
candidate, as their validation iterator runs on), then re-scoring the round's
``top_k`` best on the whole validation split; the best full-split score over
all rounds wins (with ``top_k = 0``: the best minibatch score).

With a cost (:class:`~enas.cost.objective.SearchCost`, README "Searching for a
device") the reward is MnasNet's soft objective of accuracy and cost, the
policy proposes only architectures within a hard budget, and derive scores only
the candidates within budget (over-budget draws are recorded, not scored, so a
tighter budget never derives a costlier architecture from the same run) and
lists the accuracy-cost Pareto front.

Under torch.distributed (:mod:`enas.distributed`) every process trains, at each step,
its own architecture (from its own random stream, :meth:`Dist.generator`) on its part
of the batch, with gradients averaged over the processes; the rewards of a controller
update (or a scoring round) are split between the processes and gathered, so every
process takes the same REINFORCE step. Derive runs identically on every process.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch

from controller import Reinforce, UniformPolicy
from controller.reinforce import host_floats
from controller.constraints import BudgetInfeasible
from enas.distributed import Dist
from enas.errors import UserError
from enas.search.base import Phase, Strategy
from enas.search.trainer import ChildTrainer
from shared_model.spaces import Space

logger = logging.getLogger(__name__)


class SamplingStrategy(Strategy):
    """Shared-weight search driven by a sampling policy.

    Args:
        space: the search space.
        policy: ``Controller`` or ``UniformPolicy`` (``sample(generator, greedy)``).
        trainer: trains and scores the supernet.
        train_loader, valid_loader: ``DeviceLoader``s (valid: no augmentation).
        generator: CPU generator for sampling (its state is checkpointed).
        reinforce: the REINFORCE updater (ENAS) or None (random search).
        updates_per_epoch: controller updates per epoch (ENAS).
        eval_samples: architectures scored per epoch by random search.
        derive_rounds, derive_eval_batches, derive_top_k: random search's derive
            (see the module docstring); ENAS ignores them.
        cost: prices architectures, the objective and the budget
            (:class:`~enas.cost.objective.SearchCost`); ``policy`` (and the
            REINFORCE updater's) should already be ``cost.budgeted``.
    """

    def __init__(self, space: Space, policy, trainer: ChildTrainer, train_loader, valid_loader,
                 generator: torch.Generator, reinforce: Optional[Reinforce] = None,
                 updates_per_epoch: int = 30, eval_samples: int = 10, derive_rounds: int = 1,
                 derive_eval_batches: int = 1, derive_top_k: int = 0, cost=None):
        if min(derive_rounds, derive_eval_batches) < 1 or derive_top_k < 0:
            raise ValueError(f"derive rounds and eval batches must be >= 1 and top_k >= 0, got "
                             f"{derive_rounds}, {derive_eval_batches}, {derive_top_k}")
        self.space, self.policy, self.trainer = space, policy, trainer
        self.train_loader, self.valid_loader = train_loader, valid_loader
        self.generator, self.reinforce = generator, reinforce
        self.name = "enas" if reinforce is not None else "random"
        self.updates_per_epoch = updates_per_epoch if reinforce is not None else 1
        self.eval_samples = eval_samples
        self.derive_rounds, self.derive_eval_batches = derive_rounds, derive_eval_batches
        self.derive_top_k = derive_top_k
        self.epoch_best: Tuple[Optional[List[int]], float] = (None, -1.0)
        self.derive_scores: List[Dict[str, Any]] = []
        self.derive_batch_seed = 0
        self.cost = cost
        self.scored: List[Tuple[float, float]] = []  # (accuracy, cost) of this unit's rewards
        self.dist = Dist()  # this process's place in a torch.distributed run (set by the build)
        self.train_seed: Optional[int] = None  # seed of the current train phase's architectures

    # -- phases ------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        self.epoch_best = (None, -1.0)

    def phases(self, epoch: int) -> List[Phase]:
        # Random search has no controller: its per-epoch scoring round is the "score" phase.
        return [Phase("train", len(self.train_loader), lambda start: self._train(epoch, start), steps=True),
                Phase("controller" if self.reinforce is not None else "score", self.updates_per_epoch,
                      self._controller)]

    def _sample(self, greedy: bool = False, raw: bool = False,
                generator: Optional[torch.Generator] = None) -> List[int]:
        """The policy's next architecture (``raw``: without the budget wrapper, for derive)."""
        policy = getattr(self.policy, "policy", self.policy) if raw else self.policy
        with budget_errors(), torch.no_grad():
            return list(policy.sample(generator=generator or self.generator, greedy=greedy).actions)

    def _rejected(self) -> Dict[str, int]:
        """Over-budget draws since the last unit (hard constraint), then reset."""
        if not hasattr(self.policy, "rejected"):
            return {}
        n, self.policy.rejected = self.policy.rejected, 0
        return {"rejected": n}

    def _train(self, epoch: int, start: int) -> Iterator[Dict[str, Any]]:
        archs = iter(self._phase_actions(epoch, start))
        for x, y in self.train_loader.epoch_batches(epoch, start):
            genotype = self.space.decode(next(archs))
            stats = self.trainer.train_step(x, y, genotype)
            if self.cost is not None:
                stats = dict(stats, cost=self.cost.cost(genotype), **self._rejected())
            yield stats

    def _phase_actions(self, epoch: int, start: int) -> List[List[int]]:
        """Architectures of the train phase's steps ``start, start + 1, ...``, drawn in one batched pass.

        The policy does not change during the child phase (ENAS Sec. 2.2 alternates the two), so
        drawing every step's architecture up front samples what one draw per step would, about
        100x cheaper per architecture (docs/performance.md). The draw has its own generator,
        seeded from ``self.generator`` when the phase starts; the seed is checkpointed, so a
        resumed phase redraws the same architectures and continues at ``start``. Several
        processes each draw their own architectures from their own stream of that seed.
        """
        if start == 0 or self.train_seed is None:  # None: a checkpoint from before the seed was kept
            self.train_seed = int(torch.randint(2**62, (1,), generator=self.generator))
        n = len(self.train_loader)
        if start >= n:
            return []
        gen = (self.dist.generator(epoch, self.train_seed) if self.dist.world > 1
               else torch.Generator().manual_seed(self.train_seed))
        with budget_errors(), torch.no_grad():
            batch = self.policy.sample_batch(n, generator=gen)
        return [list(s.actions) for s in batch[start:]]

    def _rewards(self, batch: List[List[int]]) -> List[float]:
        """Rewards of ``batch`` in order, each on its own fresh validation minibatch.

        Several processes score a share each (the others only advance the validation
        generator past its minibatch) and gather the accuracies, so every process
        ends with the rewards (and the bookkeeping) one process would have.
        """
        mine = self.dist.share(len(batch))
        accs: List[Union[float, torch.Tensor]] = [0.0] * len(batch)
        for i, actions in enumerate(batch):
            if i in mine:
                x, y = self.valid_loader.sample_batch()
                accs[i] = self.trainer.accuracy(x, y, self.space.decode(actions), sync=False)
            else:
                self.valid_loader.skip_batch()
        # One host copy for all the batch's accuracies, not a wait for the device per reward.
        gathered = self.dist.combine(host_floats(accs), mine)
        return [self._record(a, acc) for a, acc in zip(batch, gathered)]

    def _record(self, actions: List[int], reward: float) -> float:
        """The reward of an accuracy (with a cost: the objective); keeps the epoch's best."""
        arch = self.space.decode(actions)
        if self.cost is not None:
            cost = self.cost.cost(arch)
            self.scored.append((reward, cost))
            reward = self.cost.reward(reward, cost)
        if reward > self.epoch_best[1]:
            self.epoch_best = (list(actions), reward)
        return reward

    def _cost_stats(self) -> Dict[str, float]:
        """Accuracy and cost of the unit's scored architectures (and hard-budget rejections)."""
        if self.cost is None or not self.scored:
            return {}
        accs, costs = zip(*self.scored)
        self.scored = []
        return {"acc": sum(accs) / len(accs), "cost": sum(costs) / len(costs), "cost_min": min(costs),
                "cost_max": max(costs), **self._rejected()}

    def _controller(self, start: int) -> Iterator[Dict[str, Any]]:
        for _ in range(start, self.updates_per_epoch):
            self.scored = []
            if self.reinforce is not None:
                with budget_errors():
                    stats = self.reinforce.update(None, generator=self.generator, rewards_fn=self._rewards)
                row = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
                # Every process must hold the same controller and baseline after every update.
                self.dist.check_same("controllers and baselines", [list(self.policy.parameters()),
                                                                   self.reinforce.baseline])
            else:
                rewards = self._rewards([self._sample() for _ in range(self.eval_samples)])
                row = {"reward": sum(rewards) / len(rewards), "best_reward": max(rewards)}
            yield dict(row, **self._cost_stats())

    def epoch_result(self) -> Tuple[Optional[Any], Dict[str, Any]]:
        actions, reward = self.epoch_best
        if actions is None:
            return None, {}
        arch = self.space.decode(actions)
        if self.cost is None:
            return arch, {"best_reward": reward}
        return arch, {"best_reward": reward, "best_cost": self.cost.cost(arch)}

    # -- derive ------------------------------------------------------------
    def derive_phase(self, samples: int) -> Phase:
        if self.reinforce is None:
            top_k = min(self.derive_top_k, samples)
            total = self.derive_rounds * (samples + top_k)
            return Phase("derive", total, lambda start: self._derive_random(start, total, samples, top_k))
        # ENAS candidates: greedy then ``samples`` draws, each scored on the same batch.
        total = samples + 1
        return Phase("derive", total, lambda start: self._derive(start, total))

    def _begin_derive(self, start: int) -> None:
        if start == 0:
            self.derive_scores = []
            self.derive_batch_seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))

    def _full_valid_accuracy(self, genotype: Any) -> float:
        """Accuracy over the whole validation split (batch accuracies weighted by size)."""
        correct, seen = 0.0, 0
        for x, y in self.valid_loader.epoch_batches(0):
            correct += self.trainer.accuracy(x, y, genotype) * len(y)
            seen += len(y)
        return correct / seen

    def _candidate(self, actions: List[int], source: str, **extra: Any) -> Tuple[Any, Dict[str, Any]]:
        """A derive candidate's record; over the hard budget it is recorded unscored (``valid_acc`` None)."""
        genotype = self.space.decode(actions)
        record: Dict[str, Any] = {"source": source, **extra, "valid_acc": None,
                                  "genotype": self.space.arch_to_json(genotype)}
        if self.cost is not None:
            record["cost"] = self.cost.cost(genotype)
            record["within_budget"] = self.cost.fits(record["cost"])
        return genotype, record

    def _derive_random(self, start: int, total: int, samples: int, top_k: int) -> Iterator[Dict[str, Any]]:
        self._begin_derive(start)
        per_round = samples + top_k
        for i in range(start, total):
            r, j = divmod(i, per_round)
            if j < samples:
                genotype, record = self._candidate(self._sample(raw=True), "sample", round=r)
                if record.get("within_budget", True):
                    # Fresh, reproducible minibatches per candidate (resume-safe: seeded by its index).
                    batch_gen = torch.Generator().manual_seed(self.derive_batch_seed + i)
                    accs = [self.trainer.accuracy(*self.valid_loader.sample_batch(generator=batch_gen), genotype)
                            for _ in range(self.derive_eval_batches)]
                    record["valid_acc"] = sum(accs) / len(accs)
            else:
                ranked = sorted((s for s in self.derive_scores if s["source"] == "sample" and s["round"] == r
                                 and s["valid_acc"] is not None),
                                key=lambda s: (s["valid_acc"] != s["valid_acc"], -s["valid_acc"]))
                if j - samples >= len(ranked):  # fewer candidates within budget than top_k
                    yield {}
                    continue
                pick = ranked[j - samples]
                record = {k: v for k, v in pick.items() if k not in ("source", "valid_acc")}
                record.update(source="full_valid", minibatch_acc=pick["valid_acc"],
                              valid_acc=self._full_valid_accuracy(self.space.arch_from_json(pick["genotype"])))
            self.derive_scores.append(record)
            yield {k: record[k] for k in ("valid_acc", "cost") if record.get(k) is not None}

    def _derive(self, start: int, total: int) -> Iterator[Dict[str, Any]]:
        self._begin_derive(start)
        batch_gen = torch.Generator().manual_seed(self.derive_batch_seed)
        x, y = self.valid_loader.sample_batch(generator=batch_gen)
        for i in range(start, total):
            greedy = self.reinforce is not None and i == 0
            genotype, record = self._candidate(self._sample(greedy=greedy, raw=True),
                                               "greedy" if greedy else "sample")
            if record.get("within_budget", True):
                record["valid_acc"] = self.trainer.accuracy(x, y, genotype)
            self.derive_scores.append(record)
            yield {k: record[k] for k in ("valid_acc", "cost") if record.get(k) is not None}

    def derive_result(self) -> Tuple[Any, Dict[str, Any]]:
        # With full-split re-scores (random search, top_k > 0) only those compete.
        full = [s for s in self.derive_scores if s["source"] == "full_valid"]
        scored = [s for s in full or self.derive_scores if s["valid_acc"] is not None]
        finite = [s for s in scored if s["valid_acc"] == s["valid_acc"]]
        if not finite:
            if not scored and self.cost is not None:
                raise UserError(f"none of the {len(self.derive_scores)} derive candidates fits the cost budget "
                                f"{self.cost.target:g} {self.cost.model.unit}; raise cost.target or derive.samples")
            raise UserError("every derive candidate scored NaN: the shared weights are not finite "
                            "(learning rate too high or bad data); the checkpoints are kept")
        details: Dict[str, Any] = {"strategy": self.name}
        if self.cost is None:
            best = max(finite, key=lambda s: s["valid_acc"])  # first wins ties: greedy preferred
        else:
            best = self.cost.choose(finite)
            details.update(best_cost=best["cost"], best_reward=best["reward"], cost=self.cost.summary(),
                           pareto_front=self.cost.pareto(finite))
        return self.space.arch_from_json(best["genotype"]), dict(
            details, best_valid_acc=best["valid_acc"], best_source=best["source"], candidates=self.derive_scores)

    def derive_images(self) -> Dict[str, Any]:
        """The accuracy-cost scatter of the scored candidates with the Pareto front."""
        return {} if self.cost is None else self.cost.pareto_images(self.derive_scores)

    # -- checkpoint ----------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {
            "trainer": self.trainer.state_dict(),
            "epoch_best_actions": self.epoch_best[0] or [], "epoch_best_reward": self.epoch_best[1],
            "derive_scores": self.derive_scores, "derive_batch_seed": self.derive_batch_seed,
            "train_seed": self.train_seed,
        }
        if self.reinforce is not None:
            state["controller"] = self.policy.state_dict()
            state["reinforce"] = self.reinforce.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.trainer.load_state_dict(state["trainer"])
        actions = [int(a) for a in state["epoch_best_actions"]] or None
        self.epoch_best = (actions, float(state["epoch_best_reward"]))
        self.derive_scores = list(state["derive_scores"])
        self.derive_batch_seed = int(state["derive_batch_seed"])
        seed = state.get("train_seed")
        self.train_seed = None if seed is None else int(seed)
        if self.reinforce is not None:
            self.policy.load_state_dict(state["controller"])
            self.reinforce.load_state_dict(state["reinforce"])


@contextlib.contextmanager
def budget_errors() -> Iterator[None]:
    """A hard budget that no draw meets any more: one line for the user (the last checkpoint stays)."""
    try:
        yield
    except BudgetInfeasible as exc:
        raise UserError(f"infeasible cost budget: {exc}; the last checkpoint is kept (`enas derive RUN "
                        "--target T` derives from it)") from None


def uniform_policy(space: Space) -> UniformPolicy:
    return UniformPolicy(space.decisions, distinct_inputs=space.distinct_inputs)
