"""A synthetic NAS-Bench-201 table with the structure of the real one, for tests and offline benchmarks.

The official table (Dong & Yang, ICLR 2020) cannot be shipped here, so this module builds a
stand-in over all 15,625 cells, deterministic given a seed. It is *not* NAS-Bench-201 data and
no figure measured on it is a NAS-Bench-201 result. Its structure:

* **Connectivity.** An edge is *live* when it is not ``none`` and lies on a path from node 0 to
  node 3 through non-``none`` edges. A cell whose node 3 has no such path from node 0 outputs a
  constant and scores chance (10 %) on every accuracy column, as in the real table.
* **Per-edge op main effects.** Each live edge adds a value for its op: convolutions most
  (3x3 > 1x1), then skip, pooling least; every (edge, op) value is perturbed by seeded noise so
  edges differ.
* **Pairwise interactions** between live edges: a seeded random term for every pair of
  (edge, op) choices, plus a residual bonus when ``3<-0`` is a skip and the cell has a
  convolution elsewhere (the best real cells look like that).
* **Depth.** The number of convolutions on the longest live path adds capacity.
* A logistic map turns the score into test accuracy, calibrated so that the all-skip cell
  scores about 54.3 % and the best cell about 94.4 % (the real CIFAR-10 figures); the median
  falls near 88-90 %. Seeded per-cell noise is added to every accuracy column; the 12-epoch
  validation accuracy is a lower, noisier proxy of the 200-epoch figures.
* **Cost.** Every edge's op costs simulated training time whether or not it is live (the real
  network computes dead edges too); convolutions cost most. ``epoch_time_s`` is the seconds
  per epoch, ``train_time_s`` the cost of one NAS-Bench-201 query (12 epochs plus a
  validation pass, about 40-190 s; a 12,000 s budget buys roughly 140 random queries).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from enas.benchmark.table import BenchmarkTable, write_table
from shared_model.nb201_arch import EDGES, NB201_OPS, NUM_EDGES, NB201Arch, all_archs

logger = logging.getLogger(__name__)

NONE, SKIP, CONV1, CONV3, POOL = (NB201_OPS.index(o) for o in
                                  ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"))
CHANCE = 10.0
ALL_SKIP_ACC = 54.3  # NAS-Bench-201, CIFAR-10 test accuracy of the all-skip cell (REFERENCE Sec. 7)
OPTIMUM_ACC = 94.37  # NAS-Bench-201, CIFAR-10 best test accuracy (REFERENCE Sec. 7)
TARGET_MEDIAN = 88.5  # NAS-Bench-201's CIFAR-10 median lies near 87-90 %
_CEILING = 95.2  # the logistic map's asymptote (above the optimum, so the best cells are not flat)
_MAIN = np.array([0.0, 0.15, 0.7, 1.0, 0.05])  # none, skip, conv1x1, conv3x3, pool
_PARAMETRIC = 2.0  # a cell with at least one live convolution learns features at all
_EPOCH_COST = np.array([0.0, 0.1, 0.8, 2.0, 0.4])  # seconds per epoch added by each op
_BASE_EPOCH_S = 3.0  # stem, residual blocks and classifier
COLUMN_ORDER = ("valid_acc_epoch12", "valid_acc", "test_acc", "train_time_s", "epoch_time_s")


def _reachability(actions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per cell: node reachable from node 0, node reaches node 3, through non-``none`` edges."""
    n = actions.shape[0]
    on = actions != NONE  # (N, 6)
    edge = {e: on[:, k] for k, e in enumerate(EDGES)}  # (target, source) -> (N,)
    from0 = np.zeros((n, 4), dtype=bool)
    from0[:, 0] = True
    for j in range(1, 4):
        from0[:, j] = np.any([from0[:, i] & edge[(j, i)] for i in range(j)], axis=0)
    to3 = np.zeros((n, 4), dtype=bool)
    to3[:, 3] = True
    for i in range(2, -1, -1):
        to3[:, i] = np.any([to3[:, j] & edge[(j, i)] for j in range(i + 1, 4)], axis=0)
    return from0, to3


