"""SGD over parameters, gradients and momentum buffers that are views of three flat buffers.

An ENAS supernet holds about 1,400 parameter tensors, and the official update
(``optim.update_off_path``, ENAS ``_build_train``: weight decay and momentum on every
variable) touches all of them every step. Per tensor, the zeroing of the
gradients, the gradient norm and the fused SGD step each cost a few
microseconds of dispatch: 12 ms of a 200 ms ENAS step at the peers' size on 2 CPU
threads (``docs/performance.md``), for about 4 MB of arithmetic. With every
parameter, gradient and momentum buffer a view of one contiguous buffer, the
three become one operation each (0.6 ms, plus about 0.5 ms for the checks that
the views still hold), with ``torch.optim.SGD``'s arithmetic (momentum, Nesterov,
weight decay; no dampening, which the zero initial buffers could not express).

The views are what the rest of the code sees: ``model.state_dict()`` and the
optimizer's per-parameter state keep their names, shapes and layouts, so
checkpoints look as before and load either way (loaded momentum buffers are
copied into the flat buffer). Whenever the views no longer hold (a gradient set
to ``None`` and recreated by autograd, as with ``optim.update_off_path`` off; a
parameter whose ``.data`` was replaced), the step falls back to
``torch.optim.SGD``'s own per-tensor step, which gives the same result.
"""
from __future__ import annotations

import operator
from typing import List, Optional, Sequence

import torch
from torch.optim.sgd import sgd as sgd_update

_GRAD = operator.attrgetter("grad")
_TRAINABLE = operator.attrgetter("requires_grad")


def flattenable(params: List[torch.nn.Parameter]) -> bool:
    """Whether ``params`` can live in one flat buffer: trainable, one device and floating dtype, dense."""
    if not params or len({(p.device, p.dtype) for p in params}) != 1 or not params[0].is_floating_point() \
            or not all(map(_TRAINABLE, params)):
        return False
    return all(not p.is_sparse and (p.is_contiguous() or p.is_contiguous(memory_format=torch.channels_last))
               for p in params)


def _views(flat: torch.Tensor, like: List[torch.Tensor]) -> List[torch.Tensor]:
    """One view of ``flat`` per tensor of ``like``: consecutive spans, each with its tensor's strides."""
    out, offset = [], 0
    for t in like:
        out.append(flat.as_strided(t.shape, t.stride(), offset))
        offset += t.numel()
    return out


