"""REINFORCE with a moving-average baseline for the ENAS controller (Pham et al. 2018, Sec. 2.2).

Follows the official CIFAR micro scripts (REFERENCE Sec. 2): the reward of a
sample is its child's validation accuracy plus ``entropy_weight`` times the
sample entropy; the baseline is an exponential moving average updated with each
reward *before* the advantage is taken; the loss is ``-log pi(a) (R - b)``; the
gradients of ``samples_per_update`` samples are averaged into one Adam step
(the official code aggregates 10 replicas' gradients).

Extra loss terms (``loss_terms``) are added to each sample's loss before the
average, e.g. the macro controller's skip penalty (official
``general_controller.build_trainer``: ``loss += skip_weight * skip_penaltys``):
:class:`ExtraLoss` weights one of the per-sample ``extras`` a policy attaches.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from controller.policy import LSTMPolicy, Sample
from controller.tf_adam import TFAdam

logger = logging.getLogger(__name__)

#: Maps an action list to a raw reward: a float, or a 0-d tensor read together with the others.
RewardFn = Callable[[List[int]], Union[float, torch.Tensor]]
#: Maps all of an update's action lists to their raw rewards, in order (e.g. scored by several processes).
RewardsFn = Callable[[List[List[int]]], Sequence[Union[float, torch.Tensor]]]
#: A differentiable scalar added to one sample's loss.
LossTerm = Callable[[Sample], torch.Tensor]


def host_floats(values: Sequence[Union[float, torch.Tensor]]) -> List[float]:
    """Python floats of ``values``; their tensors are stacked and copied to the host at once."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors:
        return [float(v) for v in values]
    host = iter(torch.stack([t.detach().reshape(()).double() for t in tensors]).cpu().tolist())
    return [next(host) if isinstance(v, torch.Tensor) else float(v) for v in values]


@dataclass(frozen=True)
class ExtraLoss:
    """The loss term ``weight * sample.extras[key]`` (e.g. ``ExtraLoss("skip_kl", 0.8)``)."""

    key: str
    weight: float

    def __call__(self, sample: Sample) -> torch.Tensor:
        try:
            value = sample.extras[self.key]
        except KeyError:
            raise ValueError(f"the policy's samples carry no {self.key!r} (extras: "
                             f"{', '.join(sorted(sample.extras)) or 'none'})") from None
        return self.weight * value


