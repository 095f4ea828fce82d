"""One shared-weight training step and one reward evaluation (ENAS Sec. 2.2).

Used by every strategy that trains the supernet on a given architecture
(ENAS, random search, and the DARTS weight step). Non-finite losses or
gradients skip the optimizer step and are counted; after ``max_nonfinite``
in a row the run stops with a message naming the likely causes.
"""
from __future__ import annotations

import logging
import operator
from typing import Any, Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from enas.errors import UserError
from enas.flat_sgd import FlatSGD
from enas.runtime import autocast

logger = logging.getLogger(__name__)
_TRAINING = operator.attrgetter("training")


class NonFiniteError(UserError):
    """Too many consecutive non-finite steps."""


class ChildTrainer:
    """Trains supernet weights with SGD on sampled or mixed architectures.

    Args:
        model: the supernet, ``model(x, arch) -> (logits, aux)``.
        optimizer: optimizer over the supernet weights.
        device: training device.
        aux_weight: weight of the auxiliary loss (when the model returns one).
        grad_clip: max global gradient norm, or None.
        amp: ``auto``/``bf16``/``off`` (bf16 autocast only on CUDA).
        max_nonfinite: consecutive skipped steps before stopping.
        update_off_path: give every optimizer parameter a (zero) gradient before the
            step, so SGD's weight decay and momentum move the op banks the sampled
            architecture did not use. The official ENAS child adds
            ``l2 * sum(w ** 2)`` over all its variables to every loss (``src/utils.py``
            ``get_train_ops``), so every shared weight decays and its momentum
            buffer moves on every step. ``False``: parameters without a gradient
            are skipped by the optimizer (cheaper; what Li & Talwalkar's random
            search does: it sets every ``p.grad = None`` and runs only the sampled ops).
        reducer: under torch.distributed, ``reducer(optimizer, stats) -> stats`` averages the
            gradients and the step's ``(loss, accuracy)`` over the processes after the
            backward pass (:class:`enas.distributed.GradientAverager`); None in one process.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 aux_weight: float = 0.4, grad_clip: Optional[float] = 5.0, amp: str = "auto",
                 max_nonfinite: int = 20, update_off_path: bool = True, reducer=None):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.reducer = reducer
        self.update_off_path = update_off_path
        self.aux_weight, self.grad_clip, self.amp = aux_weight, grad_clip, amp
        self.max_nonfinite = max_nonfinite
        # Consecutive skips per kind of step ("weights", "architecture"): a finite step of
        # one kind must not hide an endless run of non-finite steps of the other.
        self.in_row: Dict[str, int] = {}
        self.nonfinite_total = 0
        # Taken once: the model's module tree must not change after the trainer is built.
        self._modules = list(model.modules())

    def set_mode(self, training: bool) -> None:
        """``model.train(training)``, skipped when every module already is in that mode.

        ``Module.train`` walks the whole tree through ``Module.__setattr__``; the
        paper-size supernet has about 5,000 modules, so the walk costs milliseconds,
        paid on every step and every reward. Reading the flags is ~30x cheaper and
        still notices a submodule switched elsewhere (see docs/performance.md).
        """
        flags = list(map(_TRAINING, self._modules))  # C-level loop: ~5,000 modules in 0.1 ms
        if (not all(flags)) if training else any(flags):
            self.model.train(training)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def loss(self, x: torch.Tensor, y: torch.Tensor, arch) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss (with auxiliary term) and logits for ``arch``."""
        with autocast(self.device, self.amp):
            logits, aux = self.model(x, arch)  # (B, classes)
            loss = F.cross_entropy(logits.float(), y)
            if aux is not None and self.aux_weight > 0:
                loss = loss + self.aux_weight * F.cross_entropy(aux.float(), y)
        return loss, logits

    def train_step(self, x: torch.Tensor, y: torch.Tensor, arch) -> Dict[str, float]:
        """One SGD step on ``arch``; returns loss, accuracy and whether it was skipped."""
        self.set_mode(True)
        self._clear_grads()
        loss, logits = self.loss(x, y, arch)
        loss.backward()
        acc = (logits.detach().argmax(1) == y).float().mean()
        loss_acc = torch.stack([loss.detach().float(), acc])
        if self.reducer is not None:
            # Every process then holds the same gradients and statistics, so the clipping
            # and the finiteness check below decide the same on all of them.
            loss_acc = self.reducer(self.optimizer, loss_acc)
        # Off-path parameters hold zero gradients when update_off_path is on, so the
        # clipping norm below equals the norm over the on-path gradients alone.
        norm = self._grad_norm()
        # One host sync per step: loss, accuracy and the finiteness check together.
        stats = torch.cat([loss_acc, norm.detach().float().reshape(1)]).cpu().tolist()
        finite = all(map(lambda v: v == v and abs(v) != float("inf"), (stats[0], stats[2])))
        if finite:
            self.optimizer.step()
            self.note_finite("weights")
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.note_nonfinite("loss or gradient")
        return {"loss": stats[0], "acc": stats[1], "grad_norm": stats[2], "skipped": float(not finite)}

    def _grad_norm(self) -> torch.Tensor:
        """Total L2 norm of the gradients, which are clipped to ``grad_clip`` (``clip_grad_norm_``)."""
        flat = self.optimizer.flat_grad() if isinstance(self.optimizer, FlatSGD) else None
        # Every gradient a view of the optimizer's flat buffer: that one tensor stands for all.
        grads = [flat] if flat is not None else [
            p.grad.detach() for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = nn.utils.get_total_norm(grads)  # multi-tensor norms
        if self.grad_clip is not None and grads:
            # clip_grad_norm_'s scaling (which reads parameters' .grad, not a buffer), in place.
            torch._foreach_mul_(grads, torch.clamp(self.grad_clip / (norm + 1e-6), max=1.0))
        return norm

    def _clear_grads(self) -> None:
        """Reset gradients: zeros for every parameter, or ``None`` (skipped by SGD)."""
        if not self.update_off_path:
            self.optimizer.zero_grad(set_to_none=True)
            return
        if isinstance(self.optimizer, FlatSGD) and self.optimizer.attach_grads():
            return  # every gradient is a zeroed view of the optimizer's flat buffer
        missing = []
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                # A frozen parameter (requires_grad False) must not decay either.
                if p.grad is None and p.requires_grad:
                    missing.append(p)
        # Materialised once (and again after a skipped step dropped them); afterwards
        # zero_grad zeroes the existing tensors in place and backward accumulates into them.
        for p in missing:
            p.grad = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.optimizer.zero_grad(set_to_none=False)

    @property
    def nonfinite_in_row(self) -> int:
        return max(self.in_row.values(), default=0)

    def note_finite(self, kind: str = "weights") -> None:
        self.in_row[kind] = 0

    def note_nonfinite(self, what: str, kind: str = "weights") -> None:
        """Count a skipped step of ``kind``; raise after too many of that kind in a row."""
        self.in_row[kind] = self.in_row.get(kind, 0) + 1
        self.nonfinite_total += 1
        logger.warning("non-finite %s: step skipped (%d in a row, %d in total)",
                       what, self.in_row[kind], self.nonfinite_total)
        if self.in_row[kind] >= self.max_nonfinite:
            raise NonFiniteError(
                f"{self.in_row[kind]} consecutive non-finite steps ({kind}): the learning rate is "
                "probably too high, or the data contains bad values (NaN/inf); run stopped, "
                "the last checkpoint is intact")

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, arch, sync: bool = True) -> Union[float, torch.Tensor]:
        """Accuracy of ``arch`` on one batch with the shared weights (eval mode).

        BN still uses batch statistics (the supernet keeps no running stats). With
        ``sync=False`` the result stays a 0-d device tensor (no wait for the device).
        """
        self.set_mode(False)
        with autocast(self.device, self.amp):
            logits, _ = self.model(x, arch)  # (B, classes)
        correct = (logits.argmax(1) == y).float().mean()
        # A non-finite forward gives a NaN reward, which the controller update skips.
        acc = torch.where(torch.isfinite(logits).all(), correct, torch.nan)
        return float(acc) if sync else acc

    def state_dict(self) -> Dict[str, Any]:
        return {"in_row": dict(self.in_row), "nonfinite_total": self.nonfinite_total}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.in_row = {str(k): int(v) for k, v in state["in_row"].items()}
        self.nonfinite_total = int(state["nonfinite_total"])
