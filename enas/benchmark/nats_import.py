"""Convert the official NATS-Bench topology files (= NAS-Bench-201's 15,625 cells) into our CSV table.

NATS-Bench's topology search space ``tss`` (Dong et al., TPAMI 2021) is the NAS-Bench-201 space
with the same trained results. Its official files are ``NATS-tss-v1_0-3ffb9.pickle.pbz2`` (one
file, loaded whole) and the folder ``NATS-tss-v1_0-3ffb9-simple`` (one file per cell, read on
demand, "fast mode").

**Trust.** Both are Python pickles. This importer opens them only through the official
``nats_bench`` package (``pip install 'enas[nats]'``), and unpickling can run arbitrary code:
give it only files downloaded from the official NATS-Bench release. Nothing else in ``enas``
unpickles: tables are CSV, checkpoints load with ``weights_only=True``.

Per cell (averaged over the trained seeds, ``is_random=False``; NAS-Bench-201's own baselines
drew one trial at random per query) the columns of :mod:`enas.benchmark.table` are read as
NAS-Bench-201's search protocol uses them (``exps/NAS-Bench-201-algos/R_EA.py``,
``train_and_eval``):

==================== =========================================================================
``valid_acc_epoch12`` ``valid-accuracy`` of the search split at ``hp="12"`` (CIFAR-10: the
                      ``cifar10-valid`` split, trained on 25k images, validated on 25k)
``valid_acc``         the same at ``hp="200"``
``test_acc``          ``test-accuracy`` at ``hp="200"`` (CIFAR-10: the ``cifar10`` split,
                      trained on all 50k images, tested on the 10k test images)
``train_time_s``      ``train-all-time + valid-per-time`` of the search split at ``hp="12"``
``epoch_time_s``      ``train-per-time`` of the search split at ``hp="12"``
==================== =========================================================================

The API object is injectable (``api=``), so the conversion is tested without the real files.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from enas.benchmark.table import write_table
from enas.errors import UserError
from shared_model.nb201_arch import NB201Arch, NB201ArchError

logger = logging.getLogger(__name__)

DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
# dataset -> (split searched on, split reported on)
_SPLITS = {"cifar10": ("cifar10-valid", "cifar10"), "cifar100": ("cifar100", "cifar100"),
           "ImageNet16-120": ("ImageNet16-120", "ImageNet16-120")}
TRUST_NOTE = ("the official NATS-Bench files are Python pickles, opened through the nats_bench package; "
              "unpickling can run code, so give only files from the official NATS-Bench release")


def open_nats(source: str | Path) -> Any:
    """The official ``nats_bench`` topology API over ``source`` (a ``.pickle.pbz2`` file or a folder).

    Raises:
        UserError: ``nats_bench`` is not installed, the path is missing, or the API refuses it.
    """
    source = Path(source)
    if not source.exists():
        raise UserError(f"NATS-Bench source not found: {source}")
    try:
        import nats_bench  # noqa: PLC0415 - optional extra
    except ImportError:
        raise UserError("importing NATS-Bench needs the nats_bench package: pip install 'enas[nats]'") from None
    logger.warning("loading %s through nats_bench: %s", source, TRUST_NOTE)
    try:
        return nats_bench.create(str(source), "tss", fast_mode=source.is_dir(), verbose=False)
    except Exception as exc:  # noqa: BLE001 - whatever the third-party loader raises
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"nats_bench could not open {source}: {reason}") from None


def _metric(info: Dict[str, Any], key: str, where: str) -> float:
    if not isinstance(info, dict) or key not in info or info[key] is None:
        raise UserError(f"{where}: NATS-Bench gave no {key!r}")
    try:
        value = float(info[key])
    except (TypeError, ValueError):
        raise UserError(f"{where}: NATS-Bench {key!r} is not a number: {info[key]!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: NATS-Bench {key!r} is {value}")
    return value


def nats_columns(api: Any, dataset: str, limit: Optional[int] = None,
                 progress: Optional[Callable[[int, int], None]] = None) -> tuple[List[NB201Arch], Dict[str, list]]:
    """Read every cell's metrics from a ``nats_bench``-shaped API object.

    Args:
        api: has ``len(api)``, ``api.arch(i)`` (the architecture string) and
            ``api.get_more_info(i, dataset, iepoch=None, hp=..., is_random=False)``.
        dataset: one of :data:`DATASETS`.
        limit: read only the first ``limit`` cells (a partial table).
        progress: called with ``(done, total)``.
    """
    if dataset not in _SPLITS:
        raise UserError(f"unknown NATS-Bench dataset {dataset!r} (known: {', '.join(DATASETS)})")
    search, report = _SPLITS[dataset]
    total = len(api) if limit is None else min(limit, len(api))
    archs: List[NB201Arch] = []
    cols: Dict[str, list] = {k: [] for k in ("valid_acc_epoch12", "valid_acc", "test_acc", "train_time_s",
                                              "epoch_time_s")}
    for i in range(total):
        where = f"NATS-Bench cell {i}"
        try:
            archs.append(NB201Arch.from_string(api.arch(i)))
            short = api.get_more_info(i, search, iepoch=None, hp="12", is_random=False)
            full = api.get_more_info(i, search, iepoch=None, hp="200", is_random=False)
            test = full if report == search else api.get_more_info(i, report, iepoch=None, hp="200", is_random=False)
        except NB201ArchError as exc:
            raise UserError(f"{where}: {exc}") from None
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - the third-party API's own errors
            raise UserError(f"{where}: nats_bench failed: {' '.join(str(exc).split())[:200]}") from None
        cols["valid_acc_epoch12"].append(_metric(short, "valid-accuracy", where))
        cols["valid_acc"].append(_metric(full, "valid-accuracy", where))
        cols["test_acc"].append(_metric(test, "test-accuracy", where))
        cols["train_time_s"].append(_metric(short, "train-all-time", where) + _metric(short, "valid-per-time", where))
        cols["epoch_time_s"].append(_metric(short, "train-per-time", where))
        if progress is not None:
            progress(i + 1, total)
    if not archs:
        raise UserError("the NATS-Bench source holds no cells")
    return archs, cols


def import_nats(source: str | Path, dataset: str, out: str | Path, api: Any = None,
                limit: Optional[int] = None) -> Path:
    """Write the CSV table of ``dataset`` from the official files at ``source`` (or from ``api``)."""
    api = open_nats(source) if api is None else api
    archs, cols = nats_columns(api, dataset, limit=limit)
    path = write_table(out, archs, cols)
    logger.info("wrote %d NATS-Bench cells (%s) to %s", len(archs), dataset, path)
    return path
