"""Search protocols of the weight-sharing rows of ``enas table nb201 --weight-sharing``.

Each protocol is the list of ``enas search`` arguments that every method x seed gets on top of
``--space nb201 --strategy METHOD --seed K --benchmark FILE`` (plus ``--data-dir``,
``--dataset`` and ``--device`` when given). Strategy-specific extras are in
:data:`METHOD_EXTRAS`. The values are documented here and in README "Benchmarking with
NAS-Bench-201":

``full``
    The NAS-Bench-201 search settings exactly as the registered ``nb201`` space and the
    ``paper`` preset give them: C 16, N 5, CIFAR-10 at 32 px, each strategy's official
    epochs, batch size, optimizer, controller and derive settings (ENAS 150 epochs, DARTS
    first order 50, random search with weight sharing 150). Needs a GPU (days on a CPU).
``cpu``
    A reduced protocol for a 2-core CPU: CIFAR-10 resized to 16 px, C 8, N 1 (one cell per
    stage), 10 epochs (DARTS 5: its epoch costs about three of the others'), batch 128, 10
    controller updates per epoch, 20 derive candidates (random: 1 round, the best 3 re-scored
    on the whole split), 2 threads, no channels-last; everything else is the ``paper`` preset
    of each strategy (evolution and BO, opt-in: 10 epochs of their ENAS-protocol defaults). All three methods for one seed: 8 min 7 s on an otherwise idle 2-core
    AMD EPYC (ENAS 165 s, random 81 s, DARTS 238 s of search). Its figures show that the
    pipeline works; they say little about the methods (a handful of epochs on a tiny
    network).
``tiny``
    For tests only: the ``quick`` preset's digits (8 px), C 4, N 1, 1 epoch, batch 32, a few
    controller updates and derive candidates; seconds per search.
"""
from __future__ import annotations

from typing import Dict, List

#: ``enas search`` arguments of every protocol (shared by all methods).
PROTOCOLS: Dict[str, List[str]] = {
    "full": ["--preset", "paper"],
    "cpu": ["--preset", "paper", "--batch-size", "128",
            "--set", "data.image_size=16", "--set", "model.channels=8", "--set", "model.layers=1",
            "--set", "controller.updates_per_epoch=10", "--set", "derive.samples=20",
            "--set", "run.threads=2", "--set", "run.channels_last=off"],
    "tiny": ["--preset", "quick", "--epochs", "1", "--batch-size", "32",
             "--set", "model.channels=4", "--set", "model.layers=1", "--set", "run.channels_last=off",
             "--set", "controller.updates_per_epoch=2", "--set", "controller.samples_per_update=2",
             "--set", "derive.samples=3"],
}

#: Extra ``enas search`` arguments per protocol and method (the keys only some strategies read).
METHOD_EXTRAS: Dict[str, Dict[str, List[str]]] = {
    "full": {"darts": ["--order", "1"]},
    # DARTS gets half the epochs: each of its steps runs all five ops of every edge and adds an
    # architecture step; its epoch costs about three of the others'.
    "cpu": {"enas": ["--epochs", "10"], "darts": ["--order", "1", "--epochs", "5"],
            "random": ["--epochs", "10", "--set", "derive.rounds=1", "--set", "derive.top_k=3",
                       "--set", "derive.eval_batches=2"],
            # 100 evolution cycles per epoch: as many rewards as ENAS's 10 updates x 10 samples.
            "evolution": ["--epochs", "10"], "bo": ["--epochs", "10"]},
    "tiny": {"darts": ["--order", "1"],
             "random": ["--set", "derive.top_k=1", "--set", "derive.eval_batches=1"],
             "evolution": ["--set", "evolution.population=3", "--set", "evolution.cycles_per_epoch=4"],
             "bo": ["--set", "bo.population=3", "--set", "bo.trials_per_epoch=4", "--set", "bo.startup_trials=2"]},
}

#: The dataset each protocol searches on when ``--dataset`` is not given.
DEFAULT_DATASET = {"full": "cifar10", "cpu": "cifar10", "tiny": "digits"}

WS_METHODS = ("enas", "random", "darts", "evolution", "bo")
#: The methods run when ``--methods`` is not given: those with published weight-sharing figures.
WS_DEFAULT = ("enas", "random", "darts")

# NAS-Bench-201 (Dong & Yang, ICLR 2020, Table 5; REFERENCE Sec. 7): CIFAR-10 test accuracy (%)
# of the derived cells of weight-sharing searches, mean +- std (DARTS: a single figure, the
# all-skip cell it collapses to).
PUBLISHED_WS = {"enas": (53.89, 0.58), "darts": (54.30, None), "random": (84.07, 3.61)}
PUBLISHED_WS_NOTE = ("published: NAS-Bench-201 CIFAR-10 test accuracy of the derived cells (ENAS, DARTS first "
                     "order, random search with weight sharing) under the full search protocol; comparable only "
                     "with --protocol full on the official CIFAR-10 table")


def search_args(protocol: str, method: str) -> List[str]:
    """The protocol's ``enas search`` arguments for one method (without seed, data and folder).

    Args:
        protocol: a key of :data:`PROTOCOLS`.
        method: one of :data:`WS_METHODS` (the search strategy).

    Returns:
        ``["--space", "nb201", "--strategy", method, *protocol args, *method extras]``.

    Raises:
        KeyError: an unknown protocol.
    """
    return ["--space", "nb201", "--strategy", method, *PROTOCOLS[protocol],
            *METHOD_EXTRAS[protocol].get(method, [])]
