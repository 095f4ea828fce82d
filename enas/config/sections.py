"""Config sections shared by ``enas search`` and ``enas train``, and their checks.

The search defaults are the official ENAS micro-search values; ``enas train``
subclasses these sections with the DARTS evaluation defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Tuple, Union

MAX_SEED = 2**63 - 3  # torch.manual_seed accepts up to 2**64 - 1; seed + 2 must still fit

Check = Tuple[bool, str]


@dataclass
class DataSourceConfig:
    """Which images, from where, fitted how (the first keys of ``[data]`` for search and train)."""

    dataset: str = "cifar10"
    data_dir: Optional[str] = None
    # H or [H, W]; None: the dataset's own size (an image folder: 32). Other sizes are fitted by
    # resize: stretch | pad (keep the aspect ratio, black borders) | crop (keep it, centre crop).
    image_size: Optional[Union[int, List[int]]] = None
    resize: str = "stretch"
    channels: Optional[int] = None  # 1 | 3 converts every image; None: the data's own
    limit: Optional[int] = None  # a stratified subset of this many training images; None: all


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
    # DARTS's clip (search and evaluation); the ENAS search section overrides it with None
    # because the official ENAS child never clips (see enas.config.search.SearchOptimConfig).
    grad_clip: Optional[float] = 5.0
    # Linear scaling rule (Goyal et al. 2017, Sec. 2.1): with a reference batch B0, lr_max and
    # lr_min are multiplied by data.batch_size / B0. Off (null) by default: the published
    # protocols fix batch and rate, and data.batch_size is the global batch however many
    # processes share it (README "Several GPUs and machines").
    lr_batch: Optional[int] = None


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
    progress_seconds: float = 30.0  # off a terminal: one progress line (rate, ETA) this often


def optim_checks(o: OptimConfig) -> List[Check]:
    """(condition, message) pairs for an optimizer section."""
    return [
        (o.schedule in ("sgdr", "cosine"), "optim.schedule must be 'sgdr' or 'cosine'"),
        (o.lr_max > 0 and 0 <= o.lr_min <= o.lr_max, "need 0 <= optim.lr_min <= optim.lr_max and lr_max > 0"),
        (o.sgdr_t0 >= 1 and o.sgdr_tmul >= 1, "optim.sgdr_t0 and sgdr_tmul must be >= 1"),
        (0.0 <= o.momentum < 1.0, "optim.momentum must be in [0, 1)"),
        (o.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip must be > 0 (or null to disable)"),
        (o.lr_batch is None or o.lr_batch >= 1, "optim.lr_batch must be >= 1 (or null: no scaling)"),
    ]


def run_checks(r: RunConfig) -> List[Check]:
    """(condition, message) pairs for a run section."""
    return [
        (0 <= r.seed <= MAX_SEED, f"run.seed must be between 0 and {MAX_SEED}"),
        (r.amp in ("auto", "bf16", "off"), "run.amp must be auto, bf16 or off"),
        (r.channels_last in ("auto", "on", "off"), "run.channels_last must be auto, on or off"),
        (r.checkpoint_every_steps >= 1, "run.checkpoint_every_steps must be >= 1"),
        (r.checkpoint_every_minutes > 0, "run.checkpoint_every_minutes must be > 0"),
        (r.max_nonfinite >= 1, "run.max_nonfinite must be >= 1"),
        (r.log_every >= 1, "run.log_every must be >= 1"),
        (r.threads is None or r.threads >= 1, "run.threads must be >= 1"),
        (r.progress_seconds > 0, "run.progress_seconds must be > 0"),
    ]


def shared_checks(epochs: int, d, m) -> List[Check]:
    """Checks of the data and model keys that search and train have in common."""
    return [
        (epochs >= 1, "epochs must be >= 1"),
        (d.batch_size >= 2, "data.batch_size must be >= 2 (batch-statistics BN)"),
        (d.eval_batch_size is None or d.eval_batch_size >= 1, "data.eval_batch_size must be >= 1"),
        (d.image_size is None or _image_size_ok(d.image_size),
         "data.image_size must be a positive integer or [height, width] of positive integers"),
        (d.resize in ("stretch", "pad", "crop"), "data.resize must be stretch, pad or crop"),
        (d.channels in (None, 1, 3), "data.channels must be 1, 3 or null (the data's own)"),
        (d.limit is None or d.limit >= 2, "data.limit must be >= 2 (or null for all images)"),
        (d.pad >= 0 and d.cutout >= 0, "data.pad and data.cutout must be >= 0"),
        (m.channels >= 1, "model.channels must be >= 1"),
        _layers_check(m),
        (m.stem_multiplier >= 1, "model.stem_multiplier must be >= 1"),
        (m.aux_weight >= 0, "model.aux_weight must be >= 0"),
        (0.0 <= m.dropout < 1.0, "model.dropout must be in [0, 1)"),
    ]


def _image_size_ok(size: Any) -> bool:
    """``data.image_size``: H, or [H, W] (the config type check already made them ints)."""
    if isinstance(size, int):
        return size >= 1
    return len(size) == 2 and all(v >= 1 for v in size)


def _layers_check(m: Any) -> Check:
    """``model.layers`` against the space's minimum (cell spaces: 3, two are reductions)."""
    from shared_model.spaces import Space, get_space

    space: Any = Space
    if getattr(m, "space", None):
        try:
            space = get_space(m.space)
        except ValueError:
            pass  # an unknown space is reported where the space is built
    return (m.layers >= space.min_layers, f"model.layers must be >= {space.min_layers} ({space.layers_meaning})")


def raise_first_failure(checks: Iterable[Check]) -> None:
    """Raise a :class:`~enas.errors.UserError` with the message of the first failed check."""
    from enas.errors import UserError

    for ok, message in checks:
        if not ok:
            raise UserError(message)
