"""Composition root of a search: turns a resolved config into components.

This is the one place that reads :class:`~enas.config.search.SearchConfig`;
every component below it receives explicit arguments.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from controller import Controller, ExtraLoss, LSTMPolicy, MacroController, Reinforce, UniformPolicy
from controller.reinforce import LossTerm
from enas.data.augment import DeviceLoader
from enas.data.datasets import ImageData, data_info, load_config_data, search_split
from enas.distributed import Dist, GradientAverager
from enas.errors import UserError
from enas.runtime import accelerate_supernet, sgd, use_channels_last
from enas.search.base import Strategy
from enas.search.sampling import SamplingStrategy
from enas.search.trainer import ChildTrainer
from enas.config.search import ControllerConfig, SearchConfig
from shared_model.spaces import Space, get_space

logger = logging.getLogger(__name__)


@dataclass
class SearchSetup:
    space: Space
    model: torch.nn.Module
    strategy: Strategy
    trainer: ChildTrainer
    generators: Dict[str, torch.Generator]
    num_classes: int
    data_info: Dict[str, Any] = field(default_factory=dict)  # the run's data.json
    cost: Optional[Any] = None  # enas.cost.objective.SearchCost


def build_space(cfg: SearchConfig) -> Space:
    """The configured space, sized for ``model.layers`` where the architecture fixes the depth (macro)."""
    try:
        space = get_space(cfg.model.space, num_nodes=cfg.model.num_nodes, ops=cfg.model.ops)
        return space.for_layers(cfg.model.layers)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def build_controller(space: Space, c: ControllerConfig) -> tuple[LSTMPolicy, Dict[str, LossTerm]]:
    """The ENAS controller of a space and its extra REINFORCE loss terms.

    Spaces with skip decisions (macro) get the macro sampler and its skip penalty
    (``controller.skip_weight`` x ``skip_kl``); cell spaces the micro controller.
    """
    if any(d.kind == "skip" for d in space.decisions):
        macro = MacroController(space.decisions, len(space.policy_ops), hidden=c.hidden,
                                tanh_constant=c.tanh_constant, temperature=c.temperature,
                                skip_target=c.skip_target)
        return macro, ({"skip_penalty": ExtraLoss("skip_kl", c.skip_weight)} if c.skip_weight else {})
    bias, prior = space.enas_op_bias() if c.official_op_bias else (None, None)
    return Controller(space.decisions, len(space.policy_ops), hidden=c.hidden, tanh_constant=c.tanh_constant,
                      op_tanh_reduce=c.op_tanh_reduce, temperature=c.temperature, op_bias_init=bias,
                      normal_op_prior=prior), {}


def load_search_data(cfg: SearchConfig) -> tuple[ImageData, ImageData]:
    """Training images split into the search train / validation parts."""
    data = load_config_data(cfg.data, "train")
    if cfg.strategy in ("darts", "random"):
        # DARTS: the first ``train_portion`` trains weights, the rest the architecture (in the
        # stored order for CIFAR, which is shuffled on disk; a seeded permutation elsewhere).
        # Li & Talwalkar's random search keeps DARTS's split (train_portion 0.5) for its scores.
        return search_split(data, "custom", 1.0 - cfg.darts.train_portion,
                            ordered=cfg.data.dataset in ("cifar10", "cifar100"))
    # A limited CIFAR-10 is no longer the official 50,000: the generic seeded split applies.
    return search_split(data, "custom" if cfg.data.limit else cfg.data.dataset, cfg.data.valid_fraction)


def build_search(cfg: SearchConfig, device: torch.device, run_dir: Optional[Path] = None,
                 dist: Optional[Dist] = None) -> SearchSetup:
    """Build data loaders, supernet, optimizer, policy, cost and strategy.

    ``run_dir`` receives the latency table a ``latency`` cost without ``cost.lut`` measures.
    ``dist``: this process of a torch.distributed run (:mod:`enas.distributed`): the training
    loaders serve its part of each batch and the trainer averages gradients over the processes.
    Every process builds the same weights, controller and alphas from the run seed.
    """
    dist = dist or Dist(device=device, seed=cfg.run.seed)
    shard = (dist.rank, dist.world)
    space = build_space(cfg)
    m = cfg.model
    options = {"stem_multiplier": m.stem_multiplier, "auxiliary": m.auxiliary, "dropout": m.dropout,
               "cell_output": m.cell_output}
    try:
        space.check_search(mixing=cfg.strategy == "darts", **options)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    train_data, valid_data = load_search_data(cfg)
    _, channels, height, width = train_data.images.shape
    if min(height, width) < 4:
        raise UserError(f"{height}x{width} px images are too small for the two reduction cells (need >= 4 px)")
    if len(train_data.labels) < cfg.data.batch_size:
        raise UserError(f"data.batch_size {cfg.data.batch_size} is larger than the "
                        f"{len(train_data.labels)} search training images")
    num_classes = len(train_data.classes)
    generators = {"sample": torch.Generator().manual_seed(cfg.run.seed),
                  "augment": torch.Generator().manual_seed(cfg.run.seed + 1),
                  "valid": torch.Generator().manual_seed(cfg.run.seed + 2)}
    channels_last = use_channels_last(device, cfg.run.channels_last, amp=cfg.run.amp)
    eval_bs = cfg.data.eval_batch_size or cfg.data.batch_size
    train_loader = DeviceLoader(train_data, cfg.data.batch_size, device, train=True, pad=cfg.data.pad,
                                flip=cfg.data.flip, cutout=cfg.data.cutout, generator=generators["augment"],
                                channels_last=channels_last, seed=cfg.run.seed, shard=shard)
    # Whole minibatches: each reward is scored by one process on the batch one process would use.
    valid_loader = DeviceLoader(valid_data, min(eval_bs, len(valid_data.labels)), device, train=False,
                                generator=generators["valid"], channels_last=channels_last,
                                seed=cfg.run.seed + 1)
    try:
        model = space.build_supernet(m.channels, m.layers, num_classes, in_channels=channels,
                                     image_size=min(height, width), **options).to(device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if getattr(model, "aux_head", None) is not None and not cfg.model.aux_trainable:
        # ENAS _build_train optimizes only the variables without "aux_head" in their name:
        # the head keeps its initial weights and its loss trains the cells below it. Frozen
        # and left out of the optimizer, so neither weight decay nor momentum moves it.
        model.aux_head.requires_grad_(False)
    optimizer = sgd([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr_max,
                    momentum=cfg.optim.momentum, nesterov=cfg.optim.nesterov and cfg.optim.momentum > 0,
                    weight_decay=cfg.optim.weight_decay)
    # After the optimizer: its flat buffers move the parameters, which compiled graphs must see.
    note = accelerate_supernet(model, device, compile=cfg.run.compile, cuda_graphs=cfg.run.cuda_graphs)
    if note:
        logger.info("%s", note)
    trainer = ChildTrainer(model, optimizer, device, aux_weight=cfg.model.aux_weight,
                           grad_clip=cfg.optim.grad_clip, amp=cfg.run.amp,
                           max_nonfinite=cfg.run.max_nonfinite,
                           update_off_path=cfg.optim.update_off_path,
                           reducer=GradientAverager(dist) if dist.world > 1 else None)
    from enas.cost.objective import build_search_cost

    search_cost = build_search_cost(cfg, space, num_classes, channels, (height, width), run_dir)
    strategy: Strategy
    if cfg.strategy == "enas":
        c = cfg.controller
        controller, loss_terms = build_controller(space, c)
        if search_cost is not None:
            controller = search_cost.budgeted(controller, space)  # hard constraint: resample over budget
        reinforce = Reinforce(controller, lr=c.lr, betas=(c.beta1, 0.999), eps=c.eps,
                              baseline_decay=c.baseline_decay, entropy_weight=c.entropy_weight,
                              samples_per_update=c.samples_per_update, loss_terms=loss_terms)
        strategy = SamplingStrategy(space, controller, trainer, train_loader, valid_loader,
                                    generators["sample"], reinforce, c.updates_per_epoch, cost=search_cost)
    elif cfg.strategy == "random":
        # Li & Talwalkar's derive budget: one round per 10,000 training steps.
        rounds = cfg.derive.rounds or max(1, cfg.epochs * len(train_loader) // 10_000)
        policy = UniformPolicy(space.decisions, distinct_inputs=space.distinct_inputs)
        if search_cost is not None:
            policy = search_cost.budgeted(policy, space)
        strategy = SamplingStrategy(space, policy, trainer, train_loader, valid_loader, generators["sample"],
                                    eval_samples=cfg.controller.samples_per_update, derive_rounds=rounds,
                                    derive_eval_batches=cfg.derive.eval_batches, derive_top_k=cfg.derive.top_k,
                                    cost=search_cost)
    elif cfg.strategy in ("evolution", "bo"):
        from enas.search.population import build_population_strategy

        e, b = cfg.evolution, cfg.bo
        strategy = (build_population_strategy("evolution", space, trainer, train_loader, valid_loader,
                                              generators["sample"], keep=cfg.derive.samples,
                                              population=e.population, cycles=e.cycles_per_epoch,
                                              explore=e.explore, sample=e.sample, cost=search_cost)
                    if cfg.strategy == "evolution" else
                    build_population_strategy("bo", space, trainer, train_loader, valid_loader,
                                              generators["sample"], keep=cfg.derive.samples,
                                              population=b.population, cycles=b.trials_per_epoch,
                                              explore=b.explore, startup_trials=b.startup_trials,
                                              ei_candidates=b.ei_candidates, multivariate=b.multivariate,
                                              history=b.history, cost=search_cost))
    else:
        from enas.search.darts import build_darts_strategy
        from shared_model.arch_params import ArchParameters

        d = cfg.darts
        # Architecture batches: same size and augmentation as the weight batches (the official
        # train_search.py draws both queues from the train transform), reshuffled per epoch. Its
        # own generator, saved with the others, keeps resume exact; XOR 2**62 keeps the seed
        # distinct from seed .. seed + 2 and within 63 bits.
        generators["arch_augment"] = torch.Generator().manual_seed(cfg.run.seed ^ (1 << 62))
        arch_loader = DeviceLoader(valid_data, cfg.data.batch_size, device, train=True, pad=cfg.data.pad,
                                   flip=cfg.data.flip, cutout=cfg.data.cutout, shuffle=True,
                                   drop_last=True, generator=generators["arch_augment"],
                                   channels_last=channels_last, seed=cfg.run.seed + 1, shard=shard)
        arch = ArchParameters.for_space(space, device=device)
        strategy = build_darts_strategy(space, model, arch, trainer, train_loader, arch_loader,
                                        order=d.order, arch_lr=d.arch_lr,
                                        arch_betas=(d.arch_beta1, d.arch_beta2),
                                        arch_weight_decay=d.arch_weight_decay, unrolled_r=d.unrolled_r,
                                        cost=search_cost)
    strategy.dist = dist
    data_dir = cfg.data.data_dir and os.path.abspath(os.path.expanduser(cfg.data.data_dir))
    info = dict(data_info(train_data, cfg.data.dataset), data_dir=data_dir,
                train_images=len(train_data), valid_images=len(valid_data), decode=train_data.summary)
    return SearchSetup(space, model, strategy, trainer, generators, num_classes, info, search_cost)