class Reinforce:
    """The controller's policy-gradient trainer.

    Args:
        controller: the policy; needs ``sample_batch(n, generator)`` returning
            :class:`~controller.lstm.Sample` objects with a differentiable ``log_prob``.
        lr: Adam learning rate (official 0.0035, constant).
        betas: Adam betas (official beta1 = 0).
        eps: TensorFlow's Adam epsilon ("epsilon hat", official 1e-3); the update is
            TensorFlow's (:class:`~controller.tf_adam.TFAdam`), not PyTorch's.
        baseline_decay: EMA decay of the baseline, ``b <- b - (1 - decay)(b - R)``.
        entropy_weight: weight of the sample entropy added to the reward.
        samples_per_update: architectures whose gradients one step averages.
        grad_clip: max global gradient norm, ``None`` for no clipping (official).
        loss_terms: name -> term added to each sample's loss (:class:`ExtraLoss`);
            each term's mean over the update is reported under its name.
    """

    def __init__(self, controller: LSTMPolicy, lr: float = 0.0035,
                 betas: Tuple[float, float] = (0.0, 0.999), eps: float = 1e-3,
                 baseline_decay: float = 0.99, entropy_weight: float = 1e-4,
                 samples_per_update: int = 10, grad_clip: Optional[float] = None,
                 loss_terms: Optional[Mapping[str, LossTerm]] = None) -> None:
        if samples_per_update < 1:
            raise ValueError(f"samples_per_update must be >= 1, got {samples_per_update}")
        if not 0.0 <= baseline_decay <= 1.0:
            raise ValueError(f"baseline_decay must lie in [0, 1], got {baseline_decay}")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {grad_clip}")
        self.controller = controller
        # The official controller is trained with tf.train.AdamOptimizer: same rule here.
        self.optimizer = TFAdam(controller.parameters(), lr=lr, betas=tuple(betas), eps=eps)
        self.baseline_decay = baseline_decay
        self.entropy_weight = entropy_weight
        self.samples_per_update = samples_per_update
        self.grad_clip = grad_clip
        self.loss_terms: Dict[str, LossTerm] = dict(loss_terms or {})
        self.baseline = 0.0
        self.num_updates = 0

    def update(self, reward_fn: Optional[RewardFn], generator: Optional[torch.Generator] = None,
               rewards_fn: Optional[RewardsFn] = None) -> dict:
        """Sample, score and take one Adam step.

        Args:
            reward_fn: maps an action list to a raw reward (e.g. the child's
                accuracy on one validation batch), a float or a 0-d tensor; all
                rewards of the update are computed before any is read. A
                non-finite value skips the sample: it reaches neither the
                baseline nor the gradient.
            generator: random source for sampling.
            rewards_fn: instead of ``reward_fn``, the raw rewards of all the update's
                action lists at once, in order (e.g. scored by several processes).

        Returns:
            ``reward`` (mean reward with entropy bonus), ``raw_reward``,
            ``baseline`` (after the update), ``entropy``, ``loss`` (means over
            finite samples, NaN if none), ``skipped_nonfinite``, ``num_samples``,
            ``grad_norm`` (NaN when no step) and ``best_actions`` / ``best_reward``
            (highest raw reward of this update; ``None`` / NaN if none); then the
            mean of each loss term and of each of the samples' ``extras``, by name.
        """
        self.controller.train()
        samples = self.controller.sample_batch(self.samples_per_update, generator=generator)
        losses: List[torch.Tensor] = []
        rewards, raws, entropies = [], [], []
        best: Tuple[Optional[List[int]], float] = (None, math.nan)
        skipped = 0
        terms: Dict[str, List[float]] = {}
        extras: Dict[str, List[float]] = {}
        actions = [list(s.actions) for s in samples]
        # All rewards first, then one host copy: a reward may be a device tensor (the child's
        # accuracy), and reading each one on its own would wait for the device every time.
        raw_values = host_floats(list(rewards_fn(actions)) if rewards_fn is not None
                                 else [reward_fn(a) for a in actions])
        entropy_values = host_floats([s.entropy.detach() for s in samples])
        for s, raw, entropy in zip(samples, raw_values, entropy_values):
            reward = raw + self.entropy_weight * entropy
            if not math.isfinite(reward):
                skipped += 1
                logger.warning("skipping a controller sample with non-finite reward %r", raw)
                continue
            self.baseline -= (1.0 - self.baseline_decay) * (self.baseline - reward)
            loss = -s.log_prob * (reward - self.baseline)
            for name, term in self.loss_terms.items():
                value = term(s)
                loss = loss + value
                terms.setdefault(name, []).append(float(value.detach()))
            for name, value in s.extras.items():
                extras.setdefault(name, []).append(float(value.detach()))
            losses.append(loss)
            rewards.append(reward)
            raws.append(raw)
            entropies.append(entropy)
            if best[0] is None or raw > best[1]:
                best = (list(s.actions), raw)

        grad_norm = math.nan
        loss_value = math.nan
        if losses:
            loss = torch.stack(losses).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # With no clipping an infinite bound only measures the norm.
            bound = self.grad_clip if self.grad_clip is not None else math.inf
            grad_norm = float(nn.utils.clip_grad_norm_(self.controller.parameters(), bound))
            self.optimizer.step()
            self.num_updates += 1
            loss_value = float(loss.detach())
        else:
            logger.warning("all %d controller samples had non-finite rewards; no update", len(samples))

        def mean(xs: Sequence[float]) -> float:
            return sum(xs) / len(xs) if xs else math.nan

        return {
            "reward": mean(rewards),
            "raw_reward": mean(raws),
            "baseline": self.baseline,
            "entropy": mean(entropies),
            "loss": loss_value,
            "skipped_nonfinite": skipped,
            "num_samples": len(samples),
            "grad_norm": grad_norm,
            "best_actions": best[0],
            "best_reward": best[1],
            **{name: mean(values) for name, values in extras.items()},
            **{name: mean(values) for name, values in terms.items()},
        }

    def state_dict(self) -> dict:
        """Controller weights, Adam state, baseline and update count.

        Only tensors, numbers, strings, lists and dicts, so the result loads
        with ``torch.load(weights_only=True)``.
        """
        return {
            "controller": self.controller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": float(self.baseline),
            "num_updates": int(self.num_updates),
        }

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = float(state["baseline"])
        self.num_updates = int(state.get("num_updates", 0))
