"""Configuration of ``enas search`` and its presets.

Defaults are the official ENAS micro-search script values (REFERENCE Sec. 2-3,
``scripts/cifar10_micro_search.sh``); the ``paper`` preset resolves per
strategy (ENAS/random: ENAS script values; DARTS: the DARTS ``train_search.py``
values, REFERENCE Sec. 4). ``quick`` runs in minutes on a laptop CPU on the
built-in digits set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from enas.configlib import apply_overrides
from enas.errors import UserError


@dataclass
class DataConfig:
    dataset: str = "cifar10"
    data_dir: Optional[str] = None
    image_size: Optional[int] = None  # None: the dataset's own size
    valid_fraction: float = 0.1  # ignored for cifar10 (last 5k of train)
    batch_size: int = 160
    eval_batch_size: Optional[int] = None  # None: batch_size
    pad: int = 4
    flip: bool = True
    cutout: int = 0


@dataclass
class ModelConfig:
    space: Optional[str] = None  # micro | darts; None: the strategy's default
    num_nodes: Optional[int] = None  # None: the space's default
    ops: Optional[List[str]] = None  # None: the space's default op list
    channels: int = 20
    layers: int = 8  # all cells: ENAS "6 + 2"
    stem_multiplier: int = 3
    auxiliary: bool = True
    aux_weight: float = 0.4
    dropout: float = 0.1  # ENAS keep_prob 0.9 before the classifier


@dataclass
class OptimConfig:
    schedule: str = "sgdr"  # sgdr (cosine with restarts, per epoch) | cosine
    lr_max: float = 0.05
    lr_min: float = 5e-4
    sgdr_t0: int = 10
    sgdr_tmul: int = 2
    momentum: float = 0.9
    nesterov: bool = True
    # The official code adds l2 * sum(w^2) to the loss (l2 = 1e-4); its gradient is
    # 2 * l2 * w, i.e. PyTorch weight_decay = 2e-4.
    weight_decay: float = 2e-4
    grad_clip: Optional[float] = 5.0


@dataclass
class ControllerConfig:
    hidden: int = 64
    tanh_constant: Optional[float] = 1.10
    op_tanh_reduce: float = 2.5
    temperature: Optional[float] = None
    official_op_bias: bool = True  # op bias init [10, 10, 0, 0, 0] and normal-cell prior
    lr: float = 0.0035
    beta1: float = 0.0
    eps: float = 1e-3
    baseline_decay: float = 0.99
    entropy_weight: float = 1e-4
    samples_per_update: int = 10
    updates_per_epoch: int = 30


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
class DeriveConfig:
    samples: int = 100


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off
    channels_last: str = "auto"  # auto | on | off
    checkpoint_every_steps: int = 200  # work units: training steps, controller updates, derive candidates
    checkpoint_every_minutes: float = 10.0
    max_nonfinite: int = 20  # consecutive non-finite steps before stopping
    log_every: int = 20
    threads: Optional[int] = None


@dataclass
class SearchConfig:
    strategy: str = "enas"  # enas | darts | random
    preset: str = "paper"
    epochs: int = 150
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    darts: DartsConfig = field(default_factory=DartsConfig)
    derive: DeriveConfig = field(default_factory=DeriveConfig)
    run: RunConfig = field(default_factory=RunConfig)


STRATEGIES = ("enas", "darts", "random")
DEFAULT_SPACE = {"enas": "micro", "random": "micro", "darts": "darts"}

_DARTS_PAPER: Dict[str, Any] = {
    "epochs": 50, "data.batch_size": 64,
    "model.channels": 16, "model.layers": 8, "model.auxiliary": False, "model.dropout": 0.0,
    "optim.schedule": "cosine", "optim.lr_max": 0.025, "optim.lr_min": 0.001,
    "optim.nesterov": False, "optim.weight_decay": 3e-4, "optim.grad_clip": 5.0,
}

_QUICK: Dict[str, Any] = {
    "epochs": 10, "data.dataset": "digits", "data.batch_size": 32, "data.valid_fraction": 0.2,
    "data.pad": 1, "data.flip": False,  # digits are not mirror-symmetric
    "model.channels": 8, "model.layers": 5, "model.auxiliary": False,
    "optim.sgdr_t0": 10, "controller.updates_per_epoch": 5, "derive.samples": 40,
    "run.checkpoint_every_steps": 50, "run.log_every": 5,
    # Tiny networks: a second thread only adds synchronisation overhead.
    "run.threads": 1,
}

PRESETS = ("paper", "quick")
#: Largest ``run.seed``: the run derives generators from ``seed + 1`` and ``seed + 2``, and
#: torch seeds must fit 64 bits; 2**63 - 3 keeps every derived seed a signed 64-bit value.
MAX_SEED = 2**63 - 3


def preset_overrides(preset: str, strategy: str) -> Dict[str, Any]:
    """Flat overrides of a preset for a strategy."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    out: Dict[str, Any] = {}
    if strategy == "darts":
        out.update(_DARTS_PAPER)
    if preset == "quick":
        out.update(_QUICK)
        if strategy == "darts":
            out.update({"optim.lr_max": 0.05})
    return out


