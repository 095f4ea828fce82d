"""Weight-sharing rows of ``enas table nb201``: real NB201 supernet searches, scored by the table.

Every method x seed is one ``enas search --space nb201 --strategy METHOD --seed K --benchmark
FILE`` launched as a subprocess (``python -m enas``, as ``scripts/reproduce.py`` does), with the
arguments of the chosen protocol (:mod:`enas.benchmark.ws_protocols`). Run folder of
``enas table nb201 --weight-sharing``:

==================================  =======================================================
``config.json``                     ``weight_sharing: true``, methods, seeds, protocol,
                                    dataset, data folder, device, the table's path and SHA-256
``log.txt``                         the log, appended on resume
``results.json``                    per method: runs, mean and sample std of the derived
                                    cells' table ``test_acc``, rank, regret, Kendall tau,
                                    search seconds, the published figure; then every run
``METHOD/seed_K/``                  the search run folder (``genotype.json``, ``derive.json``,
                                    ``benchmark.json``, checkpoints, ...)
``METHOD/seed_K.log``               the subprocess's output (appended on every launch)
``METHOD/seed_K.json``              the run's row, written when its search has finished
==================================  =======================================================

On ``--resume`` a finished search (``seed_K.json``, or ``genotype.json`` and
``benchmark.json`` of this table) is reused without launching anything, a started one
(``checkpoints/last.pt``) continues with ``enas search --resume``, the others start over.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from enas.benchmark.score import OUTPUT as SCORE_FILE, score_run
from enas.benchmark.table import BenchmarkTable
from enas.benchmark.ws_protocols import PUBLISHED_WS, PUBLISHED_WS_NOTE, search_args
from enas.runs.checkpoint import atomic_write_text
from enas.errors import UserError

logger = logging.getLogger(__name__)

COLUMN = "test_acc"
SYNTHETIC_NOTE = ("the table decides every accuracy here: on a synthetic table (`enas table synthetic`) they are "
                  "NOT NAS-Bench-201 results; only the pipeline and the search-time figures are real")


def _mean_std(values: List[float]) -> tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    n, mean = len(values), sum(values) / len(values)
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def _command(cfg: Dict[str, Any], method: str, seed: int, run_dir: Path, resume: bool) -> List[str]:
    """The ``python -m enas search`` command line of one run."""
    cmd = [sys.executable, "-m", "enas", "search"]
    device = ["--device", cfg["device"]] if cfg.get("device") else []
    if resume:
        return [*cmd, "--resume", str(run_dir), *device]
    data = ["--data-dir", cfg["data_dir"]] if cfg.get("data_dir") else []
    return [*cmd, *search_args(cfg["protocol"], method), "--seed", str(seed), "--benchmark", cfg["benchmark"],
            "--dataset", cfg["dataset"], *data, *device, "--out", str(run_dir), "--force"]


def _launch(cmd: List[str], log: Path, method: str, seed: int) -> float:
    """Run one search subprocess, its output appended to ``log``; returns its wall seconds."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the enas package this process runs
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "a", encoding="utf-8") as f:
        f.write("+ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise UserError(f"the {method} search of seed {seed} failed (exit status {rc}); see {log}")
    return time.monotonic() - start


def _row(method: str, seed: int, run_dir: Path, score: Dict[str, Any], seconds: Optional[float]) -> Dict[str, Any]:
    derived = score["derived"]
    corr = score.get("rank_correlation") or {}
    return {"method": method, "seed": seed, "run": str(run_dir), "arch": derived["arch"],
            COLUMN: derived["metrics"][COLUMN], "rank": derived["rank"], "regret": derived["regret"],
            "best_valid_acc": derived["best_valid_acc"], "tau": corr.get("tau"), "tau_n": corr.get("n"),
            "search_seconds": seconds}


def run_one(table: BenchmarkTable, cfg: Dict[str, Any], out: Path, method: str, seed: int) -> Dict[str, Any]:
    """Finish one method x seed (reusing, resuming or starting its search); returns its row."""
    run_dir, log, done = out / method / f"seed_{seed}", out / method / f"seed_{seed}.log", \
        out / method / f"seed_{seed}.json"
    if done.is_file():
        return json.loads(done.read_text())
    seconds = None
    score_path = run_dir / SCORE_FILE
    finished = (run_dir / "genotype.json").is_file() and (run_dir / "derive.json").is_file()
    if not finished:
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        logger.info("%s seed %d: %s search, log %s", method, seed, "resuming the" if resume else "starting a", log)
        seconds = _launch(_command(cfg, method, seed, run_dir, resume), log, method, seed)
        if not (run_dir / "genotype.json").is_file():
            raise UserError(f"the {method} search of seed {seed} wrote no genotype.json; see {log}")
    score = json.loads(score_path.read_text()) if score_path.is_file() else None
    if score is None or score.get("benchmark", {}).get("sha256") != table.sha256 or score.get("column") != COLUMN:
        score = score_run(run_dir, table, COLUMN)  # killed between derive and scoring
    row = _row(method, seed, run_dir, score, seconds)
    atomic_write_text(done, json.dumps(row, indent=1) + "\n")
    return row


def summarize(rows: Dict[str, List[Dict[str, Any]]], cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Per method: mean +- sample std (n - 1) of the derived cells' table accuracy, and the other means."""
    methods = {}
    for method, runs in rows.items():
        mean, std = _mean_std([r[COLUMN] for r in runs])
        taus = [r["tau"] for r in runs if r["tau"] is not None]
        secs = [r["search_seconds"] for r in runs if r["search_seconds"] is not None]
        methods[method] = {
            "runs": len(runs), "report_mean": mean, "report_std": std,
            "rank_mean": sum(r["rank"] for r in runs) / len(runs),
            "regret_mean": sum(r["regret"] for r in runs) / len(runs),
            "tau_mean": sum(taus) / len(taus) if taus else None, "tau_runs": len(taus),
            "search_seconds_mean": sum(secs) / len(secs) if secs else None,
            "published": PUBLISHED_WS.get(method),
        }
    return {"mode": "weight-sharing", "report_column": COLUMN, "protocol": cfg["protocol"],
            "dataset": cfg["dataset"], "benchmark": cfg["benchmark"], "benchmark_sha256": cfg["benchmark_sha256"],
            "methods": methods, "published_note": PUBLISHED_WS_NOTE, "note": SYNTHETIC_NOTE, "runs": rows}


def format_summary(summary: Dict[str, Any]) -> str:
    """A plain-text table: one row per method, the published NAS-Bench-201 figure beside it."""
    col = summary["report_column"]
    lines = [f"{'method':<8} {'runs':>4}  {'derived ' + col + ' mean +- std':>28}  {'rank':>7}  {'tau':>6}  "
             f"{'search s':>8}  published"]
    for method, m in summary["methods"].items():
        pub = m["published"]
        pub_text = "-" if pub is None else f"{pub[0]:.2f}" + (f" +- {pub[1]:.2f}" if pub[1] is not None else "")
        tau = "-" if m["tau_mean"] is None else f"{m['tau_mean']:.3f}"
        secs = "-" if m["search_seconds_mean"] is None else f"{m['search_seconds_mean']:.0f}"
        lines.append(f"{method:<8} {m['runs']:>4}  {m['report_mean']:>19.2f} +- {m['report_std']:<5.2f}  "
                     f"{m['rank_mean']:>7.1f}  {tau:>6}  {secs:>8}  {pub_text}")
    lines.append(f"protocol {summary['protocol']} on {summary['dataset']}; mean over seeds, sample std; rank 1 = the "
                 "table's best cell; tau = Kendall tau of search-time vs table accuracy over the derive "
                 "candidates (DARTS has none); search s = wall seconds of the launch that finished a search")
    if summary["protocol"] != "full":
        lines.append(f"note: the published figures used the full protocol; protocol {summary['protocol']} "
                     "is not comparable")
    lines.append(summary["note"])
    lines.append(summary["published_note"])
    return "\n".join(lines)


def run_all(table: BenchmarkTable, cfg: Dict[str, Any], out: Path) -> Dict[str, Any]:
    """Finish every method x seed under ``out``; write ``results.json`` atomically and return the summary."""
    rows: Dict[str, List[Dict[str, Any]]] = {}
    for method in cfg["methods"]:
        rows[method] = []
        for seed in range(cfg["seeds"]):
            row = run_one(table, cfg, out, method, seed)
            logger.info("%s seed %d: derived %s, table %s %.2f (rank %d)%s", method, seed, row["arch"], COLUMN,
                        row[COLUMN], row["rank"], "" if row["tau"] is None else f", tau {row['tau']:.3f}")
            rows[method].append(row)
    summary = summarize(rows, cfg)
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
    return summary
