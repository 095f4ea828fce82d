"""Score a weight-sharing NAS-Bench-201 search run against a benchmark table (``benchmark.json``).

A search with ``--space nb201`` (ENAS, random search or DARTS on the weight-sharing NB201
supernet) writes the best architecture of every epoch (``genotypes/epoch_NNN.json``), the
derived one (``genotype.json``) and how it was chosen (``derive.json``: every candidate with
its search-time validation accuracy). Every one of those cells is in NAS-Bench-201 (Dong &
Yang, ICLR 2020), so a table lookup gives its true accuracy after full training without
training anything: the first honest view of search quality. Search-time accuracies stay as the
search wrote them (fractions, measured with shared weights); table metrics are in the table's
units (percent for NAS-Bench-201); the rank correlation does not depend on either scale. :func:`score_run` looks every
architecture up, measures how well the search-time accuracies rank the candidates (Kendall's
tau-b against the table) and writes ``RUN/benchmark.json`` atomically plus TensorBoard scalars
under ``RUN/tb``.

An architecture file holds ``{"arch": "<NB201 string>"}`` (other keys are ignored) or the
plain string. Every problem is one :class:`~enas.errors.UserError` line.
"""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from enas.benchmark.table import BenchmarkTable
from enas.runs.checkpoint import atomic_write_text
from enas.errors import UserError
from shared_model.nb201_arch import NUM_ARCHS, NB201Arch, NB201ArchError

logger = logging.getLogger(__name__)

FORMAT = "enas-benchmark-score"
VERSION = 1
OUTPUT = "benchmark.json"
TB_SUFFIX = ".benchmark"  # event files of this module, replaced on every scoring
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.json$")
_MAX_FILE = 64 * 2 ** 20  # derive.json of a long DARTS run is a few MB at most


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Kendall's tau-b rank correlation of two equally long sequences (ties handled).

    ``tau_b = (C - D) / sqrt((P - Tx) (P - Ty))`` with ``C``/``D`` the concordant/discordant
    pairs, ``P`` all pairs and ``Tx``/``Ty`` the pairs tied in ``x``/``y`` (the same value as
    ``scipy.stats.kendalltau``'s default). O(n^2) time, O(n) memory.

    Returns:
        The coefficient in [-1, 1], or None when it is undefined (fewer than two pairs of
        values, or every value of one sequence equal).
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"kendall_tau needs two 1-d sequences of one length, got {a.shape} and {b.shape}")
    n = a.size
    if n < 2:
        return None
    score = tied_x = tied_y = 0
    for i in range(n - 1):
        sx, sy = np.sign(a[i + 1:] - a[i]), np.sign(b[i + 1:] - b[i])
        score += int((sx * sy).sum())
        tied_x += int((sx == 0).sum())
        tied_y += int((sy == 0).sum())
    pairs = n * (n - 1) // 2
    denom = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    if denom == 0:
        return None
    return max(-1.0, min(1.0, score / denom))


def _finite(value: Any) -> Optional[float]:
    """``value`` as a float, or None for a missing, non-numeric, NaN or infinite value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > _MAX_FILE:
            raise UserError(f"{path} is larger than {_MAX_FILE // 2 ** 20} MiB; not a search output")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text (expected JSON)") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        stripped = text.strip()
        if stripped.startswith("|"):  # the plain architecture string, not JSON
            return stripped
        raise UserError(f"{path} is not valid JSON") from None


def _not_nb201(where: str, run_dir: Path, why: str) -> UserError:
    return UserError(f"{where} is not an NB201 architecture ({why}): {run_dir} is not an nb201 search "
                     f"(scoring against NAS-Bench-201 needs `enas search --space nb201`)")


def parse_arch(data: Any, where: str, run_dir: Path) -> NB201Arch:
    """An architecture from ``{"arch": "<string>", ...}`` or the plain string.

    Raises:
        UserError: anything else, naming ``where`` and saying the run is not an nb201 search.
    """
    text = data.get("arch") if isinstance(data, dict) else data
    if not isinstance(text, str):
        keys = ", ".join(sorted(map(str, data))[:4]) if isinstance(data, dict) else ""
        why = (f"a JSON object with keys {keys} and no 'arch' string" if isinstance(data, dict)
               else f"a JSON {type(data).__name__}")
        raise _not_nb201(where, run_dir, why)
    try:
        return NB201Arch.from_string(text)
    except NB201ArchError as exc:
        raise _not_nb201(where, run_dir, str(exc)) from None


def _check_space(run_dir: Path) -> None:
    """Refuse early when the run's saved config names another search space."""
    path = run_dir / "config.json"
    if not path.is_file():
        return
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return  # the architecture files decide
    model = config.get("model") if isinstance(config, dict) else None
    space = model.get("space") if isinstance(model, dict) else None
    if isinstance(space, str) and space != "nb201":
        raise UserError(f"{run_dir} is a search on the {space!r} space, not an nb201 search "
                        f"(scoring against NAS-Bench-201 needs `enas search --space nb201`)")


