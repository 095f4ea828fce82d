"""Configuration of ``enas train`` (retraining a genotype from scratch) and its presets.

Defaults are the DARTS evaluation protocol (Liu et al. 2019, Sec. 3.2;
``cnn/train.py``; REFERENCE Sec. 4), which is also the ``darts`` preset. The
``enas`` preset is the official ENAS micro final script
(``scripts/cifar10_micro_final.sh``; Pham et al. 2018, Sec. 3.2; REFERENCE
Sec. 3) with the paper's best-row cutout, and the network options that make
the child network the official fixed network (``src/cifar10/micro_child.py``).
``quick`` trains a tiny network on the built-in digits set in about a minute
on a CPU. ``nb201`` is the NAS-Bench-201 training protocol (Dong & Yang 2020,
Sec. 2.3, the official ``200E`` hyper-parameter file): 200 epochs, batch 256,
SGD Nesterov 0.9 with lr 0.1 cosine-annealed to 0, weight decay 5e-4, random
crop (pad 4) and flip, no cutout, drop path, auxiliary head or clipping.
``enas_macro`` is the official ENAS macro final script
(``scripts/cifar10_macro_final.sh``; REFERENCE Sec. 3): C 96 (doubled at each
reduction), batch 100, 310 epochs, SGDR 0.05 -> 1e-3, l2 2e-4, dropout 0.5,
no cutout, auxiliary head, drop path or clipping; the depth is the
architecture's (24 layers for ``ENAS_MACRO``).

``model.space`` names the search space whose child network is trained
(``None``: the space the architecture comes from); a space may add its own
defaults on top of a preset (``Space.train_overrides``), e.g. NAS-Bench-201
turns off the cell networks' auxiliary head and drop path, and an architecture
may fix values (``Space.arch_overrides``: a macro network's depth).

Config flows one way: defaults -> preset -> ``--config`` file -> flags.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from enas.config.lib import layer_config
from enas.errors import UserError
from enas.config.sections import (DataSourceConfig, OptimConfig, RunConfig, optim_checks, raise_first_failure,
                                  run_checks, shared_checks)


@dataclass
class TrainDataConfig(DataSourceConfig):
    batch_size: int = 96
    eval_batch_size: Optional[int] = None  # None: batch_size
    pad: int = 4
    flip: bool = True
    cutout: int = 16


@dataclass
class TrainModelConfig:
    space: Optional[str] = None  # None: the architecture's space (a genotype: a cell space)
    channels: int = 36
    layers: int = 20  # all cells, the two reduction cells included
    stem_multiplier: int = 3
    auxiliary: bool = True
    aux_weight: float = 0.4
    # linear: DARTS, every cell drops with drop_path_prob * epoch / epochs.
    # enas: ENAS micro final, cell i of L drops with
    #       drop_path_prob * (i + 1) / L * min(1, (step + 1) / total_steps).
    drop_path_prob: float = 0.2
    drop_path_schedule: str = "linear"
    dropout: float = 0.0  # before the classifier (ENAS final: keep 0.8 -> 0.2)
    # Where the DARTS and ENAS final networks differ (ChildNetwork arguments of the
    # same names); the defaults are DARTS, and a checkpoint saved before these keys
    # existed rebuilds with them, i.e. as it was trained.
    aux_position: str = "reduction"  # reduction (DARTS) | after_reduction (ENAS)
    final_relu: bool = False  # ReLU before global pooling (ENAS)
    drop_path_exempt: str = "identity"  # identity (DARTS) | skip (ENAS: also the stride-2 skip)
    base_conv: bool = False  # ENAS layer_base: second 1x1 conv on every cell's input 1
    classifier_bias: bool = True  # ENAS: no bias in the classifier and aux linear layers
    aux_same_padding: bool = False  # ENAS: the aux head's last conv pads SAME, then pools
    bn_eps: float = 1e-5  # ENAS batch_norm: 1e-3
    aux_trainable: bool = True  # ENAS: the aux head is not among the optimized variables
    loose_inputs: bool = False  # ENAS final_combine: unread cell inputs join the cell output
    # Macro space: build sep_conv_3x3/5x5 as full k x k convs, as the official _fixed_layer
    # does (what trained the published macro rows); false: depthwise-separable, as in search.
    sep_as_conv: bool = True


@dataclass
class TrainOptimConfig(OptimConfig):
    schedule: str = "cosine"  # cosine (one period over all epochs) | sgdr (restarts)
    lr_max: float = 0.025
    lr_min: float = 0.0
    nesterov: bool = False
    weight_decay: float = 3e-4


@dataclass
class TrainRunConfig(RunConfig):
    checkpoint_every_steps: int = 500
    log_every: int = 50
    test_every: int = 1  # epochs between test-set evaluations; the last epoch is always tested


@dataclass
class TrainConfig:
    preset: str = "darts"
    epochs: int = 600
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    model: TrainModelConfig = field(default_factory=TrainModelConfig)
    optim: TrainOptimConfig = field(default_factory=TrainOptimConfig)
    run: TrainRunConfig = field(default_factory=TrainRunConfig)


PRESETS = ("darts", "enas", "quick", "nb201", "enas_macro")
DROP_PATH_SCHEDULES = ("linear", "enas")
# Copies of shared_model.child's lists (a test keeps them equal): importing the
# model module here would load torch for every config operation.
AUX_POSITIONS = ("reduction", "after_reduction")
DROP_PATH_EXEMPT = ("identity", "skip")

_ENAS_FINAL: Dict[str, Any] = {
    "epochs": 630, "data.batch_size": 144, "data.cutout": 16,
    "model.channels": 36, "model.layers": 17,  # 15 normal + 2 reduction cells
    "model.auxiliary": True, "model.aux_weight": 0.4,
    "model.drop_path_prob": 0.4, "model.drop_path_schedule": "enas",  # drop_path_keep_prob 0.6
    "model.dropout": 0.2,  # keep_prob 0.8
    # The official fixed network (src/cifar10/micro_child.py): aux head at
    # pool_layers[-1] + 1 = cell 12, ReLU before global pooling, skip_connect never
    # dropped (drop path on ops 0-3 only), the layer_base 1x1 conv, bias-free fc
    # layers, the aux head's SAME-padded 2x2 conv, batch_norm epsilon 1e-3, an
    # aux head that is never trained (_build_train optimizes the variables without
    # "aux_head" in their name only; its loss still reaches the cells), and unread
    # cell inputs in the cell output (_fixed_combine concatenates every state with
    # used == 0, the two inputs included; the released cells read both).
    "model.aux_position": "after_reduction", "model.final_relu": True, "model.drop_path_exempt": "skip",
    "model.base_conv": True, "model.classifier_bias": False, "model.aux_same_padding": True,
    "model.bn_eps": 1e-3, "model.aux_trainable": False, "model.loose_inputs": True,
    "optim.schedule": "sgdr", "optim.lr_max": 0.05, "optim.lr_min": 1e-4,
    "optim.sgdr_t0": 10, "optim.sgdr_tmul": 2, "optim.momentum": 0.9, "optim.nesterov": True,
    # The official code adds l2_reg * sum(w ** 2) to the loss (src/utils.py get_train_ops),
    # whose gradient is 2 * l2_reg * w: l2_reg 2e-4 is SGD weight_decay 4e-4.
    "optim.weight_decay": 4e-4,
    # No clipping. main.py passes clip_mode="norm" with child_grad_bound 5, but the
    # "norm" branch of get_train_ops appends the unclipped gradient to its list, so
    # the official run never clipped; grad_clip 5 would not be the official run.
    "optim.grad_clip": None,
}

_QUICK: Dict[str, Any] = {
    "epochs": 8, "data.dataset": "digits", "data.batch_size": 64, "data.pad": 1, "data.cutout": 0,
    "data.flip": False,  # digits are not mirror-symmetric
    "run.threads": 1,  # tiny networks: a second thread only adds synchronisation overhead
    "model.channels": 8, "model.layers": 5, "model.auxiliary": False, "model.drop_path_prob": 0.1,
    "optim.lr_max": 0.05, "run.checkpoint_every_steps": 100, "run.log_every": 10,
}


# NAS-Bench-201 (Dong & Yang 2020, Sec. 2.3; configs/nas-benchmark/hyper-opts/200E.config).
_NB201: Dict[str, Any] = {
    "epochs": 200, "data.batch_size": 256, "data.pad": 4, "data.flip": True, "data.cutout": 0,
    "model.channels": 16, "model.layers": 5,  # C 16, N 5 cells per stage
    "model.auxiliary": False, "model.drop_path_prob": 0.0, "model.dropout": 0.0,
    "optim.schedule": "cosine", "optim.lr_max": 0.1, "optim.lr_min": 0.0, "optim.momentum": 0.9,
    "optim.nesterov": True, "optim.weight_decay": 5e-4, "optim.grad_clip": None,
}


# ENAS macro final (scripts/cifar10_macro_final.sh, general_child._fixed_layer; REFERENCE Sec. 3):
# the network options (no aux head or drop path, BN eps 1e-3, bias-free classifier, sep ops as
# full convs) come from the macro space's train_overrides, the depth from the architecture.
_ENAS_MACRO: Dict[str, Any] = {
    "epochs": 310, "data.batch_size": 100, "data.pad": 4, "data.flip": True, "data.cutout": 0,
    "model.channels": 96, "model.dropout": 0.5,  # keep_prob 0.5
    "optim.schedule": "sgdr", "optim.lr_max": 0.05, "optim.lr_min": 1e-3, "optim.sgdr_t0": 10,
    "optim.sgdr_tmul": 2, "optim.momentum": 0.9, "optim.nesterov": True,
    "optim.weight_decay": 4e-4,  # l2 2e-4: gradient 2 * l2 * w
    "optim.grad_clip": None,  # the official "norm" clipping keeps the unclipped gradient (see _ENAS_FINAL)
}


def preset_overrides(preset: str) -> Dict[str, Any]:
    """Flat ``{"section.key": value}`` overrides of a preset (``darts`` = the defaults)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return {"darts": {}, "enas": _ENAS_FINAL, "quick": _QUICK, "nb201": _NB201, "enas_macro": _ENAS_MACRO}[preset]


