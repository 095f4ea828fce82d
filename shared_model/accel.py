"""Per-op acceleration of weight-sharing supernets: ``torch.compile`` and CUDA graphs per op module.

A weight-sharing supernet changes its path every step, so the network as a
whole cannot be compiled or captured once. Each candidate-op module of an op
bank, however, always sees the same input shapes (its edge's), so it can be
compiled once per shape (:func:`compile_op_banks`) or captured as a CUDA graph
once per shape, forward and backward (:func:`graph_op_banks`,
``torch.cuda.make_graphed_callables``): a freshly sampled path then replays a
few dozen graphs instead of launching thousands of small kernels (the ENAS
step at batch 160 is launch-bound on a large GPU). Both change no parameter
or ``state_dict`` key; both fall back to the eager op when they cannot be used.

Measured on CPU (docs/performance.md): compiling loses (inductor's batch-norm
reductions at 8-80 channels are several times slower than ATen's), so neither
is on by default; the CUDA figures come from ``scripts/gpu_check.sh``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Hashable, Iterator, List, Optional

import torch
from torch import nn

logger = logging.getLogger(__name__)


def op_bank_modules(model: nn.Module) -> List[nn.Module]:
    """Every candidate-op module of the model's op banks (cell ``edges``, macro ``branches``)."""
    mods: List[nn.Module] = []
    for m in model.modules():
        for name in ("edges", "branches"):
            banks = getattr(m, name, None)
            if not isinstance(banks, nn.ModuleList):
                continue
            for bank in banks:
                mods.extend(bank if isinstance(bank, nn.ModuleList) else [bank])
    return mods


# -- torch.compile -------------------------------------------------------------------
def compile_unavailable(device: torch.device) -> Optional[str]:
    """Why ``torch.compile`` cannot run on ``device`` here, or None if it can."""
    try:
        import torch._dynamo as dynamo
        import torch._inductor  # noqa: F401
    except Exception as exc:  # a broken install surfaces as any import error
        return f"torch.compile is not importable ({exc})"
    if not dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version"
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        if not has_triton():
            return "Triton is not installed (CUDA compilation needs it)"
    return None


def compile_op_banks(model: nn.Module, device: torch.device, mode: Optional[str] = None) -> int:
    """``module.compile()`` every op-bank module in place; returns how many (0: unavailable).

    Dynamo keeps one compiled graph per input shape and op type, so the limit on
    recompilations is raised to hold them all; an op that fails to compile runs
    eagerly (``suppress_errors``) instead of stopping the search.
    """
    reason = compile_unavailable(device)
    if reason is not None:
        logger.warning("run.compile: %s; running the ops eagerly", reason)
        return 0
    import torch._dynamo as dynamo

    mods = [m for m in op_bank_modules(model) if any(True for _ in m.parameters()) or len(m._modules)]
    dynamo.config.suppress_errors = True
    dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, 512)
    dynamo.config.accumulated_recompile_limit = max(dynamo.config.accumulated_recompile_limit, 4096)
    for m in mods:
        m.compile(dynamic=False, mode=mode)
    return len(mods)


# -- CUDA graphs ------------------------------------------------------------------------
class _Plain(nn.Module):
    """The op's own forward (bypassing the graph dispatch), as a module for the capture."""

    def __init__(self, op: nn.Module, forward: Callable, kwargs: Dict[str, Any]):
        super().__init__()
        self.op = op
        self._forward, self._kwargs = forward, kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, **self._kwargs)


def _graph_key(x: torch.Tensor, kwargs: Dict[str, Any]) -> Hashable:
    autocast = torch.is_autocast_enabled(x.device.type)
    dtype = torch.get_autocast_dtype(x.device.type) if autocast else None
    return (tuple(x.shape), x.stride(), x.dtype, x.device, x.requires_grad, autocast, dtype,
            tuple(sorted(kwargs.items())))


class GraphCache:
    """Per-shape graphs of one op module, made on first use (see :func:`graph_op_banks`).

    Args:
        op: the op module (its class ``forward`` is what gets captured).
        capture: ``capture(module, sample_args) -> callable``; default
            ``torch.cuda.make_graphed_callables`` (tests pass a fake).
        eligible: whether an input may use a graph; default: a CUDA tensor.
    """

    def __init__(self, op: nn.Module, capture: Optional[Callable] = None,
                 eligible: Optional[Callable[[torch.Tensor], bool]] = None):
        self.op = op
        self.plain = type(op).forward.__get__(op)
        self.capture = capture or torch.cuda.make_graphed_callables
        self.eligible = eligible or (lambda x: x.is_cuda)
        self.graphs: Dict[Hashable, Optional[Callable]] = {}  # None: capture failed, run eagerly

    def __call__(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        # Graphs hold the training-mode forward and backward; evaluation (rewards) runs eagerly.
        if not (self.op.training and torch.is_grad_enabled() and self.eligible(x)):
            return self.plain(x, **kwargs)
        key = _graph_key(x, kwargs)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, kwargs)
        graphed = self.graphs[key]
        return self.plain(x, **kwargs) if graphed is None else graphed(x)

    def _capture(self, x: torch.Tensor, kwargs: Dict[str, Any]) -> Optional[Callable]:
        sample = x.detach().clone().requires_grad_(x.requires_grad)
        try:
            return self.capture(_Plain(self.op, self.plain, dict(kwargs)), (sample,))
        except Exception as exc:  # an op the capture cannot handle stays eager
            logger.warning("CUDA graph capture of %s failed (%s); it runs eagerly", type(self.op).__name__, exc)
            return None


def graph_op_banks(model: nn.Module, capture: Optional[Callable] = None,
                   eligible: Optional[Callable[[torch.Tensor], bool]] = None) -> List[GraphCache]:
    """Route every op-bank module with parameters through a :class:`GraphCache`.

    The module's ``forward`` is shadowed by an instance attribute, so parameters,
    ``state_dict`` keys and hooks on the module are unchanged. Parameter-free ops
    (pools, identity) stay eager: there is little to launch. Bf16 autocast must
    run with ``cache_enabled=False`` (``enas.runtime.autocast`` does), as
    ``make_graphed_callables`` requires.
    """
    caches = []
    for op in op_bank_modules(model):
        if not any(True for _ in op.parameters()):
            continue
        cache = GraphCache(op, capture, eligible)
        op.forward = cache
        caches.append(cache)
    return caches


def graph_counts(caches: List[GraphCache]) -> Iterator[int]:
    """Number of captured graphs per cache (for logging and tests)."""
    return (sum(g is not None for g in c.graphs.values()) for c in caches)