def epoch_files(run_dir: Path) -> List[Tuple[int, Path]]:
    """``(epoch, path)`` of every ``genotypes/epoch_NNN.json``, by epoch.

    Raises:
        UserError: the run folder does not exist or holds no per-epoch architectures.
    """
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    folder = run_dir / "genotypes"
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _EPOCH_FILE.match(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
    if not found:
        raise UserError(f"{run_dir} has no genotypes/epoch_NNN.json: not a search run folder, "
                        f"or the search has not finished an epoch yet")
    return sorted(found)


class _Scorer:
    """Table lookups that name the file an architecture came from when it is missing."""

    def __init__(self, table: BenchmarkTable, column: str) -> None:
        self.table, self.column = table, column

    def metrics(self, arch: NB201Arch, where: str) -> Dict[str, float]:
        if arch not in self.table:
            raise UserError(f"architecture {arch.to_string()} ({where}) is not in benchmark table "
                            f"{self.table.source} (a partial table: {len(self.table)} of {NUM_ARCHS} cells)")
        return self.table.row(arch)

    def entry(self, arch: NB201Arch, where: str) -> Dict[str, Any]:
        return {"arch": arch.to_string(), "metrics": self.metrics(arch, where),
                "rank": self.table.rank(arch, self.column)}


def _candidates(details: Dict[str, Any], where: str, run_dir: Path, scorer: _Scorer) -> Optional[List[Dict[str, Any]]]:
    raw = details.get("candidates")
    if raw is None:
        return None  # DARTS derives by one parse of the architecture weights: no candidates
    if not isinstance(raw, list):
        raise UserError(f"{where}: 'candidates' is a {type(raw).__name__}, expected a list")
    out = []
    for k, cand in enumerate(raw):
        here = f"{where}, candidate {k}"
        if not isinstance(cand, dict) or "genotype" not in cand:
            raise UserError(f"{here} has no 'genotype' (expected {{\"genotype\": ..., \"valid_acc\": ...}})")
        arch = parse_arch(cand["genotype"], here, run_dir)
        out.append({"arch": arch.to_string(), "source": cand.get("source"),
                    "search_valid_acc": _finite(cand.get("valid_acc")),
                    "metrics": scorer.metrics(arch, here)})
    return out


def _correlation(candidates: List[Dict[str, Any]], column: str) -> Dict[str, Any]:
    def tau(group: List[Dict[str, Any]]) -> Dict[str, Any]:
        scored = [c for c in group if c["search_valid_acc"] is not None]
        value = kendall_tau([c["search_valid_acc"] for c in scored], [c["metrics"][column] for c in scored])
        return {"n": len(scored), "tau": value}

    result = {"method": "kendall_tau_b", "search": "search_valid_acc", "table": column, **tau(candidates)}
    sources = sorted({str(c["source"]) for c in candidates if c["source"] is not None})
    if len(sources) > 1:  # e.g. random search: minibatch "sample" scores and "full_valid" re-scores
        result["by_source"] = {s: tau([c for c in candidates if str(c["source"]) == s]) for s in sources}
    return result


def _write_tensorboard(run_dir: Path, result: Dict[str, Any]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    tb = run_dir / "tb"
    for old in tb.glob(f"events.out.tfevents.*{TB_SUFFIX}") if tb.is_dir() else ():
        old.unlink(missing_ok=True)  # a new scoring replaces the last one instead of overlapping it
    column = result["column"]
    writer = SummaryWriter(str(tb), filename_suffix=TB_SUFFIX)
    try:
        for row in result["epochs"]:
            writer.add_scalar(f"benchmark/epoch_best_{column}", row["metrics"][column], row["epoch"])
        derived = result["derived"]
        if derived is not None:
            step = result["epochs"][-1]["epoch"]
            writer.add_scalar(f"benchmark/derived_{column}", derived["metrics"][column], step)
            writer.add_text("benchmark/derived", f"`{derived['arch']}`: {column} "
                            f"{derived['metrics'][column]:.2f} (rank {derived['rank']})", step)
    finally:
        writer.close()


def score_run(run_dir: str | Path, table: BenchmarkTable, column: str = "test_acc", *,
              write: bool = True, tensorboard: bool = True) -> Dict[str, Any]:
    """Look a finished (or running) nb201 search up in a benchmark table.

    Reads ``genotypes/epoch_NNN.json``, ``genotype.json`` and ``derive.json`` of ``run_dir``;
    a run without ``genotype.json`` (still searching, or killed) is scored on its epochs only.

    Args:
        run_dir: the search run folder.
        table: the benchmark table (:func:`~enas.benchmark.table.read_table`).
        column: the table column that ranks cells and goes to TensorBoard (default ``test_acc``).
        write: write ``RUN/benchmark.json`` atomically.
        tensorboard: write ``benchmark/epoch_best_<column>`` (step = epoch) and
            ``benchmark/derived_<column>`` (step = the last epoch) under ``RUN/tb``, replacing the
            event file of an earlier scoring.

    Returns:
        The contents of ``benchmark.json``: ``benchmark`` (path, SHA-256, cells), ``column``,
        ``table_best``, ``epochs`` (per epoch ``arch``, table ``metrics``, ``rank``), ``derived``
        (``arch``, ``metrics``, ``rank``, ``regret``, search-time ``best_valid_acc``), ``candidates``
        (search-time ``search_valid_acc`` and table ``metrics`` each) and ``rank_correlation``
        (Kendall tau-b of search-time against table ``column`` over the candidates); the last
        three are None where the run has no such data.

    Raises:
        UserError: a missing run folder or one without per-epoch architectures, a file that is
            not an NB201 architecture, an architecture the (partial) table lacks, a table without
            ``column``, an unreadable ``derive.json``.
    """
    run_dir = Path(run_dir)
    table.require([column])
    files = epoch_files(run_dir)
    _check_space(run_dir)
    scorer = _Scorer(table, column)
    epochs = []
    for epoch, path in files:
        arch = parse_arch(_read_json(path), str(path), run_dir)
        epochs.append({"epoch": epoch, **scorer.entry(arch, str(path))})

    best_arch, best_value = table.best(column)
    derived = candidates = correlation = None
    genotype_path, derive_path = run_dir / "genotype.json", run_dir / "derive.json"
    details: Dict[str, Any] = {}
    if derive_path.is_file():
        details = _read_json(derive_path)
        if not isinstance(details, dict):
            raise UserError(f"{derive_path} is a JSON {type(details).__name__}, expected an object")
    if genotype_path.is_file():
        arch = parse_arch(_read_json(genotype_path), str(genotype_path), run_dir)
        derived = scorer.entry(arch, str(genotype_path))
        derived["regret"] = best_value - derived["metrics"][column]
        derived["best_valid_acc"] = _finite(details.get("best_valid_acc"))
        derived["best_source"] = details.get("best_source")
        derived["strategy"] = details.get("strategy")
    if details:
        candidates = _candidates(details, str(derive_path), run_dir, scorer)
        if candidates:
            correlation = _correlation(candidates, column)

    result: Dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "run": str(run_dir),
        "benchmark": {"path": str(Path(table.source).resolve()) if table.sha256 else table.source,
                      "sha256": table.sha256, "cells": len(table), "complete": table.complete,
                      "columns": list(table.columns)},
        "column": column,
        "table_best": {"arch": best_arch.to_string(), column: best_value},
        "epochs": epochs, "derived": derived, "candidates": candidates, "rank_correlation": correlation,
    }
    if write:
        atomic_write_text(run_dir / OUTPUT, json.dumps(result, indent=1, allow_nan=False) + "\n")
    if tensorboard:
        _write_tensorboard(run_dir, result)
    logger.info("scored %s against %s: %d epochs, derived %s", run_dir, table.source, len(epochs),
                "none" if derived is None else f"{column} {derived['metrics'][column]:.2f}")
    return result


def _curve(epochs: List[Dict[str, Any]], column: str, points: int = 10) -> str:
    """``epoch:value`` at up to ``points`` evenly spaced epochs, the first and the last included."""
    if len(epochs) <= points:
        picked = epochs
    else:
        idx = sorted({round(k * (len(epochs) - 1) / (points - 1)) for k in range(points)})
        picked = [epochs[i] for i in idx]
    return "  ".join(f"{e['epoch']}:{e['metrics'][column]:.2f}" for e in picked)


def format_score(result: Dict[str, Any]) -> str:
    """A short human summary of :func:`score_run`'s result."""
    column, bench = result["column"], result["benchmark"]
    cells = f"{bench['cells']} cells" + ("" if bench["complete"] else f" of {NUM_ARCHS}, partial")
    lines = [f"benchmark: {bench['path']} ({cells}" + (f", sha256 {bench['sha256'][:12]})" if bench["sha256"] else ")")]
    best = result["table_best"]
    derived = result["derived"]
    if derived is None:
        lines.append("derived: none yet (no genotype.json): epochs only")
    else:
        search = derived["best_valid_acc"]
        lines.append(f"derived: {derived['arch']}")
        lines.append(f"  table {column} {derived['metrics'][column]:.2f} (rank {derived['rank']} of {bench['cells']}); "
                     f"best in table {best[column]:.2f}, regret {derived['regret']:.2f}"
                     + (f"; search-time valid acc {search:.4f}" if search is not None else ""))
    values = [e["metrics"][column] for e in result["epochs"]]
    lines.append(f"epoch best {column} ({len(values)} epochs, min {min(values):.2f}, max {max(values):.2f}): "
                 f"{_curve(result['epochs'], column)}")
    corr = result["rank_correlation"]
    if corr is not None:
        tau = "undefined" if corr["tau"] is None else f"{corr['tau']:.3f}"
        lines.append(f"candidates: {len(result['candidates'])}, Kendall tau (search-time valid acc vs table "
                     f"{column}) {tau} over {corr['n']}")
    return "\n".join(lines)
