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
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from controller import Reinforce, UniformPolicy
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
    """

    def __init__(self, space: Space, policy, trainer: ChildTrainer, train_loader, valid_loader,
                 generator: torch.Generator, reinforce: Optional[Reinforce] = None,
                 updates_per_epoch: int = 30, eval_samples: int = 10, derive_rounds: int = 1,
                 derive_eval_batches: int = 1, derive_top_k: int = 0):
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
        self.train_seed: Optional[int] = None  # seed of the current train phase's architectures

    # -- phases ------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        self.epoch_best = (None, -1.0)

    def phases(self, epoch: int) -> List[Phase]:
        # Random search has no controller: its per-epoch scoring round is the "score" phase.
        return [Phase("train", len(self.train_loader), lambda start: self._train(epoch, start), steps=True),
                Phase("controller" if self.reinforce is not None else "score", self.updates_per_epoch,
                      self._controller)]

    def _sample(self, greedy: bool = False) -> List[int]:
        with torch.no_grad():
            return list(self.policy.sample(generator=self.generator, greedy=greedy).actions)

    def _train(self, epoch: int, start: int) -> Iterator[Dict[str, Any]]:
        archs = iter(self._phase_actions(start))
        for x, y in self.train_loader.epoch_batches(epoch, start):
            yield self.trainer.train_step(x, y, self.space.decode(next(archs)))

    def _phase_actions(self, start: int) -> List[List[int]]:
        """Architectures of the train phase's steps ``start, start + 1, ...``, drawn in one batched pass.

        The policy does not change during the child phase (ENAS Sec. 2.2 alternates the two), so
        drawing every step's architecture up front samples what one draw per step would, about
        100x cheaper per architecture (docs/performance.md). The draw has its own generator,
        seeded from ``self.generator`` when the phase starts; the seed is checkpointed, so a
        resumed phase redraws the same architectures and continues at ``start``.
        """
        if start == 0 or self.train_seed is None:  # None: a checkpoint from before the seed was kept
            self.train_seed = int(torch.randint(2**62, (1,), generator=self.generator))
        n = len(self.train_loader)
        if start >= n:
            return []
        with torch.no_grad():
            batch = self.policy.sample_batch(n, generator=torch.Generator().manual_seed(self.train_seed))
        return [list(s.actions) for s in batch[start:]]

    def _reward(self, actions: List[int]) -> float:
        x, y = self.valid_loader.sample_batch()
        reward = self.trainer.accuracy(x, y, self.space.decode(actions))
        if reward > self.epoch_best[1]:
            self.epoch_best = (list(actions), reward)
        return reward

    def _reward_tensor(self, actions: List[int]) -> torch.Tensor:
        """The reward as a device tensor: REINFORCE reads an update's rewards at once."""
        x, y = self.valid_loader.sample_batch()
        return self.trainer.accuracy(x, y, self.space.decode(actions), sync=False)

    def _controller(self, start: int) -> Iterator[Dict[str, Any]]:
        for _ in range(start, self.updates_per_epoch):
            if self.reinforce is not None:
                stats = self.reinforce.update(self._reward_tensor, generator=self.generator)
                if stats["best_actions"] is not None and stats["best_reward"] > self.epoch_best[1]:
                    self.epoch_best = (list(stats["best_actions"]), stats["best_reward"])
                yield {k: v for k, v in stats.items() if isinstance(v, (int, float))}
            else:
                rewards = [self._reward(self._sample()) for _ in range(self.eval_samples)]
                yield {"reward": sum(rewards) / len(rewards), "best_reward": max(rewards)}

    def epoch_result(self) -> Tuple[Optional[Any], Dict[str, Any]]:
        actions, reward = self.epoch_best
        if actions is None:
            return None, {}
        return self.space.decode(actions), {"best_reward": reward}

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

    def _derive_random(self, start: int, total: int, samples: int, top_k: int) -> Iterator[Dict[str, Any]]:
        self._begin_derive(start)
        per_round = samples + top_k
        for i in range(start, total):
            r, j = divmod(i, per_round)
            if j < samples:
                # Fresh, reproducible minibatches per candidate (resume-safe: seeded by its index).
                batch_gen = torch.Generator().manual_seed(self.derive_batch_seed + i)
                genotype = self.space.decode(self._sample())
                accs = [self.trainer.accuracy(*self.valid_loader.sample_batch(generator=batch_gen), genotype)
                        for _ in range(self.derive_eval_batches)]
                acc = sum(accs) / len(accs)
                self.derive_scores.append({"source": "sample", "round": r, "valid_acc": acc,
                                           "genotype": self.space.arch_to_json(genotype)})
            else:
                ranked = sorted((s for s in self.derive_scores if s["source"] == "sample" and s["round"] == r),
                                key=lambda s: (s["valid_acc"] != s["valid_acc"], -s["valid_acc"]))
                pick = ranked[j - samples]
                acc = self._full_valid_accuracy(self.space.arch_from_json(pick["genotype"]))
                self.derive_scores.append({"source": "full_valid", "round": r, "valid_acc": acc,
                                           "minibatch_acc": pick["valid_acc"], "genotype": pick["genotype"]})
            yield {"valid_acc": acc}

    def _derive(self, start: int, total: int) -> Iterator[Dict[str, Any]]:
        self._begin_derive(start)
        batch_gen = torch.Generator().manual_seed(self.derive_batch_seed)
        x, y = self.valid_loader.sample_batch(generator=batch_gen)
        for i in range(start, total):
            greedy = self.reinforce is not None and i == 0
            actions = self._sample(greedy=greedy)
            genotype = self.space.decode(actions)
            acc = self.trainer.accuracy(x, y, genotype)
            self.derive_scores.append({"source": "greedy" if greedy else "sample", "valid_acc": acc,
                                       "genotype": self.space.arch_to_json(genotype)})
            yield {"valid_acc": acc}

    def derive_result(self) -> Tuple[Any, Dict[str, Any]]:
        # With full-split re-scores (random search, top_k > 0) only those compete.
        full = [s for s in self.derive_scores if s["source"] == "full_valid"]
        finite = [s for s in full or self.derive_scores if s["valid_acc"] == s["valid_acc"]]
        if not finite:
            raise UserError("every derive candidate scored NaN: the shared weights are not finite "
                            "(learning rate too high or bad data); the checkpoints are kept")
        best = max(finite, key=lambda s: s["valid_acc"])  # first wins ties: greedy preferred
        return self.space.arch_from_json(best["genotype"]), {
            "strategy": self.name, "best_valid_acc": best["valid_acc"], "best_source": best["source"],
            "candidates": self.derive_scores}

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


def uniform_policy(space: Space) -> UniformPolicy:
    return UniformPolicy(space.decisions, distinct_inputs=space.distinct_inputs)
