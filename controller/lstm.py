"""The ENAS micro controller: an LSTM that samples cells (Pham et al. 2018, Sec. 2.3 and 3.1).

:class:`~controller.policy.LSTMPolicy` holds what the ENAS controllers share
(the LSTM, the embeddings and attention, batched sampling, teacher-forced
rescoring); :class:`Controller` is the micro sampler, :mod:`controller.macro`
the macro one.

The controller reads the flat :class:`~shared_model.spaces.Decision` list of a
search space and samples one integer per decision, following the official
``micro_controller.py`` (melodyguan/enas):

* Every cell starts with two LSTM steps on the learnable start embedding
  ``g_emb``; their attention keys ``W1 h`` stand for the two cell inputs. As in
  the official code the *value* fed back when a cell input is chosen is a
  zero vector (only computed nodes carry a hidden-state anchor).
* Per node the official sampler draws both inputs first and then both ops
  (``in_a, in_b, op_a, op_b``) although the arc stores them as
  ``in_a op_a in_b op_b``; actions are returned in :class:`Decision` order.
* An input decision scores the anchors with additive attention
  ``v . tanh(W1 h_j + W2 h_t)``; the next LSTM input is the chosen anchor.
* An op decision uses ``h W_soft + b_soft``; the next input is the op embedding.
* After a node's decisions one more LSTM step produces the node's anchor.
* Every later cell (the reduction cell) continues from the LSTM state of the
  previous one with a fresh anchor list; only the normal cell gets the fixed
  op prior.

Sampling is batched internally so that REINFORCE can draw many architectures
with one pass over the decisions.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from controller.policy import LSTMPolicy, Sample, plan_decisions
from shared_model.spaces import Decision

logger = logging.getLogger(__name__)

__all__ = ["Controller", "LSTMPolicy", "Sample", "plan_decisions"]


class Controller(LSTMPolicy):
    """ENAS micro controller (Pham et al. 2018, Sec. 2.3/3.1; REFERENCE Sec. 2).

    Args:
        decisions: the flat decision list of a search space (``SearchSpace.decisions``).
        num_ops: size of the op vocabulary; every op decision must have this many choices.
        hidden: LSTM width (official CIFAR scripts: 64).
        num_layers: stacked LSTM layers; attention reads the top layer.
        tanh_constant: logits become ``c * tanh(logits)`` (inputs) and
            ``(c / op_tanh_reduce) * tanh(logits)`` (ops); ``None`` disables both.
        op_tanh_reduce: divisor of ``tanh_constant`` for op logits.
        temperature: logits are divided by it before the tanh; ``None`` disables.
        op_bias_init: initial value of the learnable op bias (zeros if ``None``);
            the official value comes from :func:`shared_model.spaces.enas_op_bias`.
        normal_op_prior: fixed logit offset added to op logits of the ``"normal"``
            cell only, after the tanh (a buffer, never trained).
        init_range: all weights start uniform in ``(-init_range, init_range)``.
    """

    def __init__(self, decisions: Sequence[Decision], num_ops: int, hidden: int = 64,
                 num_layers: int = 1, tanh_constant: Optional[float] = 1.10,
                 op_tanh_reduce: float = 2.5, temperature: Optional[float] = None,
                 op_bias_init: Optional[Sequence[float]] = None,
                 normal_op_prior: Optional[Sequence[float]] = None,
                 init_range: float = 0.1) -> None:
        if op_tanh_reduce <= 0:
            raise ValueError(f"op_tanh_reduce must be positive, got {op_tanh_reduce}")
        super().__init__(decisions, num_ops, hidden, num_layers, temperature, init_range)
        self._plan = plan_decisions(self.decisions)
        self._check_op_choices()
        self.tanh_constant, self.op_tanh_reduce = tanh_constant, op_tanh_reduce
        self.b_soft = nn.Parameter(self._op_vector(op_bias_init, "op_bias_init"))
        prior = self._op_vector(normal_op_prior, "normal_op_prior")
        # Zeros when not given, so adding it is a no-op and state_dicts always match.
        self.register_buffer("normal_op_prior", prior)

    def _op_vector(self, values: Optional[Sequence[float]], name: str) -> torch.Tensor:
        if values is None:
            return torch.zeros(self.num_ops)
        out = torch.as_tensor(list(values), dtype=torch.float32)
        if out.shape != (self.num_ops,):
            raise ValueError(f"{name} needs {self.num_ops} values, got {len(out)}")
        return out

    def _run(self, batch: int, forced: Optional[torch.Tensor] = None, greedy: bool = False,
             generator: Optional[torch.Generator] = None
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Walk the decisions for ``batch`` independent architectures (see the module docstring)."""
        state = self._zero_state(batch)
        trace = self._trace(batch, forced, greedy, generator)
        rows = trace.rows
        g_emb = self.g_emb.expand(batch, -1)  # (B, H)
        op_constant = None if self.tanh_constant is None else self.tanh_constant / self.op_tanh_reduce

        for cell, nodes in self._plan:
            x = g_emb
            anchors: List[torch.Tensor] = []  # (B, H) values fed back when chosen
            keys: List[torch.Tensor] = []  # (B, H) W1 h used by the attention
            for _ in range(2):
                state = self._step(x, state)
                # Official: a cell input is fed back as zeros; only its key is informative.
                anchors.append(torch.zeros_like(state[-1][0]))
                keys.append(state[-1][0] @ self.w_attn_1)
            for inputs, ops in nodes:
                for pos, n in inputs:
                    state = self._step(x, state)
                    query = (state[-1][0] @ self.w_attn_2).unsqueeze(1)  # (B, 1, H)
                    scores = torch.tanh(torch.stack(keys[:n], dim=1) + query)  # (B, n, H)
                    logits = self._squash((scores @ self.v_attn).squeeze(2), self.tanh_constant)  # (B, n)
                    a = trace.record(pos, logits)
                    x = torch.stack(anchors[:n], dim=1)[rows, a]  # (B, H)
                for pos in ops:
                    state = self._step(x, state)
                    logits = self._squash(state[-1][0] @ self.w_soft + self.b_soft, op_constant)  # (B, O)
                    if cell == "normal":
                        logits = logits + self.normal_op_prior
                    a = trace.record(pos, logits)
                    x = self.w_emb[a]  # (B, H)
                state = self._step(x, state)
                anchors.append(state[-1][0])
                keys.append(state[-1][0] @ self.w_attn_1)
                x = g_emb
        return trace.actions, trace.log_prob, trace.entropy, {}