class FlatSGD(torch.optim.SGD):
    """``torch.optim.SGD`` (one parameter group, fused kernel) over views of flat buffers.

    Construction moves every parameter's data into one buffer (``p.data`` becomes a
    view, so build it after the model has its device and memory format and before
    anything records parameter addresses, e.g. CUDA graphs), gives every parameter
    a zero gradient that is a view of a second buffer and a zero momentum buffer
    that is a view of a third.
    """

    def __init__(self, params: List[torch.nn.Parameter], **options):
        params = list(params)
        if not flattenable(params):
            raise ValueError("FlatSGD needs dense trainable parameters of one device and floating dtype")
        if options.get("dampening", 0):
            # Zero buffers stand for "no step yet", which is exact only without dampening.
            raise ValueError("FlatSGD takes no dampening")
        super().__init__(params, fused=True, **options)
        total = sum(p.numel() for p in params)
        like = params[0]
        self._flat_param = like.new_empty(total)
        self._flat_grad = like.new_zeros(total)
        self._flat_momentum = like.new_zeros(total)
        self._params = params
        for p, view in zip(params, _views(self._flat_param, params)):
            view.copy_(p.detach())
            p.data = view
        self._ptrs = [p.data_ptr() for p in params]
        self._grads = _views(self._flat_grad, params)
        self._buffers = _views(self._flat_momentum, params)
        self._scratch: Optional[tuple] = None  # gather()'s buffer and its views
        self.attach_grads()
        self._attach_buffers()
        self.register_load_state_dict_post_hook(FlatSGD._attach_buffers)

    def _attach_buffers(self) -> None:
        """Momentum buffers back into the flat buffer (a loaded state brings its own tensors)."""
        for group in self.param_groups:
            group["fused"], group["foreach"] = True, None
        for p, view in zip(self._params, self._buffers):
            state = self.state[p]
            loaded = state.get("momentum_buffer")
            if loaded is not view:
                if loaded is None:
                    view.zero_()  # a checkpoint keeps no buffer for a parameter that never had a gradient
                else:
                    view.copy_(loaded)
                state["momentum_buffer"] = view

    def is_flat(self) -> bool:
        """Whether every parameter's data is still its view of the flat buffer (same group, same tensors)."""
        group = self.param_groups
        return (len(group) == 1 and len(group[0]["params"]) == len(self._params)
                and all(map(operator.is_, group[0]["params"], self._params))
                and list(map(torch.Tensor.data_ptr, self._params)) == self._ptrs)

    def attach_grads(self) -> bool:
        """Zero all gradients as the flat buffer's views (re-attaching any that were dropped or replaced).

        Returns whether the parameters are still views (else the caller zeroes gradients its own way).
        """
        if not self.is_flat():
            return False
        if not self._grads_attached():
            for p, view in zip(self._params, self._grads):
                # A frozen parameter keeps no gradient, so that no step moves it.
                p.grad = view if p.requires_grad else None
        self._flat_grad.zero_()
        return True

    def _grads_attached(self) -> bool:
        """Every gradient is its view, and every parameter trainable (C-level loops: ~0.15 ms)."""
        return all(map(operator.is_, map(_GRAD, self._params), self._grads)) and all(map(_TRAINABLE, self._params))

    def flat_grad(self) -> Optional[torch.Tensor]:
        """The flat gradient buffer when every gradient is its view (after a backward), else ``None``.

        ``None`` too while some parameter is frozen (``requires_grad`` off): its zero gradient view
        would let weight decay and momentum move it, which torch's SGD (gradient ``None``) does not.
        """
        if self.is_flat() and self._grads_attached():
            return self._flat_grad
        return None

    @property
    def flat_param(self) -> torch.Tensor:
        """The buffer every parameter is a view of (changed in place, the parameters change)."""
        return self._flat_param

    @property
    def flat_momentum(self) -> torch.Tensor:
        """The buffer every momentum buffer is a view of."""
        return self._flat_momentum

    def covers(self, params: Sequence[torch.Tensor]) -> bool:
        """Whether ``params`` are exactly this optimizer's parameters, each still its view, with every
        momentum buffer its view too: then a step over the flat buffers is a step over ``params``."""
        return (len(params) == len(self._params) and all(map(operator.is_, params, self._params)) and self.is_flat()
                and all(self.state[p].get("momentum_buffer") is b for p, b in zip(self._params, self._buffers)))

    def gather(self, tensors: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
        """One tensor per parameter (``None``: zeros) copied into a flat buffer laid out like
        :attr:`flat_param`; the buffer is reused by the next call."""
        if self._scratch is None:
            buf = torch.empty_like(self._flat_param)
            self._scratch = buf, _views(buf, self._params)
        buf, views = self._scratch
        pairs = [(v, t) for v, t in zip(views, tensors) if t is not None]
        if len(pairs) < len(views):
            buf.zero_()
        if pairs:
            torch._foreach_copy_([v for v, _ in pairs], [t for _, t in pairs])
        return buf

    def zero_grad(self, set_to_none: bool = True) -> None:
        if set_to_none or not self.attach_grads():
            super().zero_grad(set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        """One SGD step: a single fused update of the flat buffers while the views hold."""
        # The momentum buffers stay views: SGD updates them in place and a loaded state is copied
        # back into them (_attach_buffers).
        if closure is not None or self.flat_grad() is None:
            return super().step(closure)
        g = self.param_groups[0]
        sgd_update([self._flat_param], [self._flat_grad], [self._flat_momentum], fused=True,
                   weight_decay=g["weight_decay"], momentum=g["momentum"], lr=g["lr"],
                   dampening=g["dampening"], nesterov=g["nesterov"], maximize=g["maximize"])
        return None
