"""``enas table nb201 --weight-sharing``: the weight-sharing rows (real NB201 supernet searches)."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional

import click

from enas.runs.checkpoint import atomic_write_text
from enas.errors import UserError

logger = logging.getLogger(__name__)

#: Options of ``enas table nb201`` that only table mode reads.
TABLE_ONLY = ("--budget-queries", "--budget-seconds", "--enas-preset", "--config", "--set")
#: Options that only the weight-sharing rows read.
WS_ONLY = ("--protocol", "--data-dir", "--dataset", "--device")


def is_ws_run(run_dir: Path) -> bool:
    """Whether ``run_dir/config.json`` is the config of a weight-sharing table run."""
    try:
        data = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("weight_sharing") is True


def _methods(text: Optional[str]) -> list:
    from enas.benchmark.ws_protocols import WS_DEFAULT, WS_METHODS

    if text is None:
        return list(WS_DEFAULT)
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in WS_METHODS]
    if not methods or unknown:
        raise UserError(f"--methods with --weight-sharing takes {', '.join(WS_METHODS)} (comma-separated), "
                        f"got {text!r}")
    if len(set(methods)) != len(methods):
        raise UserError(f"--methods names a method twice: {text!r}")
    return methods


def run_weight_sharing(*, benchmark: Optional[str], seeds: Optional[int], methods: Optional[str],
                       protocol: Optional[str], data_dir: Optional[str], dataset: Optional[str],
                       device: Optional[str], out: Optional[str], resume_dir: Optional[str], force: bool,
                       as_json: bool, table_only: Dict[str, Any]) -> None:
    """Check the options, prepare (or reopen) the run folder, run every search, print the summary.

    Args:
        benchmark: the table CSV (on resume: optional, must be the same file).
        seeds: runs per method, seeds 0..N-1 (default 1).
        methods: comma-separated strategies (default ``enas,random,darts``).
        protocol: a key of :data:`~enas.benchmark.ws_protocols.PROTOCOLS` (default ``full``).
        data_dir, dataset, device: passed to every ``enas search`` (dataset: the protocol's).
        out: the run folder (default ``runs/table-nb201-ws-TIME``).
        resume_dir: finish the run in this folder (only ``--device`` and ``--benchmark`` allowed).
        force: replace the run in ``out``.
        as_json: print the summary as one JSON object.
        table_only: the table-mode options as given (name -> value or None); any set is refused.

    Raises:
        UserError: a table-mode option, an unknown method, a bad seed count, a run folder in the
            way, a different table on resume, a failed search.
    """
    from enas.benchmark.table import read_table
    from enas.benchmark.ws_protocols import DEFAULT_DATASET, WS_METHODS, search_args
    from enas.benchmark.ws_runs import COLUMN, format_summary, run_all
    from enas.runs.rundir import MARKER, attach_log_file, is_run_dir, written_by_enas

    given = [name for name, value in table_only.items() if value not in (None, False, ())]
    if given:
        raise UserError(f"{', '.join(given)} {'is a' if len(given) == 1 else 'are'} table-mode "
                        "option(s); --weight-sharing runs real searches (see --protocol)")
    if resume_dir:
        changed = [n for n, v in [("--seeds", seeds), ("--methods", methods), ("--protocol", protocol),
                                  ("--data-dir", data_dir), ("--dataset", dataset), ("--out", out),
                                  ("--force", force or None)] if v is not None]
        if changed:
            raise UserError(f"{', '.join(changed)} cannot be changed when resuming; the saved config is used")
        run_dir = Path(resume_dir)
        if not is_ws_run(run_dir):
            raise UserError(f"nothing to resume in {run_dir}: no weight-sharing config.json")
        cfg = json.loads((run_dir / "config.json").read_text())
        table = read_table(benchmark or cfg["benchmark"])
        if table.sha256 != cfg["benchmark_sha256"]:
            raise UserError(f"benchmark table {table.source} differs from the one this run used "
                            f"(SHA-256 {cfg['benchmark_sha256'][:12]}...); resume with the same file")
        if benchmark:
            cfg["benchmark"] = str(Path(benchmark).resolve())
        if device:
            cfg["device"] = device
    else:
        if benchmark is None:
            raise UserError("--benchmark FILE is required (write one with `enas table synthetic`)")
        if seeds is not None and seeds < 1:
            raise UserError(f"--seeds must be >= 1, got {seeds}")
        protocol = protocol or "full"
        cfg = {"weight_sharing": True, "methods": _methods(methods), "seeds": seeds or 1, "protocol": protocol,
               "dataset": dataset or DEFAULT_DATASET[protocol],
               "data_dir": str(Path(data_dir).resolve()) if data_dir else None, "device": device,
               "column": COLUMN}
        cfg["search_args"] = {m: search_args(protocol, m) for m in cfg["methods"]}  # what each search gets
        if device:
            from enas.runtime import resolve_device

            resolve_device(device)  # a bad --device is refused before the run folder exists
        run_dir = Path(out or f"runs/table-nb201-ws-{time.strftime('%Y%m%d-%H%M%S')}")
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"--out {run_dir} exists and is not a folder")
        if is_run_dir(run_dir) and not force:
            raise UserError(f"{run_dir} already holds a run; use --resume to finish it or --force to replace it")
        table = read_table(benchmark)
        table.require([COLUMN])
        cfg["benchmark"], cfg["benchmark_sha256"] = str(Path(benchmark).resolve()), table.sha256
        if force and is_run_dir(run_dir) and not (written_by_enas(run_dir) or is_ws_run(run_dir)):
            raise UserError(f"{run_dir} holds files but no enas run; --force only replaces runs enas wrote: "
                            "choose another --out")
        if force and run_dir.is_dir():
            for old in (*cfg["methods"], *WS_METHODS, "results.json", "config.json", "log.txt"):
                target = run_dir / old
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / MARKER, json.dumps({"kind": "table-ws"}) + "\n")
        atomic_write_text(run_dir / "config.json", json.dumps(cfg, indent=2) + "\n")
    attach_log_file(run_dir)
    logger.info("weight-sharing table run: %s, %d seed(s), protocol %s on %s, table %s, run folder %s",
                ", ".join(cfg["methods"]), cfg["seeds"], cfg["protocol"], cfg["dataset"], table.source, run_dir)
    summary = run_all(table, cfg, run_dir)
    if as_json:
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
    else:
        click.echo(format_summary(summary))
        click.echo(f"results: {run_dir / 'results.json'}")
