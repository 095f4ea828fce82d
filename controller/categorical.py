"""Independent categorical logits per decision, trained by REINFORCE as NAS-Bench-201 ran it.

NAS-Bench-201's REINFORCE baseline (Dong & Yang, ICLR 2020, Sec. 5; AutoDL-Projects
``exps/NAS-Bench-201-algos/reinforce.py``) keeps one row of learnable logits per edge,
initialised ``1e-3 * N(0, 1)``, samples every edge independently from their softmax, and
after every single sample takes one step on ``-log pi(a) (R - b)``:

* the reward ``R`` is the 12-epoch validation accuracy in percent, the cost of the query is
  charged to the simulated time budget (12,000 s on CIFAR-10);
* the baseline ``b`` is an exponential moving average with momentum 0.9 that is updated with
  ``R`` *before* the advantage is taken and is bias-corrected (running numerator over running
  denominator, so the first baseline equals the first reward);
* the optimizer is PyTorch's Adam with its default betas and epsilon; the learning rate of the
  published runs is 0.5 (``docs/NAS-Bench-201.md``: ``REINFORCE.sh 0.5 -1``; the grid of
  ``hps/GRID-RL.sh`` spans 0.01-0.5).

:class:`CategoricalPolicy` has the ``sample`` / ``sample_batch`` / ``log_prob`` interface of
:class:`~controller.lstm.Controller`; :class:`CategoricalReinforce` has the ``update`` interface
of :class:`~controller.reinforce.Reinforce`.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from controller.lstm import Sample, plan_decisions
from shared_model.spaces import Decision

logger = logging.getLogger(__name__)


class CategoricalPolicy(nn.Module):
    """One independent categorical distribution per decision.

    Args:
        decisions: the flat decision list (any kinds; each is a plain categorical here).
        init_std: the logits start ``init_std * N(0, 1)`` (NAS-Bench-201: 1e-3).
        generator: random source of the initial logits (the global one if None).
    """

    def __init__(self, decisions: Sequence[Decision], init_std: float = 1e-3,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        self.decisions: Tuple[Decision, ...] = tuple(decisions)
        plan_decisions(self.decisions, skips=True)  # same validation as the other policies
        width = max(d.num_choices for d in self.decisions)
        init = init_std * torch.randn(len(self.decisions), width, generator=generator)
        self.logits = nn.Parameter(init)
        mask = torch.zeros(len(self.decisions), width)
        for k, d in enumerate(self.decisions):
            mask[k, d.num_choices:] = -math.inf  # decisions with fewer choices
        self.register_buffer("mask", mask)

    @property
    def num_decisions(self) -> int:
        return len(self.decisions)

    def _log_probs(self) -> torch.Tensor:
        return (self.logits + self.mask).log_softmax(dim=1)  # (D, K)

    def _score(self, log_p: torch.Tensor, actions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(self.num_decisions)
        log_prob = log_p[rows[None, :], actions].sum(dim=1)  # (B,)
        p = log_p.exp()
        entropy = -(p * log_p.masked_fill(p == 0, 0.0)).sum()
        return log_prob, entropy.expand(actions.shape[0])

    def sample_batch(self, n: int, generator: Optional[torch.Generator] = None,
                     greedy: bool = False) -> List[Sample]:
        """``n`` independent architectures (``greedy``: the argmax of every row)."""
        if n < 1:
            raise ValueError(f"need at least one sample, got {n}")
        log_p = self._log_probs()
        if greedy:
            actions = log_p.argmax(dim=1).expand(n, -1)
        else:
            probs = log_p.detach().exp()
            actions = torch.multinomial(probs, n, replacement=True, generator=generator).T  # (n, D)
        log_prob, entropy = self._score(log_p, actions)
        return [Sample(a, log_prob[i], entropy[i]) for i, a in enumerate(actions.tolist())]

    def sample(self, generator: Optional[torch.Generator] = None, greedy: bool = False) -> Sample:
        return self.sample_batch(1, generator=generator, greedy=greedy)[0]

    def forward(self, actions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """log_prob ``(B,)`` and entropy ``(B,)`` of a ``(B, D)`` action batch."""
        if actions.dim() != 2 or actions.shape[1] != self.num_decisions:
            raise ValueError(f"expected actions of shape (B, {self.num_decisions}), got {tuple(actions.shape)}")
        bad = [(k, int(a)) for k, (a, d) in enumerate(zip(actions.max(dim=0).values, self.decisions))
               if a >= d.num_choices] + [(k, int(a)) for k, a in enumerate(actions.min(dim=0).values) if a < 0]
        if bad:
            raise ValueError(f"action {bad[0][1]} at decision {bad[0][0]} is out of range")
        return self._score(self._log_probs(), actions.long())

    def log_prob(self, actions: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        log_prob, entropy = self(torch.as_tensor([list(actions)], dtype=torch.long))
        return log_prob[0], entropy[0]

    def probabilities(self) -> torch.Tensor:
        """``(D, K)`` current choice probabilities (for logs)."""
        with torch.no_grad():
            return self._log_probs().exp()


class CategoricalReinforce:
    """NAS-Bench-201's REINFORCE: one sample per step, debiased EMA baseline, PyTorch Adam.

    Args:
        policy: a :class:`CategoricalPolicy` (any policy with a differentiable ``log_prob``).
        lr: Adam learning rate (published NAS-Bench-201 runs: 0.5).
        ema_momentum: baseline momentum (0.9).
    """

    def __init__(self, policy: CategoricalPolicy, lr: float = 0.5, ema_momentum: float = 0.9) -> None:
        if not 0.0 <= ema_momentum < 1.0:
            raise ValueError(f"ema_momentum must lie in [0, 1), got {ema_momentum}")
        self.policy = policy
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
        self.ema_momentum = ema_momentum
        self._num, self._den = 0.0, 0.0
        self.num_updates = 0

    @property
    def baseline(self) -> float:
        return self._num / self._den if self._den > 0 else 0.0

    def update(self, reward_fn: Callable[[List[int]], float],
               generator: Optional[torch.Generator] = None) -> dict:
        """Sample one architecture, score it with ``reward_fn`` and take one Adam step.

        A non-finite reward is skipped (no baseline update, no step).
        """
        sample = self.policy.sample(generator)
        reward = float(reward_fn(list(sample.actions)))
        if not math.isfinite(reward):
            logger.warning("skipping a sample with non-finite reward %r", reward)
            return {"reward": reward, "baseline": self.baseline, "loss": math.nan,
                    "entropy": float(sample.entropy.detach()), "skipped_nonfinite": 1}
        m = self.ema_momentum
        self._num = m * self._num + (1.0 - m) * reward
        self._den = m * self._den + (1.0 - m)
        loss = -sample.log_prob * (reward - self.baseline)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        return {"reward": reward, "baseline": self.baseline, "loss": float(loss.detach()),
                "entropy": float(sample.entropy.detach()), "skipped_nonfinite": 0}

    def state_dict(self) -> dict:
        """Plain data only (loads with ``torch.load(weights_only=True)``)."""
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ema": [float(self._num), float(self._den)], "num_updates": int(self.num_updates)}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._num, self._den = (float(x) for x in state["ema"])
        self.num_updates = int(state["num_updates"])
