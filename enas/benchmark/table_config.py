"""Config of table-mode search (``enas table nb201``): dataclass defaults -> preset -> file -> flags.

Sections (every key is checked; an unknown key is an error naming it):

* top level: ``methods`` (``random``, ``reinforce``, ``enas``, ``evolution``, ``bo``; default all,
  ``bo`` only with Optuna installed), ``seeds`` (runs per method, seeds
  ``0..seeds-1``), ``enas_preset`` (``benchmark`` or ``search``), ``checkpoint_every`` (queries),
  ``tensorboard``.
* ``budget``: ``queries`` or ``seconds`` (exactly one; neither given = NAS-Bench-201's 12,000 s).
* ``columns``: ``reward`` (searched on, default ``valid_acc_epoch12``), ``report`` (reported,
  ``test_acc``), ``cost`` (charged to the time budget, ``train_time_s``).
* ``reinforce``: ``lr`` 0.5, ``ema_momentum`` 0.9, ``init_std`` 1e-3 (NAS-Bench-201's REINFORCE,
  :mod:`controller.categorical`).
* ``enas``: the LSTM controller and its REINFORCE (:mod:`controller.lstm`,
  :mod:`controller.reinforce`); values from ``enas_preset``.
* ``evolution``: regularized evolution (:mod:`controller.evolution`), ``population`` 10 and
  ``sample`` 3, as NAS-Bench-201 ran REA (``scripts-search/algos/R-EA.sh cifar10 3``:
  ``--ea_population 10 --ea_sample_size 3``, 12,000 s).
* ``bo``: Optuna TPE (:mod:`controller.tpe`; ``pip install 'enas[bo]'``): ``startup_trials``
  10, ``ei_candidates`` 24 (Optuna's defaults), ``multivariate`` true.

The ``enas`` presets. ``search`` is the official ENAS micro-search controller (REFERENCE Sec. 2):
tanh 1.10 / 2.5, Adam 0.0035, baseline 0.99, 10 samples per update, built for 30 updates after
each epoch over 45,000 training images. On a table every sample is one query, and a whole
search is a few hundred queries: with 10 samples per step and a 0.99 baseline the controller
would take a few dozen steps and its baseline would still be near its start. ``benchmark``
(the default) keeps the architecture and the TensorFlow Adam but learns from every query:
1 sample per update, lr 0.03, baseline decay 0.9 (the baseline follows about the last 10
rewards), tanh constant 2.5 with no op reduction (op logits in [-2.5, 2.5]: the policy can
concentrate on an op, at most e^5 = 148 times more likely than another), no entropy bonus,
rewards scaled to [0, 1] (table accuracy / 100). The values were chosen by a grid (lr 0.01 /
0.03 / 0.1 x baseline decay 0.8 / 0.9 / 0.95 x entropy weight 0 / 0.01) on synthetic table seed
1 with run seeds 100-109 (scripts/bench_table.py), and are reported on table seed 0 with other
run seeds; never on the official table.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from controller.tpe import require_optuna
from enas.config.lib import layer_config
from enas.errors import UserError

logger = logging.getLogger(__name__)

METHODS = ("random", "reinforce", "enas", "evolution", "bo")
ENAS_PRESETS = ("benchmark", "search")
NB201_BUDGET_SECONDS = 12000.0  # NAS-Bench-201's simulated search budget on CIFAR-10


@dataclass
class BudgetConfig:
    queries: Optional[int] = None
    seconds: Optional[float] = None


@dataclass
class ColumnsConfig:
    reward: str = "valid_acc_epoch12"
    report: str = "test_acc"
    cost: str = "train_time_s"


@dataclass
class ReinforceConfig:
    lr: float = 0.5
    ema_momentum: float = 0.9
    init_std: float = 1e-3


@dataclass
class EnasTableConfig:
    hidden: int = 64
    tanh_constant: Optional[float] = 2.5
    op_tanh_reduce: float = 1.0
    temperature: Optional[float] = None
    lr: float = 0.03
    beta1: float = 0.0
    eps: float = 1e-3
    baseline_decay: float = 0.9
    entropy_weight: float = 0.0
    samples_per_update: int = 1
    reward_scale: float = 0.01


@dataclass
class EvolutionTableConfig:
    population: int = 10
    sample: int = 3


@dataclass
class BOTableConfig:
    startup_trials: int = 10
    ei_candidates: int = 24
    multivariate: bool = True


@dataclass
class TableConfig:
    methods: Optional[List[str]] = None  # None: every method (bo only when Optuna is installed)
    seeds: int = 10
    enas_preset: str = "benchmark"
    checkpoint_every: int = 50
    tensorboard: bool = True
    benchmark: str = ""
    benchmark_sha256: str = ""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    enas: EnasTableConfig = field(default_factory=EnasTableConfig)
    evolution: EvolutionTableConfig = field(default_factory=EvolutionTableConfig)
    bo: BOTableConfig = field(default_factory=BOTableConfig)


def enas_preset(name: str) -> Dict[str, Any]:
    """Overrides of the ``enas`` section for a preset (``benchmark`` is the dataclass default)."""
    if name == "benchmark":
        return {}
    if name == "search":
        return {"enas.tanh_constant": 1.10, "enas.op_tanh_reduce": 2.5, "enas.lr": 0.0035,
                "enas.baseline_decay": 0.99, "enas.entropy_weight": 1e-4, "enas.samples_per_update": 10}
    raise UserError(f"unknown enas preset {name!r} (known: {', '.join(ENAS_PRESETS)})")


def build_table_config(preset: Optional[str], file_data: Optional[Mapping[str, Any]],
                       flags: Mapping[str, Any]) -> TableConfig:
    """Layer defaults, the ``enas`` preset, a config file and flags; then validate."""
    cfg = TableConfig()
    name = flags.get("enas_preset") or (file_data or {}).get("enas_preset") or preset or "benchmark"
    layer_config(cfg, {"enas_preset": name}, lambda: enas_preset(cfg.enas_preset), file_data, flags)
    validate_table_config(cfg)
    return cfg


def available_methods() -> List[str]:
    """Every method, less ``bo`` when Optuna is missing (it is an optional extra)."""
    try:
        require_optuna()
    except ImportError:
        logger.warning("Optuna is not installed: method 'bo' left out (pip install 'enas[bo]')")
        return [m for m in METHODS if m != "bo"]
    return list(METHODS)


def validate_table_config(cfg: TableConfig) -> None:
    """Range checks; every problem is one line naming the key."""
    if cfg.methods is None:
        cfg.methods = available_methods()
    if not cfg.methods:
        raise UserError("config key 'methods': name at least one method")
    for m in cfg.methods:
        if m not in METHODS:
            raise UserError(f"config key 'methods': unknown method {m!r} (known: {', '.join(METHODS)})")
    if len(set(cfg.methods)) != len(cfg.methods):
        raise UserError("config key 'methods': a method is listed twice")
    if "bo" in cfg.methods:
        try:
            require_optuna()
        except ImportError as exc:
            raise UserError(str(exc)) from None
    if cfg.enas_preset not in ENAS_PRESETS:
        raise UserError(f"config key 'enas_preset': unknown preset {cfg.enas_preset!r}")
    if not 1 <= cfg.seeds <= 10_000:
        raise UserError(f"config key 'seeds': needs 1..10000 runs per method, got {cfg.seeds}")
    if cfg.checkpoint_every < 1:
        raise UserError(f"config key 'checkpoint_every': must be >= 1, got {cfg.checkpoint_every}")
    b = cfg.budget
    if b.queries is not None and b.seconds is not None:
        raise UserError("budget: give queries or seconds, not both")
    if b.queries is None and b.seconds is None:
        b.seconds = NB201_BUDGET_SECONDS
    if b.queries is not None and not 1 <= b.queries <= 10_000_000:
        raise UserError(f"config key 'budget.queries': needs 1..10000000, got {b.queries}")
    if b.seconds is not None and not 0 < b.seconds <= 1e12:
        raise UserError(f"config key 'budget.seconds': needs a positive number, got {b.seconds}")
    r, e = cfg.reinforce, cfg.enas
    checks = [("reinforce.lr", r.lr > 0), ("reinforce.ema_momentum", 0 <= r.ema_momentum < 1),
              ("reinforce.init_std", r.init_std >= 0), ("enas.hidden", 1 <= e.hidden <= 4096),
              ("enas.tanh_constant", e.tanh_constant is None or 0 < e.tanh_constant <= 100),
              ("enas.op_tanh_reduce", e.op_tanh_reduce >= 0.01),
              ("enas.temperature", e.temperature is None or e.temperature >= 0.01),
              ("enas.lr", e.lr > 0), ("enas.beta1", 0 <= e.beta1 < 1), ("enas.eps", e.eps > 0),
              ("enas.baseline_decay", 0 <= e.baseline_decay <= 1), ("enas.entropy_weight", e.entropy_weight >= 0),
              ("enas.samples_per_update", 1 <= e.samples_per_update <= 1000), ("enas.reward_scale", e.reward_scale > 0),
              ("evolution.population", 1 <= cfg.evolution.population <= 100_000),
              ("evolution.sample", 1 <= cfg.evolution.sample <= 100_000),
              ("bo.startup_trials", 0 <= cfg.bo.startup_trials <= 100_000),
              ("bo.ei_candidates", 1 <= cfg.bo.ei_candidates <= 100_000)]
    for key, ok in checks:
        if not ok:
            section, name = key.split(".")
            raise UserError(f"config key {key!r}: value {getattr(getattr(cfg, section), name)!r} is out of range")


def to_plain(cfg: TableConfig) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)
