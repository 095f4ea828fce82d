"""Bayesian optimisation over a space's categorical decisions: Optuna's TPE with ask / tell.

The tree-structured Parzen estimator (Bergstra et al. 2011) models the good and the bad
trials with one density each and proposes the candidate with the best ratio; Optuna's
``multivariate`` variant models the decisions jointly, as BOHB's KDE does (Falkner et al.
2018, the method NAS-Bench-201 ran as "BOHB"). Every decision of the space is one Optuna
``CategoricalDistribution`` over its choice indices; with ``distinct_inputs`` (the DARTS
space) the k-th input of a node has ``n - k`` choices, mapped to the inputs not taken yet
(the re-parametrisation of :class:`~controller.uniform.UniformPolicy`), so every proposal
is valid.

**Exact resume without Optuna's private state.** Before every ``ask`` the sampler is
rebuilt with a seed drawn from the caller's torch generator (which the caller checkpoints).
TPE is a deterministic function of that seed and of the told trials, so the trials (values
and params, in order) and the generator are the sampler's whole state: ``state_dict``
holds plain lists and ``load_state_dict`` replays them into a fresh in-memory study.

Optuna is an optional dependency (``pip install 'enas[bo]'``); :func:`require_optuna`
raises one :class:`ImportError` line saying so.
"""
from __future__ import annotations

import math
import warnings
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import torch

from controller.proposer import Proposer
from controller.uniform import input_exclusions, nth_free
from shared_model.spaces import Decision

INSTALL_HINT = "Bayesian optimisation needs Optuna: pip install 'enas[bo]' (or pip install optuna)"


