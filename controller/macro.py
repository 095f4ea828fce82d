"""The ENAS macro controller: an LSTM that designs a whole network layer by layer (Pham et al. 2018, Sec. 2.3).

Follows the official ``general_controller.py`` (melodyguan/enas) with
``search_whole_channels`` as ``scripts/cifar10_macro_search.sh`` runs it. Per
layer ``j``:

1. one LSTM step; the op logits are ``c * tanh(h W_soft)`` (no bias; official
   ``c = 1.5``); the chosen op's embedding is the next input;
2. a second LSTM step whose output ``h_j`` becomes layer ``j``'s anchor. For
   ``j > 0`` each earlier anchor ``i`` is scored by additive attention
   ``q_i = v . tanh(W1 h_i + W2 h_j)`` and skip bit ``i`` is drawn from the
   two logits ``c * tanh([-q_i, q_i])`` (bit 1 = connect). The next input is
   ``sum_i bit_i h_i / (1 + sum_i bit_i)``, the official "average" of the
   chosen anchors (a zero vector when none is chosen); layer 0 feeds ``g_emb``.

Anchor ``i`` is the controller's state of layer ``i`` while the bit it scores
connects the network's state ``i`` (the stem for ``i = 0``): the official
pairing, kept as it is.

**Skip penalty** (Sec. 3.1, "skip connection sparsity"): per layer the sum
over its bits of ``KL(Bernoulli(p_i) || Bernoulli(target))`` with
``p_i = sigmoid(c * tanh(q_i))`` (the official ``skip_prob``: the sigmoid of the
bit's logit, not the sampling probability ``sigmoid(2 c tanh(q_i))``), averaged
over layers ``1 .. L-1``; :class:`~controller.reinforce.Reinforce` adds
``skip_weight`` times it to each sample's loss (official 0.8, target 0.4). It is
returned as ``extras["skip_kl"]`` together with the skip rate
``extras["skip_rate"]`` (bits set / ``L (L - 1) / 2``, no gradient).

As in the micro controller the entropy is the exact categorical entropy summed
over decisions (the official code sums ``-log p(a) p(a)`` of the drawn actions).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

from controller.policy import LSTMPolicy, plan_decisions
from shared_model.spaces import Decision

# Per layer: the position of its op decision and the positions of its skip bits.
_LayerPlan = Tuple[int, List[int]]


def plan_layers(decisions: Sequence[Decision]) -> List[_LayerPlan]:
    """Check that ``decisions`` are the macro order and group them per layer.

    Layer ``j`` is one ``"op"`` decision followed by ``j`` ``"skip"`` decisions
    with slots ``0 .. j-1``, layers in order, all in one cell.

    Raises:
        ValueError: any other list (with the first offending decision).
    """
    plan_decisions(decisions, skips=True)
    layers: List[_LayerPlan] = []
    for pos, d in enumerate(decisions):
        if d.cell != decisions[0].cell:
            raise ValueError(f"decision {pos}: the macro controller designs one network, but cell {d.cell!r} "
                             f"follows {decisions[0].cell!r}")
        if d.kind == "op" and d.node == len(layers):
            layers.append((pos, []))
        elif d.kind == "skip" and layers and d.node == len(layers) - 1 and d.slot == len(layers[-1][1]):
            layers[-1][1].append(pos)
        else:
            raise ValueError(f"decision {pos}: expected the op of layer {len(layers)} or skip bit "
                             f"{len(layers[-1][1]) if layers else 0} of layer {len(layers) - 1}, got a "
                             f"{d.kind!r} decision of node {d.node}, slot {d.slot}")
    for j, (_, skips) in enumerate(layers):
        if len(skips) != j:
            raise ValueError(f"layer {j} needs {j} skip decision(s) (one per earlier layer), got {len(skips)}")
    return layers


class MacroController(LSTMPolicy):
    """ENAS macro controller (official ``GeneralController``, ``search_whole_channels``).

    Args:
        decisions: the macro space's decisions (``MacroSpace.decisions``).
        num_ops: op vocabulary size (6); every op decision must have this many choices.
        hidden: LSTM width (official 64).
        num_layers: stacked LSTM layers (official 1).
        tanh_constant: op and skip logits become ``c * tanh(logits)`` (official 1.5); ``None`` disables.
        temperature: logits are divided by it before the tanh; ``None`` disables (official).
        skip_target: the skip probability the penalty pulls towards (official 0.4).
        init_range: all weights start uniform in ``(-init_range, init_range)``.
    """

    def __init__(self, decisions: Sequence[Decision], num_ops: int, hidden: int = 64, num_layers: int = 1,
                 tanh_constant: Optional[float] = 1.5, temperature: Optional[float] = None,
                 skip_target: float = 0.4, init_range: float = 0.1) -> None:
        if not 0.0 < skip_target < 1.0:
            raise ValueError(f"skip_target must be in (0, 1), got {skip_target}")
        super().__init__(decisions, num_ops, hidden, num_layers, temperature, init_range)
        self._plan = plan_layers(self.decisions)
        self._check_op_choices()
        self.tanh_constant, self.skip_target = tanh_constant, skip_target
        # [P(bit 0), P(bit 1)] of the target Bernoulli, as the official skip_targets.
        self.register_buffer("skip_targets", torch.tensor([1.0 - skip_target, skip_target]))

    def _run(self, batch: int, forced: Optional[torch.Tensor] = None, greedy: bool = False,
             generator: Optional[torch.Generator] = None
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Walk the layers for ``batch`` networks (see the module docstring)."""
        state = self._zero_state(batch)
        trace = self._trace(batch, forced, greedy, generator)
        g_emb = self.g_emb.expand(batch, -1)  # (B, H)
        x = g_emb
        anchors: List[torch.Tensor] = []  # (B, H) per layer
        keys: List[torch.Tensor] = []  # (B, H) W1 h per layer
        kl = torch.zeros(batch, device=g_emb.device)
        bits_set = torch.zeros(batch, device=g_emb.device)
        for j, (op_pos, skip_pos) in enumerate(self._plan):
            state = self._step(x, state)
            logits = self._squash(state[-1][0] @ self.w_soft, self.tanh_constant)  # (B, O)
            x = self.w_emb[trace.record(op_pos, logits)]  # (B, H)
            state = self._step(x, state)
            h = state[-1][0]  # (B, H)
            if j > 0:
                scores = torch.tanh(torch.stack(keys, dim=1) + (h @ self.w_attn_2).unsqueeze(1))  # (B, j, H)
                q = (scores @ self.v_attn).squeeze(2)  # (B, j)
                logits = self._squash(torch.stack([-q, q], dim=2), self.tanh_constant)  # (B, j, 2)
                skip = torch.stack([trace.record(pos, logits[:, i]) for i, pos in enumerate(skip_pos)],
                                   dim=1).to(h.dtype)  # (B, j) of 0/1
                p = torch.sigmoid(logits)  # (B, j, 2): the official skip_prob
                kl = kl + (p * torch.log(p / self.skip_targets)).sum(dim=(1, 2))
                bits_set = bits_set + skip.sum(dim=1)
                chosen = (skip.unsqueeze(1) @ torch.stack(anchors, dim=1)).squeeze(1)  # (B, H)
                x = chosen / (1.0 + skip.sum(dim=1, keepdim=True))
            else:
                x = g_emb
            anchors.append(h)
            keys.append(h @ self.w_attn_1)
        layers = len(self._plan)
        extras = {"skip_kl": kl / max(1, layers - 1),
                  "skip_rate": bits_set / max(1, layers * (layers - 1) // 2)}
        return trace.actions, trace.log_prob, trace.entropy, extras