def _space_name(file_data: Dict[str, Any], flags: Dict[str, Any]) -> Optional[str]:
    model = file_data.get("model")
    name = flags.get("model.space") or (model.get("space") if isinstance(model, dict) else None)
    return name if isinstance(name, str) else None


def build_train_config(file_data: Dict[str, Any] | None, flags: Dict[str, Any],
                       preset: Optional[str] = None, arch_space: Any = None, arch: Any = None,
                       carried: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """Defaults -> preset (+ the space's additions, + what ``arch`` fixes) -> ``carried`` (a
    search run's data keys) -> config file -> CLI flags (``None`` flags ignored), then validation.

    The space is ``model.space`` if given, else ``arch_space`` (the space the architecture
    came from); without a preset its default is used (``darts`` for cell spaces).
    """
    from shared_model.spaces import get_space

    file_data = dict(file_data or {})
    name = _space_name(file_data, flags)
    try:
        space = get_space(name) if name else arch_space
    except ValueError as exc:
        raise UserError(str(exc)) from None
    preset = flags.get("preset") or file_data.get("preset") or preset or \
        (space.default_train_preset if space is not None else "darts")

    def overrides() -> Dict[str, Any]:
        out = dict(preset_overrides(preset))
        if space is not None:
            out.update(space.train_overrides(preset))
            if arch is not None:
                out.update(space.arch_overrides(arch))
        out.update(carried or {})
        return out

    cfg = layer_config(TrainConfig(), {"preset": preset}, overrides, file_data, flags)
    if arch is not None and space is not None:
        for key, value in space.arch_overrides(arch).items():
            section, name = key.split(".")
            if getattr(getattr(cfg, section), name) != value:
                raise UserError(f"{key} is {value} for this {space.name} architecture, not "
                                f"{getattr(getattr(cfg, section), name)}; leave it unset")
    if cfg.model.space is None and space is not None:
        # Recorded, so that --resume, evaluate and export rebuild (and validate) with this space.
        cfg.model.space = space.name
    validate_train_config(cfg)
    return cfg


def validate_train_config(cfg: TrainConfig) -> None:
    """Reject impossible values with one clear line (image-size checks happen once data is known)."""
    from enas.data.datasets import canonical_name

    if cfg.preset not in PRESETS:
        raise UserError(f"unknown preset {cfg.preset!r}; choose from {', '.join(PRESETS)}")
    cfg.data.dataset = canonical_name(cfg.data.dataset)
    d, m, o, r = cfg.data, cfg.model, cfg.optim, cfg.run
    checks = shared_checks(cfg.epochs, d, m) + optim_checks(o) + run_checks(r) + [
        (0.0 <= m.drop_path_prob < 1.0, "model.drop_path_prob must be in [0, 1)"),
        (m.drop_path_schedule in DROP_PATH_SCHEDULES,
         f"model.drop_path_schedule must be one of {', '.join(DROP_PATH_SCHEDULES)}"),
        (r.test_every >= 1, "run.test_every must be >= 1"),
        (m.aux_position in AUX_POSITIONS, f"model.aux_position must be one of {', '.join(AUX_POSITIONS)}"),
        (not (m.auxiliary and m.aux_position == "after_reduction" and m.layers < 4),
         "model.aux_position after_reduction needs model.layers >= 4 (a cell after the last reduction)"),
        (m.drop_path_exempt in DROP_PATH_EXEMPT,
         f"model.drop_path_exempt must be one of {', '.join(DROP_PATH_EXEMPT)}"),
        (0.0 < m.bn_eps < 1.0, "model.bn_eps must be in (0, 1)"),
    ]
    raise_first_failure(checks)
