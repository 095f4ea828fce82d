"""The contract of a search space: what strategies, policies and the CLI may ask of it.

A search space is one module that registers a factory with
:func:`shared_model.spaces.register_space` (timm style). The object it builds
(a :class:`Space`) declares everything that depends on the space:

* **policy side**: the flat :class:`Decision` list any policy samples
  (the ENAS LSTM, a uniform sampler), :meth:`Space.decode` /
  :meth:`Space.encode` between one integer per decision and the space's
  frozen architecture type, :meth:`Space.random_actions`, :meth:`Space.size`
  and policy hints (:meth:`Space.enas_op_bias`);
* **architecture I/O**: :meth:`Space.arch_from_json`, :meth:`Space.arch_to_json`,
  :meth:`Space.parse_arch`, each malformed input one :class:`ValueError` line;
* **networks**: the weight-sharing supernet (``forward(x, arch)`` with an
  architecture or the space's DARTS mixing weights) and the fixed child for
  retraining;
* **DARTS** (Liu et al. 2019, Sec. 2.1/2.4): the mixing-weight shapes, the
  edges and ops they index, and ``derive`` from softmaxed weights;
* **presentation**: :meth:`Space.describe` (text lines) and
  :meth:`Space.graphs` (neutral graphs that ``enas.runs.draw`` renders);
* **cost** (hardware-aware search): the child network of an architecture as
  :class:`~shared_model.cost_blocks.Block` objects (:meth:`Space.cost_blocks`),
  the blocks any architecture can place (:meth:`Space.cost_vocabulary`) and,
  for DARTS, the blocks of every (edge, op) choice (:meth:`Space.mixing_cost_blocks`).

Nothing here does I/O or reads a config: it is torch-only model code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from shared_model.cost_blocks import Block, NetSpec
from shared_model.ops import op_info


@dataclass(frozen=True)
class Decision:
    """One categorical choice of a policy.

    Attributes:
        cell: the cell the decision belongs to (``"normal"``/``"reduce"``, or ``"cell"``).
        node: 0-based computed node (in a DARTS-style cell its genotype index is ``node + 2``).
        slot: which choice of the node (cell spaces: 0/1 for the two pairs; NB201: the source edge;
            macro skips: the earlier state the bit connects).
        kind: ``"input"`` (choose among ``num_choices`` earlier states), ``"op"``, or ``"skip"``
            (a connection bit, ``num_choices`` 2: 1 connects state ``slot`` to the node).
        num_choices: number of categories.
    """

    cell: str
    node: int
    slot: int
    kind: str
    num_choices: int


@dataclass
class CellGraph:
    """A cell as a plain graph, for drawing (``enas.runs.draw`` renders it).

    Attributes:
        title: caption, e.g. ``"normal cell"``.
        labels: node labels in topological order.
        kinds: per node ``"input"``, ``"node"`` or ``"output"``.
        edges: ``(source, target, op label or None)``, indices into ``labels``.
        layout: ``"dag"`` (columns by depth, left to right) or ``"chain"`` (one node per row, top
            to bottom, edges that skip rows bowing to the side: a layer-by-layer network).
    """

    title: str
    labels: List[str]
    kinds: List[str]
    edges: List[Tuple[int, int, Optional[str]]] = field(default_factory=list)
    layout: str = "dag"


def enas_op_bias(ops: Sequence[str]) -> Tuple[List[float], List[float]]:
    """Official ENAS op-logit bias init and normal-cell prior for an op list.

    The official micro controller initialises the learnable op bias to 10 for
    the two separable convs and 0 otherwise, and adds a fixed +0.25 / -0.25
    prior in the normal cell (REFERENCE Sec. 2). Generalised by op metadata:
    every op of the ``sep_conv`` family gets the conv values.
    """
    conv = [op_info(op).family == "sep_conv" for op in ops]
    return [10.0 if c else 0.0 for c in conv], [0.25 if c else -0.25 for c in conv]


class Space:
    """Base class of a registered search space; subclasses fill in the contract.

    Attributes:
        name: the registry name.
        arch_type: the frozen architecture class (``to_dict``/``from_dict``/``from_json``).
        distinct_inputs: a node's input decisions must differ (read by the uniform policy).
    """

    # Annotations only: a dataclass subclass declares them as fields.
    name: str
    distinct_inputs: bool
    arch_type: type

    # -- policy side ----------------------------------------------------------
    @property
    def decisions(self) -> Tuple[Decision, ...]:
        raise NotImplementedError

    @property
    def policy_ops(self) -> Tuple[str, ...]:
        """The op vocabulary of every ``"op"`` decision (action ``k`` = ``policy_ops[k]``)."""
        raise NotImplementedError

    def decode(self, actions: Sequence[int]) -> Any:
        raise NotImplementedError

    def encode(self, arch: Any) -> List[int]:
        raise NotImplementedError

    def contains(self, arch: Any) -> bool:
        try:
            self.encode(arch)
        except ValueError:
            return False
        return True

    def random_actions(self, generator: Optional[torch.Generator] = None) -> List[int]:
        """Uniform actions over this space."""
        return [int(torch.randint(d.num_choices, (1,), generator=generator)) for d in self.decisions]

    def size(self) -> int:
        """Number of distinct action sequences."""
        n = 1
        for d in self.decisions:
            n *= d.num_choices
        return n

    def enas_op_bias(self) -> Tuple[List[float], List[float]]:
        """ENAS controller hints: op-bias init and normal-cell prior over :attr:`policy_ops`."""
        return enas_op_bias(self.policy_ops)

    def for_layers(self, layers: int) -> "Space":
        """This space as searched by a network of ``layers`` layers.

        Itself, unless the architecture fixes the depth (``arch_sets_layers``, the
        macro space: one op and skip decisions per layer), which returns a resized copy.
        """
        return self

    #: the architecture fixes the network depth: ``build_child`` takes it from the architecture
    #: and ``model.layers`` must match (:meth:`arch_overrides`)
    arch_sets_layers: bool = False

    # -- architecture I/O -----------------------------------------------------
    def arch_from_json(self, data: Any) -> Any:
        """The architecture of a parsed JSON value; ``ValueError`` (one line) if malformed."""
        return self.arch_type.from_dict(data)  # type: ignore[attr-defined]

    #: the smallest ``layers`` the networks take, and what ``layers`` counts
    min_layers: int = 3
    layers_meaning: str = "two of them are reduction cells"

    #: top-level JSON fields of the architecture type (:meth:`claims_json`)
    json_fields: Tuple[str, ...] = ()

    def claims_json(self, data: Any) -> bool:
        """Whether a parsed JSON value looks like this space's architecture (has one of its fields)."""
        return isinstance(data, dict) and any(f in data for f in self.json_fields)

    def claims_string(self, text: str) -> bool:
        """Whether a command-line text is this space's architecture string (none by default)."""
        return False

    def arch_from_string(self, text: str) -> Any:
        """The architecture of its string form; ``ValueError`` (one line) if malformed."""
        raise ValueError(f"the {self.name} space has no architecture string")

    def describe_json(self, arch: Any) -> Dict[str, Any]:
        """Machine-readable description (``enas show --json``)."""
        return {"description": self.describe(arch)}

    def arch_to_json(self, arch: Any) -> Dict[str, Any]:
        return arch.to_dict()

    def parse_arch(self, text: str) -> Any:
        """The architecture of a JSON text; ``ValueError`` (one line) if malformed."""
        return self.arch_type.from_json(text)  # type: ignore[attr-defined]

    # -- networks -------------------------------------------------------------
    def search_overrides(self, preset: str) -> Dict[str, Any]:
        """Search-config defaults this space needs on top of a preset (dotted keys; None = unset)."""
        return {}

    #: sampling strategies run the official ENAS search network here (conv cell output of the
    #: loose ends, untrained auxiliary head): the search config's defaults follow it
    enas_network: bool = False

    #: the ``enas train`` preset used when none is given
    default_train_preset: str = "darts"

    def train_overrides(self, preset: str) -> Dict[str, Any]:
        """Retrain-config defaults this space needs on top of a preset (dotted keys)."""
        return {}

    def arch_overrides(self, arch: Any) -> Dict[str, Any]:
        """Retrain-config values an architecture fixes (dotted keys; macro: ``model.layers``)."""
        return {}

    def check_search(self, mixing: bool, **options: Any) -> None:
        """Refuse (``ValueError``) network options this space cannot search with."""

    def build_supernet(self, channels: int, layers: int, num_classes: int, in_channels: int = 3,
                       image_size: int = 32, **options: Any) -> nn.Module:
        """The weight-sharing network: ``forward(x, arch) -> (logits, aux or None)``."""
        raise NotImplementedError

    def build_child(self, arch: Any, channels: int, layers: int, num_classes: int, in_channels: int = 3,
                    image_size: int = 32, **options: Any) -> nn.Module:
        """The fixed network of ``arch`` for retraining: ``forward(x) -> (logits, aux or None)``."""
        raise NotImplementedError

    # -- DARTS ----------------------------------------------------------------
    #: the space has a DARTS relaxation (the mixing members below); ``False``: they raise
    supports_mixing: bool = True

    def mixing_shapes(self) -> Dict[str, Tuple[int, int]]:
        """Per mixed cell type its ``(num_edges, num_ops)`` logit shape, in parameter order."""
        raise NotImplementedError

    @property
    def mixing_ops(self) -> Tuple[str, ...]:
        """The ops indexed by the columns of the mixing weights."""
        raise NotImplementedError

    def mixing_edges(self) -> List[Tuple[int, int]]:
        """The ``(target, source)`` edge of each row of the mixing weights."""
        raise NotImplementedError

    def mixed_arch(self, weights: Dict[str, torch.Tensor]) -> Any:
        """The supernet's ``arch`` argument for softmaxed ``(E, K)`` weights per cell type."""
        raise NotImplementedError

    def derive_choices(self, tables: Dict[str, List[List[float]]]) -> Dict[str, List[Dict[str, Any]]]:
        """The kept edges per cell type (``node``, ``input``, ``op``, ``weight``) of softmaxed weights."""
        raise NotImplementedError

    def derive(self, tables: Dict[str, List[List[float]]]) -> Any:
        """The discrete architecture of softmaxed mixing weights (DARTS Sec. 2.4)."""
        raise NotImplementedError

    # -- presentation -----------------------------------------------------------
    def describe(self, arch: Any) -> List[str]:
        """Readable text lines of ``arch``."""
        raise NotImplementedError

    def graphs(self, arch: Any) -> Dict[str, CellGraph]:
        """One drawable graph per cell type of ``arch``."""
        raise NotImplementedError

    # -- cost (hardware-aware search) ------------------------------------------
    def cost_blocks(self, arch: Any, spec: NetSpec) -> List[Block]:
        """The eval-mode child network of ``arch`` at ``spec`` as cost blocks.

        Their latencies, measured one by one, add up to a prediction of the
        network's (FBNet Sec. 3.2). A space that lists its own blocks (ops at
        their shapes and strides, fixed parts) makes them add up to the exact
        parameters and multiply-adds of ``build_child`` too. This default traces
        the child network's leaf modules (:mod:`shared_model.cost_trace`), which
        works for any space, more coarsely.
        """
        from shared_model.cost_trace import traced_blocks

        return traced_blocks(lambda: self.build_child(arch, spec.channels, spec.layers, spec.num_classes,
                                                      spec.in_channels, min(spec.hw), **dict(spec.options)),
                             (spec.in_channels,) + spec.hw)

    #: whether :meth:`cost_blocks` is the space's own exact decomposition (not the traced default)
    @property
    def exact_cost_blocks(self) -> bool:
        return type(self).cost_blocks is not Space.cost_blocks

    def cost_cover(self, spec: NetSpec) -> Iterable[Any]:
        """Architectures whose blocks together include every block any architecture can place.

        This default draws 64 seeded random architectures, which need not cover
        every block; spaces with their own blocks list an exact cover.
        """
        generator = torch.Generator().manual_seed(0)
        return [self.decode(self.random_actions(generator)) for _ in range(64)]

    def cost_vocabulary(self, spec: NetSpec) -> List[Block]:
        """Every block an architecture of this space can place at ``spec``, each once, sorted by key."""
        found: Dict[str, Block] = {}
        for arch in self.cost_cover(spec):
            found.update((b.key, b) for b in self.cost_blocks(arch, spec))
        return [found[k] for k in sorted(found)]

    def mixing_cost_blocks(self, spec: NetSpec) -> Dict[str, List[List[List[Block]]]]:
        """DARTS: per mixed cell type, per row of its mixing weights (edge) and per column (op),
        the blocks that choice places in the child network (none: empty)."""
        raise NotImplementedError(f"the {self.name} space has no DARTS cost blocks (Space.mixing_cost_blocks)")
