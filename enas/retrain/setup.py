"""Build a retrain: the data, the child network and its trainer (DARTS Sec. 3.2; ENAS Sec. 3.2).

The :class:`~shared_model.child.ChildNetwork` is trained on the whole training
split (all 50,000 CIFAR-10 images; no validation hold-out) and tested on the
test split; :mod:`enas.retrain.loop` runs it. Under torch.distributed (README
"Several GPUs and machines") the network is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`; ``data.batch_size`` stays the
global batch of a step (the published protocols fix it), each process training on
its part of it. BatchNorm normalises over each process's part (no SyncBatchNorm,
see the README).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import nn

from enas.config.train import TrainConfig, validate_train_config
from enas.data.augment import DeviceLoader
from enas.data.datasets import load_config_data
from enas.distributed import Dist, GradientAverager
from enas.errors import UserError
from enas.retrain.schedules import sgdr_boundaries
from enas.retrain.trained import data_info, make_child
from enas.runtime import sgd, use_channels_last
from enas.search.trainer import ChildTrainer

logger = logging.getLogger(__name__)


class _FixedArch(nn.Module):
    """Lets :class:`ChildTrainer` (``model(x, arch)``) drive a fixed network."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, arch: Any = None):
        return self.net(x)


@dataclass
class RetrainSetup:
    model: nn.Module
    trainer: ChildTrainer
    train_loader: DeviceLoader
    test_loader: DeviceLoader
    generators: Dict[str, torch.Generator]
    info: Dict[str, Any]
    described: Dict[str, Any]
    dist: Dist


def load_retrain_data(cfg: TrainConfig, expect: Any = None) -> tuple:
    """The train and test splits, ``data_info`` and the run's ``data.json`` content.

    ``expect``: ``(data.json, folder)`` of the search run whose data this retrain carries over;
    data that no longer matches it (classes, channels, size) is refused.
    """
    validate_train_config(cfg)
    o, d = cfg.optim, cfg.data
    if o.schedule == "sgdr" and cfg.epochs not in sgdr_boundaries(o.sgdr_t0, o.sgdr_tmul, cfg.epochs):
        logger.warning("optim.schedule sgdr: %d epochs end inside a restart period (periods end at %s), so the "
                       "reported last epoch runs at a high learning rate", cfg.epochs,
                       ", ".join(map(str, sgdr_boundaries(o.sgdr_t0, o.sgdr_tmul, 2 * cfg.epochs + o.sgdr_t0)[:8])))
    train = load_config_data(d, "train")
    test = load_config_data(d, "test")
    if len(train) < d.batch_size:
        raise UserError(f"data.batch_size {d.batch_size} is larger than the {len(train)} training images")
    if len(test) == 0:
        raise UserError(f"dataset {d.dataset} has no test images")
    info = data_info(train, d.dataset)
    if expect:
        from enas.retrain.run import check_same_data

        check_same_data(info, *expect)
    # data.json: the checkpoint's data_info plus where it came from and how it was decoded.
    data_dir = d.data_dir and os.path.abspath(os.path.expanduser(d.data_dir))
    described = dict(info, data_dir=data_dir, train_images=len(train), test_images=len(test),
                     decode=train.summary)
    return train, test, info, described


def build_retrain(cfg: TrainConfig, genotype: Any, device: torch.device, expect: Any = None,
                  dist: Optional[Dist] = None, data: Optional[tuple] = None) -> RetrainSetup:
    """Composition root of a retrain run: data (:func:`load_retrain_data` unless ``data`` is
    given), network, optimizer, trainer. ``dist``: this process of a torch.distributed run
    (every process builds the same initial weights; DistributedDataParallel checks it)."""
    dist = dist or Dist(device=device, seed=cfg.run.seed)
    o, d = cfg.optim, cfg.data
    train, test, info, described = data or load_retrain_data(cfg, expect)
    model = make_child(genotype, cfg, info).to(device)
    channels_last = use_channels_last(device, cfg.run.channels_last, amp=cfg.run.amp)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    generators = {"augment": torch.Generator().manual_seed(cfg.run.seed + 1)}
    train_loader = DeviceLoader(train, d.batch_size, device, train=True, pad=d.pad, flip=d.flip, cutout=d.cutout,
                                generator=generators["augment"], channels_last=channels_last, seed=cfg.run.seed,
                                shard=(dist.rank, dist.world))
    test_loader = DeviceLoader(test, d.eval_batch_size or d.batch_size, device, train=False,
                               channels_last=channels_last, shard=(dist.rank, dist.world))
    # Frozen parameters (the ENAS aux head, model.aux_trainable false) stay out, as
    # in the official code: the trainer's zero gradients would let weight decay move them.
    optimizer = sgd([p for p in model.parameters() if p.requires_grad], lr=o.lr_max,
                    momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay)
    net: nn.Module = _FixedArch(model)
    if dist.world > 1:
        # static_graph: the same parameters take part in every step (a cell input no node reads,
        # or an auxiliary head with weight 0, takes part in none), found once, not searched per step.
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                                  static_graph=True)
    trainer = ChildTrainer(net, optimizer, device, aux_weight=cfg.model.aux_weight,
                           grad_clip=o.grad_clip, amp=cfg.run.amp, max_nonfinite=cfg.run.max_nonfinite,
                           reducer=GradientAverager(dist, grads=False) if dist.world > 1 else None)
    return RetrainSetup(model, trainer, train_loader, test_loader, generators, info, described, dist)