def build_search_config(strategy: str, preset: str, file_data: Dict[str, Any] | None,
                        flags: Dict[str, Any]) -> SearchConfig:
    """Defaults -> preset -> config file -> CLI flags, then validation."""
    from enas.configlib import apply_dict

    file_data = dict(file_data or {})
    cfg = SearchConfig()
    strategy = flags.get("strategy") or file_data.get("strategy") or strategy
    preset = flags.get("preset") or file_data.get("preset") or preset
    apply_overrides(cfg, {"strategy": strategy, "preset": preset})
    apply_overrides(cfg, preset_overrides(preset, strategy))
    apply_dict(cfg, file_data)
    apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None})
    validate_search_config(cfg)
    return cfg


def validate_search_config(cfg: SearchConfig) -> None:
    """Reject impossible combinations with one clear line."""
    if cfg.strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {cfg.strategy!r}; choose from {', '.join(STRATEGIES)}")
    if cfg.model.space is None:
        cfg.model.space = DEFAULT_SPACE[cfg.strategy]
    d, m, o, c, a, r = cfg.data, cfg.model, cfg.optim, cfg.controller, cfg.darts, cfg.run
    # Every value the components would refuse later (with a traceback, after the run folder
    # exists) or silently misuse is refused here with the key's name.
    checks = [
        (cfg.epochs >= 1, "epochs must be >= 1"),
        (d.batch_size >= 2, "data.batch_size must be >= 2 (batch-statistics BN)"),
        (d.eval_batch_size is None or d.eval_batch_size >= 1, "data.eval_batch_size must be >= 1"),
        (d.image_size is None or d.image_size >= 1, "data.image_size must be >= 1"),
        (0.0 < d.valid_fraction < 1.0, "data.valid_fraction must be in (0, 1)"),
        (d.pad >= 0 and d.cutout >= 0, "data.pad and data.cutout must be >= 0"),
        (m.channels >= 1, "model.channels must be >= 1"),
        (m.layers >= 3, "model.layers must be >= 3 (two of them are reduction cells)"),
        (m.stem_multiplier >= 1, "model.stem_multiplier must be >= 1"),
        (m.aux_weight >= 0, "model.aux_weight must be >= 0"),
        (0.0 <= m.dropout < 1.0, "model.dropout must be in [0, 1)"),
        (o.schedule in ("sgdr", "cosine"), "optim.schedule must be 'sgdr' or 'cosine'"),
        (o.lr_max > 0 and 0 <= o.lr_min <= o.lr_max, "need 0 <= optim.lr_min <= optim.lr_max and lr_max > 0"),
        (o.sgdr_t0 >= 1 and o.sgdr_tmul >= 1, "optim.sgdr_t0 and sgdr_tmul must be >= 1"),
        (0.0 <= o.momentum < 1.0, "optim.momentum must be in [0, 1)"),
        (o.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip must be > 0 (or null to disable)"),
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
        (a.order in (1, 2), "darts.order must be 1 or 2"),
        (a.arch_lr > 0, "darts.arch_lr must be > 0"),
        (0.0 <= a.arch_beta1 < 1.0 and 0.0 <= a.arch_beta2 < 1.0, "darts.arch_beta1 and arch_beta2 must be in [0, 1)"),
        (a.arch_weight_decay >= 0, "darts.arch_weight_decay must be >= 0"),
        (0.0 < a.train_portion < 1.0, "darts.train_portion must be in (0, 1)"),
        (a.unrolled_r > 0, "darts.unrolled_r must be > 0"),
        (cfg.derive.samples >= 1, "derive.samples must be >= 1"),
        (0 <= r.seed <= MAX_SEED, f"run.seed must be between 0 and {MAX_SEED}"),
        (r.amp in ("auto", "bf16", "off"), "run.amp must be auto, bf16 or off"),
        (r.channels_last in ("auto", "on", "off"), "run.channels_last must be auto, on or off"),
        (r.checkpoint_every_steps >= 1, "run.checkpoint_every_steps must be >= 1"),
        (r.checkpoint_every_minutes > 0, "run.checkpoint_every_minutes must be > 0"),
        (r.max_nonfinite >= 1, "run.max_nonfinite must be >= 1"),
        (r.log_every >= 1, "run.log_every must be >= 1"),
        (r.threads is None or r.threads >= 1, "run.threads must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    if cfg.model.num_nodes is not None and cfg.model.num_nodes < 1:
        raise UserError("model.num_nodes must be >= 1")