def require_optuna() -> Any:
    """The ``optuna`` module; ``ImportError`` with :data:`INSTALL_HINT` when it is missing."""
    try:
        import optuna
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    # Optuna prints one INFO line per trial through its own stderr handler; hand its records
    # to the standard logging tree instead (the CLI configures output) and keep warnings only.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class TPEProposer(Proposer):
    """Optuna TPE over a decision list, with the propose / tell interface of the evolution policy.

    Args:
        decisions: the flat decision list of a search space.
        distinct_inputs: ``Space.distinct_inputs``.
        startup_trials: random trials before TPE models (Optuna's ``n_startup_trials``, 10).
        ei_candidates: candidates scored by the density ratio per proposal (``n_ei_candidates``, 24).
        multivariate: one joint density over all decisions (BOHB-like) instead of one per decision.
        population: how many of the latest trials count as the current population
            (``sample_member``, ``stats``; the supernet trains on them).
        history: model only the latest trials, between ``history`` and ``2 * history`` of them
            (None: all). A TPE proposal costs time linear in the trials it models, and on a
            supernet old rewards were measured with older weights.
    """

    def __init__(self, decisions: Sequence[Decision], distinct_inputs: bool = False, startup_trials: int = 10,
                 ei_candidates: int = 24, multivariate: bool = True, population: int = 10,
                 history: Optional[int] = None) -> None:
        optuna = require_optuna()
        if startup_trials < 0 or ei_candidates < 1 or population < 1 or (history is not None and history < 1):
            raise ValueError(f"need startup_trials >= 0, ei_candidates >= 1, population >= 1 and history >= 1, "
                             f"got {startup_trials}, {ei_candidates}, {population}, {history}")
        self._optuna = optuna
        self.decisions: Tuple[Decision, ...] = tuple(decisions)
        self._exclude = input_exclusions(self.decisions, distinct_inputs)
        self._names = [f"d{k:03d}_{d.cell}_n{d.node}_{d.kind}{d.slot}" for k, d in enumerate(self.decisions)]
        dist = optuna.distributions.CategoricalDistribution
        self._distributions = {name: dist(tuple(range(d.num_choices - len(ex))))
                               for name, d, ex in zip(self._names, self.decisions, self._exclude)}
        self.startup_trials, self.ei_candidates = int(startup_trials), int(ei_candidates)
        self.multivariate, self.population_size = bool(multivariate), int(population)
        self.history = None if history is None else int(history)
        self.study = self._optuna.create_study(direction="maximize")
        self._study_start = 0  # index in ``trials`` of the study's first trial
        # Every told trial in order: (choice indices, reward or None for a failed / rejected one).
        self.trials: List[Tuple[List[int], Optional[float]]] = []
        self._pending: Optional[Tuple[Any, List[int], List[int]]] = None
        self._recent: Deque[Tuple[List[int], float]] = deque(maxlen=self.population_size)

    def _window_start(self) -> int:
        """First trial TPE models: 0, or once there are 2H trials a multiple of H leaving H..2H-1."""
        n = len(self.trials)
        if self.history is None or n < 2 * self.history:
            return 0
        return self.history * (n // self.history - 1)

    def _rebuild(self) -> None:
        """A fresh study holding ``trials[_window_start():]`` (the only Optuna state there is)."""
        create, states = self._optuna.trial.create_trial, self._optuna.trial.TrialState
        start = self._window_start()
        frozen = []
        for choices, reward in self.trials[start:]:
            params = dict(zip(self._names, choices))
            frozen.append(create(state=states.FAIL, params=params, distributions=self._distributions)
                          if reward is None else
                          create(state=states.COMPLETE, value=reward, params=params, distributions=self._distributions))
        self.study = self._optuna.create_study(direction="maximize")
        self.study.add_trials(frozen)
        self._study_start = start

    def _told(self, choices: List[int], reward: Optional[float]) -> None:
        self.trials.append((choices, reward))
        if reward is not None:
            self._recent.append((self._to_actions(choices), reward))
        if self._window_start() != self._study_start:
            self._rebuild()

    # -- propose / tell --------------------------------------------------------
    def propose(self, generator: Optional[torch.Generator] = None) -> List[int]:
        """Ask TPE for the next architecture (its actions); the sampler is seeded from ``generator``."""
        if self._pending is not None:
            raise RuntimeError("tell or reject the previous proposal before asking for another")
        seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self._optuna.exceptions.ExperimentalWarning)
            self.study.sampler = self._optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=self.startup_trials, n_ei_candidates=self.ei_candidates,
                multivariate=self.multivariate)
            trial = self.study.ask(self._distributions)
        choices = [int(trial.params[name]) for name in self._names]
        actions = self._to_actions(choices)
        self._pending = (trial, actions, choices)
        return actions

    def _to_actions(self, choices: Sequence[int]) -> List[int]:
        actions: List[int] = []
        for c, exclude in zip(choices, self._exclude):
            actions.append(nth_free(int(c), [actions[p] for p in exclude]))
        return actions

    def _take_pending(self, actions: Sequence[int]) -> Tuple[Any, List[int]]:
        if self._pending is None or [int(a) for a in actions] != self._pending[1]:
            raise RuntimeError("tell / reject the architecture of the last propose()")
        trial, _, choices = self._pending
        self._pending = None
        return trial, choices

    def tell(self, actions: Sequence[int], reward: float) -> None:
        """Report the reward of the last proposal; a non-finite reward is told as a failed trial."""
        trial, choices = self._take_pending(actions)
        reward = float(reward)
        if math.isfinite(reward):
            self.study.tell(trial, reward)
            self._told(choices, reward)
        else:
            self.study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
            self._told(choices, None)

    def reject(self, actions: Sequence[int]) -> None:
        """Discard the last proposal unevaluated (a failed trial: TPE does not model it)."""
        trial, choices = self._take_pending(actions)
        self.study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
        self._told(choices, None)

    # -- population (the latest trials) ----------------------------------------
    def scored_members(self) -> List[Tuple[List[int], float]]:
        """The latest ``population`` successful trials' actions and rewards, oldest first."""
        return [(list(a), r) for a, r in self._recent]

    def extra_stats(self) -> Dict[str, float]:
        return {"trials": float(len(self.trials))}

    # -- checkpoint ------------------------------------------------------------
    def state_dict(self) -> dict:
        """The told trials as plain lists (a pending proposal is not part of the state)."""
        return {"choices": [c for c, _ in self.trials],
                "rewards": [math.nan if r is None else r for _, r in self.trials],
                "failed": [r is None for _, r in self.trials]}

    def load_state_dict(self, state: dict) -> None:
        self.trials = [([int(c) for c in choices], None if failed else float(reward))
                       for choices, reward, failed in zip(state["choices"], state["rewards"], state["failed"])]
        self._rebuild()
        self._pending = None
        told = [(self._to_actions(c), r) for c, r in self.trials if r is not None]
        self._recent = deque(told[-self.population_size:], maxlen=self.population_size)
