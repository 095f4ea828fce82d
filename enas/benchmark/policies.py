"""The table-mode policies over the NAS-Bench-201 decisions, built from a :class:`TableConfig`.

NAS-Bench-201 is one decision per edge: ``Decision(cell="cell", node=j-1, slot=k, kind="op",
num_choices=5)`` for edge ``k -> j`` in the edge order of
:data:`shared_model.nb201_arch.EDGES`, choices indexed as :data:`~shared_model.nb201_arch.NB201_OPS`
(``none`` included: it is how the space expresses sparse cells). The ENAS controller walks
these op-only nodes as it walks micro cells (one LSTM step per op, one anchor step per node).

* ``random``: :class:`~controller.uniform.UniformPolicy` (every op 1/5 on every edge).
* ``reinforce``: :class:`~controller.categorical.CategoricalPolicy` trained by
  :class:`~controller.categorical.CategoricalReinforce` (NAS-Bench-201's baseline), rewards in
  percent as in their code.
* ``enas``: :class:`~controller.lstm.Controller` trained by :class:`~controller.reinforce.Reinforce`
  (TensorFlow Adam), rewards scaled by ``enas.reward_scale`` (accuracy / 100).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch

from controller.categorical import CategoricalPolicy, CategoricalReinforce
from controller.evolution import RegularizedEvolution
from controller.lstm import Controller
from controller.reinforce import Reinforce
from controller.tpe import TPEProposer
from controller.uniform import UniformPolicy
from enas.benchmark.table_config import TableConfig
from enas.errors import UserError
from shared_model.nb201_arch import EDGES, NB201_OPS
from shared_model.spaces import Decision

NB201_DECISIONS: Tuple[Decision, ...] = tuple(
    Decision(cell="cell", node=j - 1, slot=i, kind="op", num_choices=len(NB201_OPS)) for j, i in EDGES)


@dataclass
class TablePolicy:
    """A policy and, for the learning ones, its trainer.

    Attributes:
        method: one of :data:`~enas.benchmark.table_config.METHODS`.
        policy: has ``sample(generator)``.
        trainer: has ``update(reward_fn, generator)``, ``state_dict``/``load_state_dict``; None
            for random search.
        reward_scale: the factor from table reward to the trainer's reward.
    """

    method: str
    policy: Any
    trainer: Optional[Any]
    reward_scale: float = 1.0

    def state_dict(self) -> dict:
        return {} if self.trainer is None else self.trainer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.trainer is not None:
            self.trainer.load_state_dict(state)


def make_policy(method: str, cfg: TableConfig, seed: int) -> TablePolicy:
    """Build the policy of ``method``; its initial weights depend only on ``seed``."""
    init = torch.Generator().manual_seed(seed * 2 + 1)  # separate from the sampling stream
    if method == "random":
        return TablePolicy(method, UniformPolicy(NB201_DECISIONS), None)
    if method == "reinforce":
        r = cfg.reinforce
        policy = CategoricalPolicy(NB201_DECISIONS, init_std=r.init_std, generator=init)
        return TablePolicy(method, policy, CategoricalReinforce(policy, lr=r.lr, ema_momentum=r.ema_momentum))
    if method == "enas":
        e = cfg.enas
        with torch.random.fork_rng(devices=[]):  # the controller initialises from the global RNG
            torch.manual_seed(seed * 2 + 1)
            controller = Controller(NB201_DECISIONS, num_ops=len(NB201_OPS), hidden=e.hidden,
                                    tanh_constant=e.tanh_constant, op_tanh_reduce=e.op_tanh_reduce,
                                    temperature=e.temperature)
        trainer = Reinforce(controller, lr=e.lr, betas=(e.beta1, 0.999), eps=e.eps,
                            baseline_decay=e.baseline_decay, entropy_weight=e.entropy_weight,
                            samples_per_update=e.samples_per_update)
        return TablePolicy(method, controller, trainer, reward_scale=e.reward_scale)
    if method == "evolution":
        ev = cfg.evolution
        policy = RegularizedEvolution(NB201_DECISIONS, ev.population, ev.sample)
        return TablePolicy(method, policy, policy)
    if method == "bo":
        b = cfg.bo
        try:
            policy = TPEProposer(NB201_DECISIONS, startup_trials=b.startup_trials, ei_candidates=b.ei_candidates,
                                 multivariate=b.multivariate)
        except ImportError as exc:
            raise UserError(str(exc)) from None
        return TablePolicy(method, policy, policy)
    raise ValueError(f"unknown method {method!r}")


def greedy_actions(tp: TablePolicy) -> Optional[List[int]]:
    """The policy's current mode (None for policies without one: random, evolution, BO)."""
    if tp.trainer is None or tp.trainer is tp.policy:
        return None
    with torch.no_grad():
        return list(tp.policy.sample(greedy=True).actions)
