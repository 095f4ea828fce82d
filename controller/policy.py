"""What the ENAS controllers share (Pham et al. 2018, Sec. 2.1): samples, decision plans, the LSTM core.

* :class:`Sample`: one sampled architecture with its log-probability, entropy
  and further per-sample statistics (``extras``).
* :func:`plan_decisions`: groups a space's flat decision list into cells and
  nodes and validates it (used by every policy).
* :class:`LSTMPolicy`: the official controller variables, the LSTM step,
  batched sampling and teacher-forced rescoring; :class:`~controller.lstm.Controller`
  (micro) and :class:`~controller.macro.MacroController` (macro) walk the decisions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from shared_model.spaces import Decision

# A node plan: (decision positions of its inputs with their choice counts, positions of its ops).
_NodePlan = Tuple[List[Tuple[int, int]], List[int]]


@dataclass
class Sample:
    """One sampled architecture.

    Attributes:
        actions: one integer per decision, in :class:`Decision` order.
        log_prob: scalar tensor, ``sum log pi(a_t)``; carries the graph for REINFORCE.
        entropy: scalar tensor, the exact categorical entropy summed over decisions.
        extras: further per-sample statistics of the policy, by name (e.g. the macro
            controller's differentiable ``skip_kl``); REINFORCE loss terms may read them.
    """

    actions: List[int]
    log_prob: torch.Tensor
    entropy: torch.Tensor
    extras: Dict[str, torch.Tensor] = field(default_factory=dict)


def plan_decisions(decisions: Sequence[Decision], skips: bool = False) -> List[Tuple[str, List[_NodePlan]]]:
    """Group a flat decision list into cells and nodes, in order of appearance.

    Args:
        decisions: e.g. ``SearchSpace.decisions``; any node count, op count or
            number of slots per node, as long as every cell and node is contiguous.
        skips: accept ``"skip"`` decisions (binary connection bits, macro space).
            They are validated and count for contiguity but are not part of the
            node plans: only policies that draw every decision on its own accept them.

    Returns:
        ``[(cell, [(inputs, ops), ...]), ...]`` where ``inputs`` holds
        ``(position, num_choices)`` pairs and ``ops`` positions in ``decisions``.

    Raises:
        ValueError: an empty list, an unknown kind, a cell or node split in
            two, an input decision with more choices than earlier states, or
            a skip decision without ``skips`` or with other than 2 choices.
    """
    if not decisions:
        raise ValueError("the controller needs at least one decision")
    cells: List[Tuple[str, List[_NodePlan]]] = []
    done_cells: set = set()
    node_ids: set = set()
    current: Optional[int] = None
    for pos, d in enumerate(decisions):
        if d.kind not in ("input", "op", "skip"):
            raise ValueError(f"decision {pos}: unknown kind {d.kind!r}")
        if d.kind == "skip" and not skips:
            raise ValueError(f"decision {pos}: skip decisions need a policy that samples layer connections "
                             "(controller.macro.MacroController or a uniform policy)")
        if d.kind == "skip" and d.num_choices != 2:
            raise ValueError(f"decision {pos}: a skip decision has 2 choices, got {d.num_choices}")
        if d.num_choices < 1:
            raise ValueError(f"decision {pos}: needs at least one choice, got {d.num_choices}")
        if not cells or cells[-1][0] != d.cell:
            if d.cell in done_cells:
                raise ValueError(f"decision {pos}: the decisions of cell {d.cell!r} are not contiguous")
            done_cells.add(d.cell)
            cells.append((d.cell, []))
            node_ids, current = set(), None
        nodes = cells[-1][1]
        if d.node != current:
            if d.node in node_ids:
                raise ValueError(f"decision {pos}: the decisions of node {d.node} in {d.cell!r} "
                                 "are not contiguous")
            node_ids.add(d.node)
            current = d.node
            nodes.append(([], []))
        if d.kind == "skip":
            continue
        if d.kind == "input":
            available = len(nodes) + 1  # two cell inputs + the computed nodes before this one
            if d.num_choices > available:
                raise ValueError(f"decision {pos}: {d.num_choices} input choices but only "
                                 f"{available} earlier states in cell {d.cell!r}")
            nodes[-1][0].append((pos, d.num_choices))
        else:
            nodes[-1][1].append(pos)
    return cells


class _Trace:
    """Actions, log-probability and entropy of a batch walking the decisions."""

    def __init__(self, batch: int, num_decisions: int, device: torch.device, forced: Optional[torch.Tensor],
                 greedy: bool, generator: Optional[torch.Generator]) -> None:
        self.actions = torch.zeros(batch, num_decisions, dtype=torch.long, device=device)
        self.log_prob = torch.zeros(batch, device=device)
        self.entropy = torch.zeros(batch, device=device)
        self.rows = torch.arange(batch, device=device)
        self.forced, self.greedy, self.generator = forced, greedy, generator

    def record(self, pos: int, logits: torch.Tensor) -> torch.Tensor:
        """Choose decision ``pos`` from ``logits`` (B, K) and add its log-probability and entropy."""
        a = LSTMPolicy._choose(logits, None if self.forced is None else self.forced[:, pos], self.greedy,
                               self.generator)
        log_p = logits.log_softmax(dim=1)  # (B, K)
        self.log_prob = self.log_prob + log_p[self.rows, a]
        self.entropy = self.entropy + -(log_p.exp() * log_p).sum(dim=1)
        self.actions[:, pos] = a
        return a


class LSTMPolicy(nn.Module):
    """The LSTM core and sampling API of the ENAS controllers (Pham et al. 2018, Sec. 2.1).

    Holds the official controller variables (``micro_controller`` and
    ``general_controller`` have the same set): a bias-free LSTM, the start
    embedding ``g_emb``, op embeddings ``w_emb`` (O, H), op softmax ``w_soft``
    (H, O) and the attention ``w_attn_1``, ``w_attn_2`` (H, H) and ``v_attn``
    (H, 1), all uniform in ``(-init_range, init_range)``. Subclasses walk the
    decisions in ``_run``.
    """

    def __init__(self, decisions: Sequence[Decision], num_ops: int, hidden: int, num_layers: int,
                 temperature: Optional[float], init_range: float) -> None:
        super().__init__()
        if num_ops < 1 or hidden < 1 or num_layers < 1:
            raise ValueError(f"num_ops, hidden and num_layers must be positive, "
                             f"got {num_ops}, {hidden}, {num_layers}")
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.decisions: Tuple[Decision, ...] = tuple(decisions)
        self.num_ops, self.hidden, self.num_layers, self.temperature = num_ops, hidden, num_layers, temperature
        # The official LSTM has no bias: i, f, o, g = [x, h] W.
        self.lstm = nn.ModuleList(nn.LSTMCell(hidden, hidden, bias=False) for _ in range(num_layers))
        self.g_emb = nn.Parameter(torch.empty(1, hidden))
        self.w_emb = nn.Parameter(torch.empty(num_ops, hidden))
        self.w_soft = nn.Parameter(torch.empty(hidden, num_ops))
        self.w_attn_1 = nn.Parameter(torch.empty(hidden, hidden))
        self.w_attn_2 = nn.Parameter(torch.empty(hidden, hidden))
        self.v_attn = nn.Parameter(torch.empty(hidden, 1))
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)

    @property
    def num_decisions(self) -> int:
        return len(self.decisions)

    def _check_op_choices(self) -> None:
        bad = [i for i, d in enumerate(self.decisions) if d.kind == "op" and d.num_choices != self.num_ops]
        if bad:
            raise ValueError(f"op decision {bad[0]} has {self.decisions[bad[0]].num_choices} "
                             f"choices but num_ops is {self.num_ops}")

    # -- core ---------------------------------------------------------------
    def _step(self, x: torch.Tensor, state: List[Tuple[torch.Tensor, torch.Tensor]]
              ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        new = []
        for cell, (h, c) in zip(self.lstm, state):
            h, c = cell(x, (h, c))  # (B, H) each
            new.append((h, c))
            x = h
        return new

    def _zero_state(self, batch: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        zeros = torch.zeros(batch, self.hidden, device=self.g_emb.device)
        return [(zeros, zeros) for _ in range(self.num_layers)]

    def _squash(self, logits: torch.Tensor, constant: Optional[float]) -> torch.Tensor:
        if self.temperature is not None:
            logits = logits / self.temperature
        if constant is not None:
            logits = constant * torch.tanh(logits)
        return logits

    @staticmethod
    def _choose(logits: torch.Tensor, forced: Optional[torch.Tensor], greedy: bool,
                generator: Optional[torch.Generator]) -> torch.Tensor:
        if forced is not None:
            if bool(((forced < 0) | (forced >= logits.shape[1])).any()):
                raise ValueError(f"action out of range 0..{logits.shape[1] - 1}: {forced.tolist()}")
            return forced
        if greedy:
            return logits.argmax(dim=1)
        probs = logits.detach().softmax(dim=1)  # (B, K)
        if generator is not None and generator.device != probs.device:
            # A CPU generator keeps seeded sampling reproducible for a controller on any device.
            return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(probs.device)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    def _trace(self, batch: int, forced: Optional[torch.Tensor], greedy: bool,
               generator: Optional[torch.Generator]) -> _Trace:
        return _Trace(batch, self.num_decisions, self.g_emb.device, forced, greedy, generator)

    def _run(self, batch: int, forced: Optional[torch.Tensor] = None, greedy: bool = False,
             generator: Optional[torch.Generator] = None
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Walk the decisions for ``batch`` architectures: actions ``(B, D)``, log_prob ``(B,)``,
        entropy ``(B,)`` and extras (name -> ``(B,)``)."""
        raise NotImplementedError

    # -- public API ---------------------------------------------------------
    def sample_batch(self, n: int, generator: Optional[torch.Generator] = None,
                     greedy: bool = False) -> List[Sample]:
        """Sample ``n`` architectures in one batched pass (each keeps its own graph slice)."""
        if n < 1:
            raise ValueError(f"need at least one sample, got {n}")
        actions, log_prob, entropy, extras = self._run(n, greedy=greedy, generator=generator)
        return [Sample(a, log_prob[i], entropy[i], {k: v[i] for k, v in extras.items()})
                for i, a in enumerate(actions.tolist())]

    def sample(self, generator: Optional[torch.Generator] = None, greedy: bool = False) -> Sample:
        """Sample one architecture; ``greedy`` takes the argmax at every decision."""
        return self.sample_batch(1, generator=generator, greedy=greedy)[0]

    def score(self, actions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Teacher-forced scoring of a ``(B, D)`` action batch -> log_prob, entropy, extras."""
        if actions.dim() != 2 or actions.shape[1] != self.num_decisions:
            raise ValueError(f"expected actions of shape (B, {self.num_decisions}), "
                             f"got {tuple(actions.shape)}")
        forced = actions.to(device=self.g_emb.device, dtype=torch.long)
        _, log_prob, entropy, extras = self._run(forced.shape[0], forced=forced)
        return log_prob, entropy, extras

    def forward(self, actions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced scoring of a ``(B, D)`` action batch -> log_prob ``(B,)``, entropy ``(B,)``."""
        log_prob, entropy, _ = self.score(actions)
        return log_prob, entropy

    def log_prob(self, actions: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Re-score one action list: scalar log_prob (with grad) and entropy."""
        log_prob, entropy = self(torch.as_tensor([list(actions)], dtype=torch.long))
        return log_prob[0], entropy[0]
