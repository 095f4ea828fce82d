"""DARTS on the shared supernet: bilevel search over continuous op weights.

Liu et al. 2019 (DARTS), Sec. 2.2-2.4 and ``cnn/architect.py``: every
training unit first takes one architecture step on a validation minibatch
(Adam on the op logits ``alpha``), then one weight step on a training
minibatch through the mixed supernet. The architecture gradient is

* first order (Sec. 2.3, ``xi = 0``): ``grad_alpha L_val(w, alpha)``;
* second order (Sec. 2.3, eq. 6-8): with the virtual step
  ``w' = w - eta (momentum * buf + grad_w L_train(w, alpha) + wd * w)``
  (the next step of the weight optimizer), ``grad_alpha L_val(w', alpha) -
  eta * H v`` where ``v = grad_w' L_val(w', alpha)`` and the mixed Hessian-vector
  product ``H v`` comes from :func:`finite_difference_hvp`.

The weights are restored bit for bit after the virtual step. The validation
loader runs in lockstep with the training loader, so both are resumable from
any unit. Derive is the DARTS parse (:meth:`ArchParameters.derive`).

With a cost (README "Searching for a device") the architecture loss gains
``darts_weight * E[cost] / T`` (ProxylessNAS Eq. 4 with the expectation of
FBNet Sec. 3.2): ``E[cost]`` sums, over every edge, the softmaxed op weights
times each op's cost in the child network (:func:`controller.constraints.expected_cost`),
and ``T`` is the target (without one: ``E[cost]`` at uniform weights).

Under torch.distributed (:mod:`enas.distributed`) each process computes its terms on
its part of the training and validation batches and the architecture gradient is
averaged over the processes; second order also averages the gradient of the virtual
step and the vector ``v``, so ``w'``, ``v`` and ``eps`` are those of the whole batch.
Every process then takes the same Adam step: the alphas, hence the derived genotype,
are identical on all of them (checked after every step).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from enas.distributed import Dist
from enas.flat_sgd import FlatSGD
from enas.search.base import Phase, Strategy
from enas.search.heatmap import render_heatmap
from enas.search.trainer import ChildTrainer
from enas.search.unrolled import exact_fp32, finite_difference_hvp, virtual_step, weights_frozen, zeros_for_none
from shared_model.arch_params import ArchParameters
from shared_model.spaces import Space

logger = logging.getLogger(__name__)


class DartsStrategy(Strategy):
    """DARTS search (first or second order) on the shared supernet.

    Args:
        space: the search space (its op list must be the supernet's).
        model: the supernet (trained by ``trainer``).
        arch: the op logits, on the model's device.
        trainer: weight step (``train_step``) and loss (``loss``) of the supernet.
        train_loader: weight-step batches (``epoch_batches(epoch, start)``, ``len``).
        valid_loader: architecture-step batches; iterated in lockstep with
            ``train_loader`` (it should shuffle per epoch; the search build augments it
            like the weight batches, as the official ``train_search.py`` does).
        arch_optimizer: optimizer over ``arch.parameters()`` (DARTS: Adam 3e-4, (0.5, 0.999), wd 1e-3).
        order: 1 (first-order) or 2 (second-order, unrolled).
        unrolled_r: norm of the finite-difference perturbation (DARTS: 0.01).
        cost: an :class:`~enas.cost.objective.SearchCost` adding the expected-cost term, or None.
    """

    name = "darts"

    def __init__(self, space: Space, model: nn.Module, arch: ArchParameters, trainer: ChildTrainer,
                 train_loader, valid_loader, arch_optimizer: torch.optim.Optimizer, order: int = 1,
                 unrolled_r: float = 0.01, cost=None):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        if tuple(getattr(model, "ops", space.mixing_ops)) != tuple(space.mixing_ops):
            raise ValueError(f"supernet ops {list(model.ops)} differ from the space's {list(space.mixing_ops)}")
        if arch.shapes != dict(space.mixing_shapes()):
            raise ValueError("architecture parameters do not match the search space")
        self.space, self.model, self.arch, self.trainer = space, model, arch, trainer
        self.train_loader, self.valid_loader = train_loader, valid_loader
        self.arch_optimizer, self.order, self.unrolled_r = arch_optimizer, order, float(unrolled_r)
        self.derive_details: Dict[str, Any] = {}
        self.cost = cost
        self.dist = Dist()  # this process's place in a torch.distributed run (set by the build)

    # -- phases ------------------------------------------------------------
    def phases(self, epoch: int) -> List[Phase]:
        return [Phase("train", len(self.train_loader), lambda start: self._train(epoch, start), steps=True)]

    def valid_batches(self, epoch: int, start: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Validation batch of every training unit ``start, start + 1, ...`` of ``epoch``.

        Unit ``i`` takes batch ``i mod n`` of validation pass ``i div n``; each
        pass is its own loader epoch, so the batches depend only on ``(epoch, i)``.
        """
        n, total = len(self.valid_loader), len(self.train_loader)
        passes = -(-total // n)  # validation passes per training epoch
        i = start
        while True:
            p, offset = divmod(i, n)
            yield from self.valid_loader.epoch_batches(epoch * passes + p, offset)
            i = (p + 1) * n

    def _train(self, epoch: int, start: int) -> Iterator[Dict[str, Any]]:
        valid = self.valid_batches(epoch, start)
        for (x, y), (xv, yv) in zip(self.train_loader.epoch_batches(epoch, start), valid):
            arch_stats = self.arch_step(x, y, xv, yv)
            # Mixing weights recomputed after the arch step and detached: the weight step leaves alpha alone.
            stats = self.trainer.train_step(x, y, self.arch.mixed(detach=True))
            yield dict(stats, **arch_stats)

    def _weight_params(self) -> List[Tuple[torch.Tensor, Dict[str, Any]]]:
        return [(p, g) for g in self.trainer.optimizer.param_groups for p in g["params"] if p.requires_grad]

    def _fp32_train_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``trainer.loss`` without autocast: bf16 would round the tiny perturbation away."""
        logits, aux = self.model(x, self.arch.mixed())  # (B, classes)
        loss = F.cross_entropy(logits.float(), y)
        if aux is not None and self.trainer.aux_weight > 0:
            loss = loss + self.trainer.aux_weight * F.cross_entropy(aux.float(), y)
        return loss

    def _unrolled_grads(self, x, y, xv, yv) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Second-order ``grad_alpha`` (DARTS eq. 7-8), validation loss at ``w'`` and its logits.

        With the weight optimizer's flat buffers (:class:`enas.flat_sgd.FlatSGD` over exactly these
        weights) the virtual step, the restores and the finite differences act on the buffers.
        """
        pairs = self._weight_params()
        params = [p for p, _ in pairs]
        alphas = list(self.arch.parameters())
        opt = self.trainer.optimizer
        flat = opt if isinstance(opt, FlatSGD) and opt.covers(params) else None
        loss_t, _ = self.trainer.loss(x, y, self.arch.mixed(detach=True))
        grads_t = torch.autograd.grad(loss_t, params, allow_unused=True)
        if flat is not None:
            weights, groups, buffers = [flat.flat_param], [opt.param_groups[0]], [flat.flat_momentum]
            grads_t = self.dist.mean([flat.gather(grads_t)])
        else:
            weights, groups = params, [group for _, group in pairs]
            buffers = [opt.state.get(p, {}).get("momentum_buffer") for p in params]
            grads_t = self.dist.mean(zeros_for_none(grads_t, params))
        saved = [w.detach().clone() for w in weights]
        try:
            # w' = the weight optimizer's next SGD step (momentum, dampening, nesterov, wd), no clipping.
            for w, g, group, buf in zip(weights, grads_t, groups, buffers):
                virtual_step(w, g, group, buf)
            loss_v, logits_v = self.trainer.loss(xv, yv, self.arch.mixed())
            grads = torch.autograd.grad(loss_v, alphas + params, allow_unused=True)
        finally:
            with torch.no_grad():
                for w, s in zip(weights, saved):
                    w.copy_(s)
        d_alpha = zeros_for_none(grads[:len(alphas)], alphas)
        d_w = grads[len(alphas):]
        d_w = self.dist.mean([flat.gather(d_w)] if flat is not None else zeros_for_none(d_w, params))
        # eta folded into v (per parameter group): same perturbation as DARTS, result already times eta.
        vector = [group["lr"] * g for group, g in zip(groups, d_w)]
        with exact_fp32(self.trainer.device), weights_frozen(params):
            hvp = finite_difference_hvp(lambda: self._fp32_train_loss(x, y), weights, alphas, vector,
                                        self.unrolled_r)
        return self.dist.mean([da - h for da, h in zip(d_alpha, hvp)]), loss_v, logits_v

    def arch_grads(self, x, y, xv, yv) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Architecture gradient (one per ``arch`` parameter), validation loss and logits.

        The weights are unchanged on return (second order restores them exactly).
        """
        self.trainer.set_mode(True)
        if self.order == 2:
            return self._unrolled_grads(x, y, xv, yv)
        alphas = list(self.arch.parameters())
        with weights_frozen([p for p, _ in self._weight_params()]):
            loss_v, logits_v = self.trainer.loss(xv, yv, self.arch.mixed())
            grads = zeros_for_none(torch.autograd.grad(loss_v, alphas, allow_unused=True), alphas)
        return self.dist.mean(grads), loss_v, logits_v

    def cost_term(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``(darts_weight * E[cost] / scale, E[cost])`` of the current logits, or None without a cost."""
        if self.cost is None:
            return None
        return self.cost.darts_term({c: F.softmax(self.arch.alpha(c), dim=-1) for c in self.arch.cells})

    def arch_step(self, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor,
                  yv: torch.Tensor) -> Dict[str, float]:
        """One architecture update; skipped (and counted) if the gradient is not finite."""
        grads, loss_v, logits_v = self.arch_grads(x, y, xv, yv)
        logged: List[torch.Tensor] = []
        term = self.cost_term()
        if term is not None:
            # The cost term depends on alpha only: its gradient adds to either order's.
            penalty, expected = term
            alphas = [self.arch.alpha(c) for c in self.arch.cells]
            grads = [g + p for g, p in zip(grads, torch.autograd.grad(penalty, alphas))]
            logged = [expected.detach().float(), penalty.detach().float()]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        acc = (logits_v.detach().argmax(1) == yv).float().mean()
        loss_acc = self.dist.mean([torch.stack([loss_v.detach().float(), acc])])[0]  # the whole batch's
        # One host sync for the logged values and the finiteness check.
        loss, acc, norm, *costs = torch.cat([loss_acc, norm.float().reshape(1)] + [c.reshape(1) for c in logged]
                                            ).cpu().tolist()
        extra = dict(zip(("expected_cost", "cost_penalty"), costs))
        finite = all(v == v and abs(v) != float("inf") for v in (loss, norm))
        if finite:
            for p, g in zip(self.arch.parameters(), grads):
                p.grad = g.detach()
            self.arch_optimizer.step()
            self.trainer.note_finite("architecture")
        else:
            self.trainer.note_nonfinite("architecture loss or gradient", kind="architecture")
        self.arch_optimizer.zero_grad(set_to_none=True)
        self.dist.check_same("architecture parameters (alphas)", list(self.arch.parameters()))
        return {"valid_loss": loss, "valid_acc": acc, "arch_grad_norm": norm,
                "arch_skipped": float(not finite), **extra}

    def _summary(self) -> Dict[str, float]:
        out = {}
        for cell in self.arch.cells:
            out[f"alpha_entropy_{cell}"] = self.arch.entropy(cell)
        if self.cost is not None:
            out["derived_cost"] = self.cost.cost(self.arch.derive(self.space))
            out["expected_cost"] = float(self.cost_term()[1].detach())
        return out

    def epoch_result(self) -> Tuple[Optional[Any], Dict[str, Any]]:
        return self.arch.derive(self.space), self._summary()

    def epoch_images(self) -> Dict[str, np.ndarray]:
        """Softmaxed op weights as one ``(H, W, 3)`` uint8 heatmap per cell type."""
        rows = [f"{i}<-{j}" for i, j in self.space.mixing_edges()]
        return {f"darts/alpha_{cell}": render_heatmap(self.arch.weights_table(cell).cpu().numpy(), rows,
                                                      list(self.space.mixing_ops), title=f"{cell}")
                for cell in self.arch.cells}

    # -- derive ------------------------------------------------------------
    def derive_phase(self, samples: int) -> Phase:
        # ``samples`` is for sampling strategies; DARTS derives by one deterministic parse.
        return Phase("derive", 1, self._derive)

    def _details(self) -> Dict[str, Any]:
        genotype = self.arch.derive(self.space)
        return {
            "strategy": self.name, "order": self.order, "ops": list(self.space.mixing_ops),
            "edges": [[i, j] for i, j in self.space.mixing_edges()],
            "alphas": {c: self.arch.weights_table(c).cpu().tolist() for c in self.arch.cells},
            "chosen": {c: self.arch.choices(self.space, c) for c in self.arch.cells},
            "genotype": self.space.arch_to_json(genotype), **self._summary(),
            # DARTS has no scored candidates, so no Pareto front: the derived cell's cost.
            **(self.cost.derived_details(genotype) if self.cost is not None else {}),
        }

    def _derive(self, start: int) -> Iterator[Dict[str, Any]]:
        if start == 0:
            self.derive_details = self._details()
            yield self._summary()

    def derive_result(self) -> Tuple[Any, Dict[str, Any]]:
        if not self.derive_details:
            self.derive_details = self._details()
        return self.space.arch_from_json(self.derive_details["genotype"]), dict(self.derive_details)

    # -- checkpoint ----------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"arch": self.arch.state_dict(), "arch_optimizer": self.arch_optimizer.state_dict(),
                "trainer": self.trainer.state_dict(), "order": self.order,
                "derive_details": self.derive_details}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if int(state["order"]) != self.order:
            logger.warning("checkpoint was a DARTS order-%d search; continuing with order %d",
                           int(state["order"]), self.order)
        self.arch.load_state_dict(state["arch"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.trainer.load_state_dict(state["trainer"])
        self.derive_details = dict(state["derive_details"])


def build_darts_strategy(space: Space, model: nn.Module, arch: ArchParameters, trainer: ChildTrainer,
                         train_loader, valid_loader, order: int = 1, arch_lr: float = 3e-4,
                         arch_betas: Tuple[float, float] = (0.5, 0.999), arch_weight_decay: float = 1e-3,
                         unrolled_r: float = 0.01, cost=None) -> DartsStrategy:
    """DARTS strategy with its Adam optimizer over the op logits (DARTS defaults)."""
    arch_optimizer = torch.optim.Adam(arch.parameters(), lr=arch_lr, betas=tuple(arch_betas),
                                      weight_decay=arch_weight_decay)
    return DartsStrategy(space, model, arch, trainer, train_loader, valid_loader, arch_optimizer,
                         order=order, unrolled_r=unrolled_r, cost=cost)
