"""Trained networks from ``enas train`` checkpoints: rebuild, load and evaluate.

Used by retraining itself and by ``enas evaluate`` and ``enas export``, which
rebuild the child network from a checkpoint alone (it holds the architecture,
the full config and the data shape). The network is the one the space builds
(``Space.build_child``): ``model.space``, or for checkpoints without it the
space of the saved architecture's JSON (a genotype: a cell space).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from enas.data.augment import DeviceLoader
from enas.runs.checkpoint import load_checkpoint
from enas.config.lib import load_saved_config
from enas.data.datasets import data_info  # noqa: F401  (checkpoints' data_info; kept importable here)
from enas.errors import UserError
from enas.runtime import autocast
from enas.config.train import TrainConfig
from shared_model.spaces import Space, get_space, space_for_arch, space_for_json

KIND = "train"


def train_space(cfg: TrainConfig, arch: Any = None) -> Space:
    """The space whose child network a retrain config builds (``model.space``, else ``arch``'s)."""
    try:
        return get_space(cfg.model.space) if cfg.model.space else space_for_arch(arch)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def make_child(genotype: Any, cfg: TrainConfig, info: Dict[str, Any], inference: bool = False) -> nn.Module:
    """The child network of ``genotype`` (its space's ``build_child``) for the data shape in ``info``.

    ``inference`` drops the auxiliary head (and drop path), as for evaluation and export.

    Non-square images: the network is sized by the shorter side (every layer after the stem
    is size-agnostic; the reductions and the auxiliary head's pooling must fit that side).

    Raises:
        UserError: sizes the network cannot be built with (e.g. images too small
            for the two reduction cells).
    """
    m = cfg.model
    space = train_space(cfg, genotype)
    if not isinstance(genotype, space.arch_type):
        raise UserError(f"a {type(genotype).__name__} is not an architecture of the {space.name} space")
    try:
        return space.build_child(genotype, m.channels, m.layers, int(info["num_classes"]),
                                 in_channels=int(info["in_channels"]), image_size=min(input_shape(info)[1:]),
                                 auxiliary=m.auxiliary and not inference, stem_multiplier=m.stem_multiplier,
                                 dropout=m.dropout, drop_path_depth_scaled=m.drop_path_schedule == "enas",
                                 aux_position=m.aux_position, final_relu=m.final_relu,
                                 drop_path_exempt=m.drop_path_exempt, base_conv=m.base_conv,
                                 classifier_bias=m.classifier_bias, aux_same_padding=m.aux_same_padding,
                                 bn_eps=m.bn_eps, aux_trainable=m.aux_trainable, loose_inputs=m.loose_inputs,
                                 sep_as_conv=m.sep_as_conv)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def input_shape(info: Dict[str, Any]) -> Tuple[int, int, int]:
    """``(C, H, W)`` of a checkpoint's ``data_info``; ``image_size`` is ``[H, W]`` or, before
    non-square images, one int (square). The networks size their heads by the shorter side."""
    size = info["image_size"]
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return int(info["in_channels"]), h, w


def load_train_checkpoint(path: str | Path) -> Tuple[Dict[str, Any], Path]:
    """Load a retrain checkpoint (a ``.pt`` file or a run folder: its ``checkpoints/last.pt``).

    Raises:
        UserError: missing, corrupt or foreign file, a search checkpoint, or
            one without the retrain fields.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    state = load_checkpoint(path, kind=None)
    if state.get("kind") == "search":
        raise UserError(f"{path} is a search checkpoint; retrain its genotype first with `enas train`")
    if state.get("kind") != KIND:
        raise UserError(f"checkpoint {path} is a {state.get('kind')!r} checkpoint, expected a retrain checkpoint")
    missing = [k for k in ("config", "genotype", "data_info", "model") if k not in state]
    if missing:
        raise UserError(f"checkpoint {path} is incomplete (missing {', '.join(missing)})")
    return state, path


def network_from_checkpoint(state: Dict[str, Any], inference: bool = True
                            ) -> Tuple[nn.Module, TrainConfig, Any, Dict[str, Any]]:
    """Rebuild the trained network from a checkpoint loaded by :func:`load_train_checkpoint`."""
    cfg = load_saved_config(TrainConfig, state["config"])
    try:
        space = get_space(cfg.model.space) if cfg.model.space else space_for_json(state["genotype"])
        genotype = space.arch_from_json(state["genotype"])
    except ValueError as exc:
        raise UserError(f"checkpoint genotype is invalid: {exc}") from None
    info = dict(state["data_info"])
    model = make_child(genotype, cfg, info, inference=inference)
    weights = state["model"]
    if inference:
        weights = {k: v for k, v in weights.items() if not k.startswith("auxiliary_head.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"checkpoint weights do not fit its network: {str(exc).splitlines()[0]}") from None
    return model, cfg, genotype, info


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DeviceLoader, device: torch.device, amp: str = "auto",
                   bar: Any = None, all_sum: Any = None) -> Dict[str, float]:
    """Mean loss, top-1 and top-5 accuracy over a whole (unshuffled) loader, eval mode.

    ``top5`` is None with 5 classes or fewer (it would always be 1). ``bar``: a tqdm-like
    progress bar advanced per batch (closed at the end). ``all_sum``: under torch.distributed,
    sums the processes' totals in place (each process evaluated its part of every batch,
    :class:`~enas.data.augment.DeviceLoader` ``shard``).
    """
    was_training = model.training
    model.eval()
    k = 5 if loader.num_classes > 5 else 0
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, top1, top5
    n = 0
    for x, y in loader.epoch_batches(0):
        with autocast(device, amp):
            out = model(x)
        logits = (out[0] if isinstance(out, tuple) else out).float()  # (B, classes)
        sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
        sums[1] += (logits.argmax(1) == y).sum()
        if k:
            sums[2] += (logits.topk(k, 1).indices == y[:, None]).any(1).sum()
        n += y.numel()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    model.train(was_training)
    if all_sum is not None:
        totals = all_sum(torch.cat([sums, sums.new_tensor([n])]))
        sums, n = totals[:3], int(totals[3])
    loss, top1, top5 = (sums / max(n, 1)).tolist()
    return {"loss": loss, "top1": top1, "top5": top5 if k else None, "n": n}