def _longest_conv_path(actions: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Convolutions on the longest live path 0 -> 3 (0..3)."""
    conv = (actions == CONV1) | (actions == CONV3)
    depth = np.full((actions.shape[0], 4), -np.inf)
    depth[:, 0] = 0
    for j in range(1, 4):
        for i in range(j):
            k = EDGES.index((j, i))
            cand = np.where(live[:, k], depth[:, i] + conv[:, k], -np.inf)
            depth[:, j] = np.maximum(depth[:, j], cand)
    return np.where(np.isfinite(depth[:, 3]), depth[:, 3], 0.0)


def synthetic_columns(seed: int = 0) -> Tuple[List[NB201Arch], Dict[str, np.ndarray]]:
    """All 15,625 cells and their synthetic columns (see the module docstring); deterministic."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 201]))
    archs = list(all_archs())
    actions = np.array([a.actions() for a in archs], dtype=np.int64)  # (N, 6)
    n = len(archs)
    from0, to3 = _reachability(actions)
    connected = from0[:, 3]
    live = np.stack([(actions[:, k] != NONE) & from0[:, i] & to3[:, j] for k, (j, i) in enumerate(EDGES)],
                    axis=1)  # (N, 6)

    main = _MAIN[None, :] * (1.0 + 0.25 * rng.standard_normal((NUM_EDGES, 5))) \
        + 0.05 * rng.standard_normal((NUM_EDGES, 5))
    main[:, NONE] = 0.0
    score = np.where(live, main[np.arange(NUM_EDGES)[None, :], actions], 0.0).sum(axis=1)
    inter = 0.1 * rng.standard_normal((NUM_EDGES, 5, NUM_EDGES, 5))
    for e in range(NUM_EDGES):
        for f in range(e + 1, NUM_EDGES):
            both = live[:, e] & live[:, f]
            score += np.where(both, inter[e, actions[:, e], f, actions[:, f]], 0.0)
    conv = (actions == CONV1) | (actions == CONV3)
    has_conv = (conv & live).any(axis=1)
    residual = (actions[:, EDGES.index((3, 0))] == SKIP) & has_conv
    score += _PARAMETRIC * has_conv + 0.4 * residual + 0.35 * _longest_conv_path(actions, live)
    score -= 0.15 * ((actions == POOL) & live).sum(axis=1) * has_conv

    # Logistic map through the two published anchors (all-skip, optimum), after a power
    # transform of the score whose exponent puts the median at TARGET_MEDIAN.
    def logit(acc: float) -> float:
        p = (acc - CHANCE) / (_CEILING - CHANCE)
        return float(np.log(p / (1 - p)))

    all_skip = int(np.flatnonzero((actions == SKIP).all(axis=1))[0])
    s_lo, s_hi = score[all_skip], score[connected].max()
    t = (score - s_lo) / (s_hi - s_lo)
    lo, hi = logit(ALL_SKIP_ACC), logit(OPTIMUM_ACC - 0.05)

    def accuracy(gamma: float) -> np.ndarray:
        u = np.where(t > 0, np.abs(t) ** gamma, t)  # cells below all-skip keep a linear tail
        return CHANCE + (_CEILING - CHANCE) / (1 + np.exp(-(lo + (hi - lo) * u)))

    g_lo, g_hi = 0.2, 3.0  # the median falls as gamma grows
    for _ in range(40):
        gamma = 0.5 * (g_lo + g_hi)
        median = np.median(np.where(connected, accuracy(gamma), CHANCE))
        g_lo, g_hi = (gamma, g_hi) if median > TARGET_MEDIAN else (g_lo, gamma)
    clean = accuracy(0.5 * (g_lo + g_hi))

    test = clean + 0.12 * rng.standard_normal(n)
    valid = clean - 2.8 + 0.25 * rng.standard_normal(n)
    convs = conv.sum(axis=1)
    # 12 epochs: bigger cells are further from convergence; the proxy is noisier.
    valid12 = CHANCE + (clean - CHANCE) * (0.90 - 0.006 * convs) + 0.6 * rng.standard_normal(n)
    chance = CHANCE + 0.05 * rng.standard_normal((3, n))
    test, valid, valid12 = (np.where(connected, x, c) for x, c in zip((test, valid, valid12), chance))
    epoch = (_BASE_EPOCH_S + _EPOCH_COST[actions].sum(axis=1)) * (1.0 + 0.03 * rng.standard_normal(n))
    columns = {
        "valid_acc_epoch12": np.clip(valid12, 0.0, 100.0),
        "valid_acc": np.clip(valid, 0.0, 100.0),
        "test_acc": np.clip(test, 0.0, 100.0),
        "train_time_s": 12.35 * epoch,  # 12 epochs + a validation pass (~0.35 of an epoch)
        "epoch_time_s": epoch,
    }
    return archs, columns


def synthetic_table(seed: int = 0) -> BenchmarkTable:
    """The synthetic table in memory (rounded as :func:`write_synthetic` writes it)."""
    archs, columns = synthetic_columns(seed)
    values = np.stack([np.round(columns[c], 4) for c in COLUMN_ORDER], axis=1)
    return BenchmarkTable(archs, COLUMN_ORDER, values, source=f"<synthetic seed {seed}>")


def write_synthetic(path: str | Path, seed: int = 0) -> Path:
    """Write the synthetic table as a benchmark CSV (atomically)."""
    archs, columns = synthetic_columns(seed)
    out = write_table(path, archs, {c: columns[c] for c in COLUMN_ORDER})
    logger.info("wrote synthetic NAS-Bench-201 table (seed %d, %d cells) to %s", seed, len(archs), out)
    return out
