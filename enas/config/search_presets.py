"""Per-strategy defaults and the presets of ``enas search``.

``paper`` resolves per strategy: ENAS the official micro-search script values (REFERENCE
Sec. 2-3, the dataclass defaults of :mod:`enas.config.search`), DARTS its ``train_search.py``
values (REFERENCE Sec. 4), random search Li & Talwalkar's CIFAR-10 run on the DARTS space
and network. ``quick`` runs in minutes on a laptop CPU on the built-in digits set;
``mobile`` is ``quick`` with a latency budget (README "Searching for a device").
"""
from __future__ import annotations

from typing import Any, Dict

from enas.errors import UserError

STRATEGIES = ("enas", "darts", "random", "evolution", "bo")
# Random search with weight sharing runs on the DARTS space (Li & Talwalkar 2019, Sec. 5);
# evolution and BO run the ENAS search protocol with another policy (README "Strategies").
DEFAULT_SPACE = {"enas": "micro", "random": "darts", "darts": "darts", "evolution": "micro", "bo": "micro"}
# ENAS: the l2 term of every loss covers all variables, so off-path weights decay every step.
# Random: Li & Talwalkar set every p.grad = None before the step and run only the sampled ops,
# so PyTorch's SGD skips the rest. DARTS: the mixed forward reaches every op anyway.
DEFAULT_UPDATE_OFF_PATH = {"enas": True, "random": False, "darts": True, "evolution": True, "bo": True}

_DARTS_PAPER: Dict[str, Any] = {
    "epochs": 50, "data.batch_size": 64,
    "model.channels": 16, "model.layers": 8, "model.auxiliary": False, "model.dropout": 0.0,
    "optim.schedule": "cosine", "optim.lr_max": 0.025, "optim.lr_min": 0.001,
    "optim.nesterov": False, "optim.weight_decay": 3e-4, "optim.grad_clip": 5.0,
}

# Li & Talwalkar's CIFAR-10 run (liamcli/randomNAS_release scripts/run_experiment.sh: 150
# epochs, batch 64, grad clip 1, 24 initial channels; the rest are the defaults of
# searchers/random_weight_share.py and benchmarks/cnn/darts/darts_wrapper_discrete.py: 8 layers,
# SGD 0.025 cosine to 0.001, momentum 0.9, wd 3e-4, train_portion 0.5, no cutout) and its
# derive (1000 candidates per round on 10 minibatches, the best 10 on the whole split).
_RANDOM_PAPER: Dict[str, Any] = {
    **_DARTS_PAPER, "epochs": 150, "model.channels": 24, "optim.grad_clip": 1.0,
    "derive.samples": 1000, "derive.eval_batches": 10, "derive.top_k": 10,
}

_QUICK: Dict[str, Any] = {
    "epochs": 20, "data.dataset": "digits", "data.batch_size": 32, "data.valid_fraction": 0.2,
    "data.pad": 1, "data.flip": False,  # digits are not mirror-symmetric
    # A small space that shared weights learn within a few hundred steps: with 5 nodes and
    # 5 cells, conv-heavy random paths stay near chance for 800 steps on 8x8 digits.
    "model.num_nodes": 4, "model.channels": 8, "model.layers": 3, "model.auxiliary": False,
    "model.dropout": 0.0, "optim.sgdr_t0": 20,
    # The paper-text controller (tanh constant 2.5) with no op bias: the script values bound
    # the op logits to +-0.44 and start 64% sep convs, so 200 updates barely move the policy.
    "controller.tanh_constant": 2.5, "controller.official_op_bias": False, "controller.lr": 0.01,
    "controller.updates_per_epoch": 10, "derive.samples": 40,
    "evolution.population": 20, "evolution.sample": 5, "evolution.cycles_per_epoch": 20,
    "bo.trials_per_epoch": 20, "bo.population": 20,
    "run.checkpoint_every_steps": 50, "run.log_every": 5,
    # Tiny networks: a second thread only adds synchronisation overhead.
    "run.threads": 1,
}

CELL_OUTPUTS = ("conv", "concat")
#: Strategies driven by a propose / tell policy; like random search they run the ENAS search
#: network on the spaces that declare it (``Space.enas_network``) and DARTS's elsewhere.
PROPOSERS = ("evolution", "bo")


def default_cell_output(strategy: str, space: str) -> str:
    """The cell output of the strategy's official search network.

    DARTS (``model_search.Cell``), and random search on the DARTS space (Li &
    Talwalkar run DARTS's network): the plain concat of all nodes. ENAS
    (``micro_child._enas_layer``): a 1x1 conv of the loose ends back to C
    channels, which is also the only output a sampled loose-end concat (micro
    space) fits.
    """
    if strategy == "darts":
        return "concat"
    return "conv" if strategy == "enas" or _enas_network(space) else "concat"


def default_aux_trainable(strategy: str, space: str) -> bool:
    """Whether the search optimizer trains the supernet's auxiliary head.

    The official ENAS child (``micro_child._build_train``) hands the optimizer
    only the variables without ``aux_head`` in their name, so its head keeps its
    initial weights while its loss still trains the cells below it (REFERENCE
    Sec. 3): not trained for ENAS, and for random search on the micro space,
    which runs the same network. DARTS's and Li & Talwalkar's search networks
    have no aux head; with one it is trained, as any PyTorch module would be.
    """
    return not (strategy == "enas" or (strategy in PROPOSERS + ("random",) and _enas_network(space)))


def _enas_network(space: str) -> bool:
    """Whether sampling strategies run the official ENAS search network on ``space`` (a space hint)."""
    from shared_model.spaces import get_space

    try:
        return bool(get_space(space).enas_network)
    except ValueError:
        return False  # an unknown space is refused with its name when the space is built


# A small-device search (README "Searching for a device"): the quick search, pricing the network
# `enas train --preset quick` retrains by its latency at batch 1 on one CPU thread (measured into
# RUN/latency_table.json), every architecture within 3 ms (hard constraint) and ranked by
# MnasNet's soft reward inside the budget. The table is timed with the thread's CPU clock,
# which other processes on a shared machine do not inflate.
_MOBILE: Dict[str, Any] = {
    **_QUICK, "cost.model": "latency", "cost.target": 3.0, "cost.constraint": "both", "cost.batch_size": 1,
    "cost.device": "cpu", "cost.threads": 1, "cost.clock": "cpu",
}

PRESETS = ("paper", "quick", "mobile")


def mobile_network(space: Any) -> Dict[str, Any]:
    """The mobile preset prices the network ``enas train --preset quick`` retrains (not the supernet)."""
    from enas.config.train import preset_overrides as train_preset

    train = {**train_preset("quick"), **space.train_overrides("quick")}
    return {"cost.channels": train["model.channels"], "cost.layers": train["model.layers"]}


def preset_overrides(preset: str, strategy: str) -> Dict[str, Any]:
    """Flat overrides of a preset for a strategy."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    out: Dict[str, Any] = {}
    if strategy == "darts":
        out.update(_DARTS_PAPER)
    elif strategy == "random":
        out.update(_RANDOM_PAPER)
    if preset in ("quick", "mobile"):
        out.update(_QUICK if preset == "quick" else _MOBILE)
        if strategy in ("darts", "random"):
            out.update({"optim.lr_max": 0.05})
        if strategy == "random":
            out.update({"derive.eval_batches": 2, "derive.top_k": 3})
    return out
