"""Configuration of ``enas search``: one dataclass per section, layering and validation.

Defaults are the official ENAS micro-search script values (REFERENCE Sec. 2-3,
``scripts/cifar10_micro_search.sh``); the per-strategy defaults and the presets
(``paper``, ``quick``, ``mobile``) are in :mod:`enas.config.search_presets`.
Layering: dataclass defaults -> preset -> the space's own sizes -> config file ->
CLI flags (:func:`build_search_config`), then :func:`validate_search_config`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from enas.config.sections import (DataSourceConfig, OptimConfig, RunConfig, optim_checks, raise_first_failure,
                                  run_checks, shared_checks)
from enas.config.lib import layer_config
from enas.config.search_presets import (CELL_OUTPUTS, DEFAULT_SPACE, DEFAULT_UPDATE_OFF_PATH, STRATEGIES,
                                        default_aux_trainable, default_cell_output, mobile_network,
                                        preset_overrides)
from enas.errors import UserError


@dataclass
class DataConfig(DataSourceConfig):
    valid_fraction: float = 0.1  # ignored for cifar10 (last 5k of train)
    batch_size: int = 160
    eval_batch_size: Optional[int] = None  # None: batch_size
    pad: int = 4
    flip: bool = True
    cutout: int = 0


@dataclass
class ModelConfig:
    space: Optional[str] = None  # micro | darts | nb201 | macro; None: the strategy's default
    num_nodes: Optional[int] = None  # None: the space's default
    ops: Optional[List[str]] = None  # None: the space's default op list
    channels: int = 20
    layers: int = 8  # all cells: ENAS "6 + 2"
    stem_multiplier: int = 3
    auxiliary: bool = True
    aux_weight: float = 0.4
    dropout: float = 0.1  # ENAS keep_prob 0.9 before the classifier
    cell_output: Optional[str] = None  # conv | concat; None: the strategy's network (below)
    # Train the aux head's weights (with model.auxiliary); None: default_aux_trainable below.
    aux_trainable: Optional[bool] = None


@dataclass
class SearchOptimConfig(OptimConfig):
    # The official ENAS child passes grad_bound 5 with clip_mode "norm", but that branch of
    # src/utils.py get_train_ops collects the unclipped gradient, so the official search never
    # clips: no clipping is the faithful ENAS default. DARTS (5) and random search (1, Li &
    # Talwalkar's scripts/run_experiment.sh) set their own bound in their presets.
    grad_clip: Optional[float] = None
    # Weight decay and momentum also for op banks off the sampled path (ChildTrainer);
    # None: the strategy's faithful value, DEFAULT_UPDATE_OFF_PATH.
    update_off_path: Optional[bool] = None


@dataclass
class ControllerConfig:
    hidden: int = 64
    tanh_constant: Optional[float] = 1.10
    op_tanh_reduce: float = 2.5
    temperature: Optional[float] = None
    official_op_bias: bool = True  # op bias init [10, 10, 0, 0, 0] and normal-cell prior
    lr: float = 0.0035
    beta1: float = 0.0
    eps: float = 1e-3  # TensorFlow's "epsilon hat" (controller.tf_adam.TFAdam applies TF's rule)
    baseline_decay: float = 0.99
    entropy_weight: float = 1e-4
    samples_per_update: int = 10
    updates_per_epoch: int = 30
    # Macro controller only (official general_controller): the skip penalty
    # skip_weight * KL(skip probability || skip_target) added to each sample's loss.
    skip_target: float = 0.4
    skip_weight: float = 0.8


@dataclass
class DartsConfig:
    order: int = 1
    arch_lr: float = 3e-4
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3
    train_portion: float = 0.5
    unrolled_r: float = 0.01  # finite-difference scale of the second-order step


@dataclass
class EvolutionConfig:
    # Regularized evolution on the supernet (enas/search/population.py): population P and
    # tournament sample S of Real et al.'s CIFAR-10 search; the table mode uses NAS-Bench-201's
    # P 10, S 3 (enas/benchmark/table_config.py).
    population: int = 100
    sample: int = 25
    cycles_per_epoch: int = 100  # proposals scored per epoch (one validation minibatch each)
    explore: float = 0.2  # share of training steps on a uniform random path instead of a member


@dataclass
class BOConfig:
    # Optuna TPE on the supernet (controller/tpe.py); needs pip install 'enas[bo]'.
    trials_per_epoch: int = 30  # 150 epochs: 4,500 trials
    population: int = 100  # the latest trials the training steps draw from (and derive re-scores)
    history: int = 500  # TPE models the latest 500..999 trials (bounds a proposal's cost, drops stale rewards)
    explore: float = 0.2
    startup_trials: int = 10  # Optuna's n_startup_trials
    ei_candidates: int = 24  # Optuna's n_ei_candidates
    multivariate: bool = True  # one joint density (BOHB-like) rather than one per decision


@dataclass
class DeriveConfig:
    samples: int = 100  # candidates (random: per round)
    # Random search only (Li & Talwalkar 2019, searchers/random_weight_share.py get_eval_arch):
    # rounds of ``samples`` uniform candidates, each scored on ``eval_batches`` validation
    # minibatches; the ``top_k`` best of a round are re-scored on the whole validation split.
    rounds: Optional[int] = None  # None: max(1, training steps // 10000), their rule
    eval_batches: int = 1
    top_k: int = 0


@dataclass
class CostConfig:
    """Hardware-aware search (README "Searching for a device"): what a child network costs and the budget."""

    model: Optional[str] = None  # params | macs | latency | package.module:factory; None: no cost
    target: Optional[float] = None  # in the model's unit (params, MACs, ms); None: costs are only logged
    constraint: str = "soft"  # soft (MnasNet reward) | hard (reject and resample) | both
    reward: str = "mnasnet"  # mnasnet: acc * (c/T)^w, w = alpha if c <= T else beta | proxyless: acc * (T/c)^exponent
    alpha: float = -0.07  # MnasNet Sec. 3
    beta: float = -0.07
    exponent: float = 0.1  # ProxylessNAS Sec. 3.3
    max_tries: int = 1000  # hard constraint: draws per architecture before the budget counts as infeasible
    darts_weight: float = 0.1  # DARTS: loss + darts_weight * expected cost / target
    lut: Optional[str] = None  # latency table; None with model latency: measured into RUN/latency_table.json
    channels: Optional[int] = None  # the priced child network; None: model.channels
    layers: Optional[int] = None  # None: model.layers
    batch_size: int = 1  # the table measured when cost.lut is unset: batch, device, threads
    device: str = "cpu"
    threads: int = 1
    clock: str = "wall"  # wall | cpu (the measuring thread's CPU time: robust on a busy machine, 1 thread)


@dataclass
class SearchRunConfig(RunConfig):
    # Per-op acceleration of the supernet (shared_model.accel, docs/performance.md): compile every
    # op-bank module once per input shape, or capture its forward and backward as CUDA graphs
    # (CUDA only). Neither wins on CPU; they exclude each other.
    compile: bool = False
    cuda_graphs: bool = False


@dataclass
class SearchConfig:
    strategy: str = "enas"  # enas | darts | random | evolution | bo
    preset: str = "paper"
    epochs: int = 150
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: SearchOptimConfig = field(default_factory=SearchOptimConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    darts: DartsConfig = field(default_factory=DartsConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    bo: BOConfig = field(default_factory=BOConfig)
    derive: DeriveConfig = field(default_factory=DeriveConfig)
    run: SearchRunConfig = field(default_factory=SearchRunConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    # A benchmark table (CSV, README "Benchmarking with NAS-Bench-201") to score the run's
    # architectures with at the end (nb201 only); None: no scoring.
    benchmark: Optional[str] = None
    benchmark_column: str = "test_acc"


def build_search_config(strategy: str, preset: str, file_data: Dict[str, Any] | None,
                        flags: Dict[str, Any]) -> SearchConfig:
    """Defaults -> preset -> config file -> CLI flags, then validation."""
    file_data = dict(file_data or {})
    strategy = flags.get("strategy") or file_data.get("strategy") or strategy
    preset = flags.get("preset") or file_data.get("preset") or preset
    model = file_data.get("model")

    def overrides() -> Dict[str, Any]:
        # Called once strategy and preset passed their type checks. The space's own defaults
        # (e.g. NAS-Bench-201's C 16, N 5) go on top of the preset.
        out = dict(preset_overrides(preset, strategy))
        name = flags.get("model.space") or (model.get("space") if isinstance(model, dict) else None)
        name = name if isinstance(name, str) else DEFAULT_SPACE.get(strategy)
        from shared_model.spaces import get_space

        try:
            # The mobile preset is the quick search with a cost: the space's quick sizes.
            space = get_space(str(name))
            out.update(space.search_overrides("quick" if preset == "mobile" else preset))
            if preset == "mobile":
                out.update(mobile_network(space))
        except ValueError:
            pass  # an unknown space is refused with its name when the space is built
        return out

    cfg = layer_config(SearchConfig(), {"strategy": strategy, "preset": preset}, overrides, file_data, flags)
    validate_search_config(cfg)
    return cfg


def validate_search_config(cfg: SearchConfig) -> None:
    """Reject impossible combinations with one clear line."""
    if cfg.strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {cfg.strategy!r}; choose from {', '.join(STRATEGIES)}")
    if cfg.model.space is None:
        cfg.model.space = DEFAULT_SPACE[cfg.strategy]
    if cfg.model.cell_output is None:
        cfg.model.cell_output = default_cell_output(cfg.strategy, cfg.model.space)
    if cfg.optim.update_off_path is None:
        cfg.optim.update_off_path = DEFAULT_UPDATE_OFF_PATH[cfg.strategy]
    if cfg.model.aux_trainable is None:
        cfg.model.aux_trainable = default_aux_trainable(cfg.strategy, cfg.model.space)
    d, m, o, c, a, r = cfg.data, cfg.model, cfg.optim, cfg.controller, cfg.darts, cfg.run
    # Every value the components would refuse later (with a traceback, after the run folder
    # exists) or silently misuse is refused here with the key's name.
    checks = shared_checks(cfg.epochs, d, m) + optim_checks(o) + run_checks(r) + [
        (0.0 < d.valid_fraction < 1.0, "data.valid_fraction must be in (0, 1)"),
        (c.hidden >= 1, "controller.hidden must be >= 1"),
        # Bounds far outside any published setting (1.1-2.5, 2.5, 5) that keep float32 logits finite.
        (c.tanh_constant is None or 0 < c.tanh_constant <= 100,
         "controller.tanh_constant must be in (0, 100] (or null)"),
        (c.op_tanh_reduce >= 0.01, "controller.op_tanh_reduce must be >= 0.01"),
        (c.temperature is None or c.temperature >= 0.01, "controller.temperature must be >= 0.01 (or null)"),
        (c.lr > 0, "controller.lr must be > 0"),
        (0.0 <= c.beta1 < 1.0, "controller.beta1 must be in [0, 1)"),
        (c.eps > 0, "controller.eps must be > 0"),
        (0.0 <= c.baseline_decay <= 1.0, "controller.baseline_decay must be in [0, 1]"),
        (c.samples_per_update >= 1, "controller.samples_per_update must be >= 1"),
        (c.updates_per_epoch >= 0, "controller.updates_per_epoch must be >= 0"),
        (0.0 < c.skip_target < 1.0, "controller.skip_target must be in (0, 1)"),
        (c.skip_weight >= 0, "controller.skip_weight must be >= 0"),
        (a.order in (1, 2), "darts.order must be 1 or 2"),
        (a.arch_lr > 0, "darts.arch_lr must be > 0"),
        (0.0 <= a.arch_beta1 < 1.0 and 0.0 <= a.arch_beta2 < 1.0, "darts.arch_beta1 and arch_beta2 must be in [0, 1)"),
        (a.arch_weight_decay >= 0, "darts.arch_weight_decay must be >= 0"),
        (0.0 < a.train_portion < 1.0, "darts.train_portion must be in (0, 1)"),
        (a.unrolled_r > 0, "darts.unrolled_r must be > 0"),
        (cfg.derive.samples >= 1, "derive.samples must be >= 1"),
        (m.cell_output in CELL_OUTPUTS, f"model.cell_output must be one of {', '.join(CELL_OUTPUTS)}"),
        (cfg.derive.rounds is None or cfg.derive.rounds >= 1, "derive.rounds must be >= 1 (or null)"),
        (cfg.derive.eval_batches >= 1, "derive.eval_batches must be >= 1"),
        (0 <= cfg.derive.top_k <= cfg.derive.samples, "derive.top_k must be in [0, derive.samples]"),
        (isinstance(o.update_off_path, bool), "optim.update_off_path must be true or false (or null)"),
        (isinstance(m.aux_trainable, bool), "model.aux_trainable must be true or false (or null)"),
        (cfg.evolution.population >= 1, "evolution.population must be >= 1"),
        (cfg.evolution.sample >= 1, "evolution.sample must be >= 1"),
        (cfg.evolution.cycles_per_epoch >= 0, "evolution.cycles_per_epoch must be >= 0"),
        (0.0 <= cfg.evolution.explore <= 1.0, "evolution.explore must be in [0, 1]"),
        (cfg.bo.trials_per_epoch >= 0, "bo.trials_per_epoch must be >= 0"),
        (cfg.bo.population >= 1, "bo.population must be >= 1"),
        (cfg.bo.history >= 1, "bo.history must be >= 1"),
        (0.0 <= cfg.bo.explore <= 1.0, "bo.explore must be in [0, 1]"),
        (cfg.bo.startup_trials >= 0, "bo.startup_trials must be >= 0"),
        (cfg.bo.ei_candidates >= 1, "bo.ei_candidates must be >= 1"),
        (not (r.compile and r.cuda_graphs), "run.compile and run.cuda_graphs exclude each other: choose one"),
    ]
    raise_first_failure(checks + cost_checks(cfg.cost))
    if cfg.model.num_nodes is not None and cfg.model.num_nodes < 1:
        raise UserError("model.num_nodes must be >= 1")
    if cfg.strategy == "bo":  # before a run folder exists (new run, resume or derive)
        from controller.tpe import require_optuna

        try:
            require_optuna()
        except ImportError as exc:
            raise UserError(str(exc)) from None
    _check_network(cfg)


def _check_network(cfg: SearchConfig) -> None:
    """The space's refusals (e.g. DARTS on the macro space, an aux head it lacks), before any run folder exists."""
    from shared_model.spaces import get_space

    m = cfg.model
    try:
        space = get_space(m.space)
    except ValueError:
        return  # an unknown space is refused with its name when the space is built
    try:
        space.check_search(mixing=cfg.strategy == "darts", stem_multiplier=m.stem_multiplier,
                           auxiliary=m.auxiliary, dropout=m.dropout, cell_output=m.cell_output)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def cost_checks(k: CostConfig) -> List[Tuple[bool, str]]:
    """(condition, message) pairs of the ``cost`` section."""
    from controller.constraints import REWARDS

    model_ok = k.model is None or k.model in ("params", "macs", "latency") or (
        isinstance(k.model, str) and ":" in k.model)
    return [
        (model_ok, "cost.model must be params, macs, latency or package.module:factory (or null)"),
        (k.target is None or k.target > 0, "cost.target must be > 0 (or null)"),
        (k.target is None or k.model is not None, "cost.target needs a cost model (--cost)"),
        (k.constraint in CONSTRAINTS, f"cost.constraint must be one of {', '.join(CONSTRAINTS)}"),
        (k.constraint == "soft" or k.target is not None, "a hard cost constraint needs cost.target (--target)"),
        (k.reward in REWARDS, f"cost.reward must be one of {', '.join(REWARDS)}"),
        (k.exponent > 0, "cost.exponent must be > 0"),
        (k.max_tries >= 1, "cost.max_tries must be >= 1"),
        (k.darts_weight >= 0, "cost.darts_weight must be >= 0"),
        (k.channels is None or k.channels >= 1, "cost.channels must be >= 1 (or null)"),
        (k.layers is None or k.layers >= 1, "cost.layers must be >= 1 (or null)"),
        (k.batch_size >= 1 and k.threads >= 1, "cost.batch_size and cost.threads must be >= 1"),
        (k.device in ("cpu", "cuda") or k.device.startswith("cuda:"), "cost.device must be cpu, cuda or cuda:N"),
        (k.clock in ("wall", "cpu"), "cost.clock must be wall or cpu"),
        (k.clock == "wall" or (k.device == "cpu" and k.threads == 1), "cost.clock cpu needs cost.device cpu and "
         "cost.threads 1"),
    ]


CONSTRAINTS = ("soft", "hard", "both")
