"""``enas table``: benchmark tables and table-mode search (NAS-Bench-201, no training)."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Dict

import click

from enas.config.lib import load_saved_config, parse_set_option, read_config_file, save_config
from enas.errors import UserError

logger = logging.getLogger(__name__)

_TRUST = ("The official files are Python pickles: this command loads them through the nats_bench "
          "package, which unpickles them, and unpickling can run code. Give it only files downloaded "
          "from the official NATS-Bench release.")


def _refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise UserError(f"{path} already exists; use --force to replace it")
    if path.exists() and not path.is_file():
        raise UserError(f"{path} exists and is not a file")


def register(cli: click.Group) -> None:
    @cli.group()
    def table() -> None:
        """Benchmark tables (NAS-Bench-201) and table-mode search.

        A table is a CSV file: an `arch` column of NAS-Bench-201 strings and numeric columns
        (valid_acc_epoch12, valid_acc, test_acc in percent; train_time_s, epoch_time_s in
        seconds). See README "Benchmarking with NAS-Bench-201".
        """

    @table.command("nb201")
    @click.option("--benchmark", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                  help="The benchmark CSV (from `enas table synthetic` or `enas table import-nats`).")
    @click.option("--seeds", type=int, default=None, metavar="N", help="Runs per method, seeds 0..N-1 (default 10; with --weight-sharing 1).")
    @click.option("--budget-queries", type=int, default=None,
                  help="Budget in queries; every proposal counts, duplicates too.")
    @click.option("--budget-seconds", type=float, default=None,
                  help="Budget in simulated seconds: the sum of train_time_s over the proposals, duplicates "
                       "paid again (default 12000, NAS-Bench-201's).")
    @click.option("--methods", default=None,
                  help="Comma-separated: random (uniform), reinforce (NAS-Bench-201's per-edge REINFORCE), "
                       "enas (the ENAS LSTM controller), evolution (regularized evolution, P 10, S 3 as "
                       "NAS-Bench-201's REA), bo (Optuna TPE, needs pip install 'enas[bo]'); default all (bo only "
                       "with Optuna). With --weight-sharing: enas, random, darts, evolution, bo (the search "
                       "strategies; default enas, random, darts).")
    @click.option("--enas-preset", type=click.Choice(["benchmark", "search"]), default=None,
                  help="Controller settings: benchmark (default, learns from every query) or search (the "
                       "official ENAS search-time values).")
    @click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                  help="JSON or TOML file with table config keys (see enas/benchmark/table_config.py).")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                  help="Override a config key, e.g. --set enas.lr=0.01 or --set columns.reward=valid_acc.")
    @click.option("--out", type=click.Path(file_okay=False), default=None, metavar="DIR",
                  help="Run folder (default runs/table-nb201-TIME).")
    @click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
                  help="Finish the runs in this folder (its saved config is used).")
    @click.option("--force", is_flag=True, help="Replace the run already in --out.")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
    @click.option("--weight-sharing", is_flag=True,
                  help="The weight-sharing rows instead: per method (enas, random, darts; default all three) "
                       "and seed a real `enas search --space nb201` on the supernet, its derived cell looked up "
                       "in the table (no table-mode options).")
    @click.option("--protocol", type=click.Choice(["full", "cpu", "tiny"]), default=None,
                  help="With --weight-sharing: full (default; the NB201 search settings of the paper preset, "
                       "C 16, N 5, CIFAR-10; needs a GPU, days on a CPU), cpu (reduced: 16 px, C 8, N 1, "
                       "10 epochs, DARTS 5; minutes for all three methods and one seed on 2 CPU cores), tiny "
                       "(tests only: digits, seconds). See enas/benchmark/ws_protocols.py.")
    @click.option("--data-dir", default=None, metavar="DIR", help="With --weight-sharing: folder holding the dataset (no download).")
    @click.option("--dataset", default=None, metavar="NAME",
                  help="With --weight-sharing: dataset of the searches (default: the protocol's, cifar10; "
                       "tiny: digits).")
    @click.option("--device", default=None, metavar="DEVICE",
                  help="With --weight-sharing: auto (default), cpu, cuda or cuda:N (may change on --resume).")
    def nb201(benchmark, seeds, budget_queries, budget_seconds, methods, enas_preset, config_file, sets, out,
              resume_dir, force, as_json, weight_sharing, protocol, data_dir, dataset, device):
        """Run search methods against a NAS-Bench-201 table, several seeds each.

        Each proposal is scored by lookup: the reward is the 12-epoch validation accuracy, the
        result of a run is the test accuracy of its best-by-validation cell (NAS-Bench-201's
        protocol). Prints mean +- std per method next to the published NAS-Bench-201 figures.

        With --weight-sharing: real weight-sharing searches on the NB201 supernet (one
        `enas search` subprocess per method and seed, in RUN/METHOD/seed_K, resumable), and
        the mean +- std table test accuracy of their derived cells and the mean Kendall tau,
        next to the published NAS-Bench-201 weight-sharing figures (ENAS 53.89 +- 0.58, DARTS
        54.30, random search with weight sharing 84.07 +- 3.61).
        """
        from enas.commands.table_ws import WS_ONLY, is_ws_run, run_weight_sharing

        if weight_sharing or (resume_dir and is_ws_run(Path(resume_dir))):
            run_weight_sharing(benchmark=benchmark, seeds=seeds, methods=methods, protocol=protocol,
                               data_dir=data_dir, dataset=dataset, device=device, out=out,
                               resume_dir=resume_dir, force=force, as_json=as_json,
                               table_only=dict(zip(("--budget-queries", "--budget-seconds", "--enas-preset",
                                                    "--config", "--set"),
                                                   (budget_queries, budget_seconds, enas_preset, config_file,
                                                    sets))))
            return
        given = [n for n, v in zip(WS_ONLY, (protocol, data_dir, dataset, device)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)} only apply with --weight-sharing")
        from enas.benchmark.table import read_table
        from enas.benchmark.table_config import METHODS, TableConfig, build_table_config, validate_table_config
        from enas.benchmark.table_runs import format_summary, run_all
        from enas.runs.rundir import attach_log_file, is_run_dir, prepare_run_dir

        if resume_dir:
            changed = [n for n, v in [("--seeds", seeds), ("--budget-queries", budget_queries),
                                      ("--budget-seconds", budget_seconds), ("--methods", methods),
                                      ("--enas-preset", enas_preset), ("--config", config_file),
                                      ("--set", sets or None), ("--out", out), ("--force", force or None)]
                       if v is not None]
            if changed:
                raise UserError(f"{', '.join(changed)} cannot be changed when resuming; the saved config is used")
            run_dir = Path(resume_dir)
            if not (run_dir / "config.json").is_file():
                raise UserError(f"nothing to resume in {run_dir}: no config.json")
            cfg = load_saved_config(TableConfig, read_config_file(run_dir / "config.json"))
            validate_table_config(cfg)
            tbl = read_table(benchmark or cfg.benchmark)
            if tbl.sha256 != cfg.benchmark_sha256:
                raise UserError(f"benchmark table {tbl.source} differs from the one this run used "
                                f"(SHA-256 {cfg.benchmark_sha256[:12]}...); resume with the same file")
        else:
            if benchmark is None:
                raise UserError("--benchmark FILE is required (write one with `enas table synthetic`)")
            if budget_queries is not None and budget_seconds is not None:
                raise UserError("--budget-queries and --budget-seconds exclude each other")
            flags: Dict[str, Any] = {"seeds": seeds, "enas_preset": enas_preset,
                                     "budget.queries": budget_queries, "budget.seconds": budget_seconds}
            if methods is not None:
                flags["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
            for item in sets:
                key, value = parse_set_option(item)
                flags[key] = value
            file_data = read_config_file(config_file) if config_file else None
            if file_data and isinstance(file_data.get("budget"), dict) and (budget_queries or budget_seconds):
                # A budget flag replaces the file's budget of the other kind.
                file_data = {**file_data, "budget": {}}
            cfg = build_table_config(None, file_data, flags)
            run_dir = Path(out or f"runs/table-nb201-{time.strftime('%Y%m%d-%H%M%S')}")
            if is_run_dir(run_dir) and not force:  # before the table is read
                raise UserError(f"{run_dir} already holds a run; use --resume to finish it or --force to replace it")
            tbl = read_table(benchmark)
            tbl.require([cfg.columns.reward, cfg.columns.report, cfg.columns.cost])
            cfg.benchmark, cfg.benchmark_sha256 = str(Path(benchmark).resolve()), tbl.sha256
            run_dir = prepare_run_dir(run_dir, resume=False, force=force)
            if force:  # the per-run folders and the summary of the replaced run
                for old in (*METHODS, "results.json"):
                    target = run_dir / old
                    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
            save_config(cfg, run_dir / "config.json")
        attach_log_file(run_dir)
        logger.info("table search: %s on %s (%d cells), %d seeds, run folder %s", ", ".join(cfg.methods),
                    tbl.source, len(tbl), cfg.seeds, run_dir)
        summary = run_all(tbl, cfg, run_dir, resume=bool(resume_dir))
        if as_json:
            click.echo(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
        else:
            click.echo(format_summary(summary))
            click.echo(f"results: {run_dir / 'results.json'}")

    @table.command("synthetic")
    @click.option("--out", type=click.Path(dir_okay=False), required=True, metavar="FILE", help="CSV file to write.")
    @click.option("--seed", type=int, default=0, show_default=True, metavar="N", help="Seed of the synthetic table.")
    @click.option("--force", is_flag=True, help="Replace an existing file.")
    def synthetic(out, seed, force):
        """Write a synthetic NAS-Bench-201 table (all 15,625 cells; NOT real benchmark data).

        Structured like the real one: per-edge op effects, pairwise interactions, chance accuracy
        for cells whose output is cut off from the input, more convolutions cost more time.
        """
        from enas.benchmark.synthetic import write_synthetic

        if not 0 <= seed < 2 ** 63:
            raise UserError(f"--seed must lie in [0, 2^63), got {seed}")
        path = Path(out)
        _refuse_existing(path, force)
        write_synthetic(path, seed)
        click.echo(f"wrote synthetic table (seed {seed}, 15625 cells): {path}")

    @table.command("import-nats", help="Convert the official NATS-Bench topology files (the NAS-Bench-201 "
                   "cells) into a benchmark CSV for DATASET.\n\n" + _TRUST + " Needs pip install 'enas[nats]'.")
    @click.option("--source", type=click.Path(), required=True, metavar="PATH",
                  help="NATS-tss-v1_0-3ffb9.pickle.pbz2 or the NATS-tss-v1_0-3ffb9-simple folder (official only).")
    @click.option("--dataset", type=click.Choice(["cifar10", "cifar100", "ImageNet16-120"]), default="cifar10", metavar="NAME",
                  show_default=True, help="Which results to export.")
    @click.option("--out", type=click.Path(dir_okay=False), required=True, metavar="FILE", help="CSV file to write.")
    @click.option("--limit", type=int, default=None, metavar="N", help="Only the first N cells (a partial table).")
    @click.option("--force", is_flag=True, help="Replace an existing file.")
    def import_nats_cmd(source, dataset, out, limit, force):
        from enas.benchmark.nats_import import import_nats

        if limit is not None and limit < 1:
            raise UserError("--limit must be >= 1")
        path = Path(out)
        _refuse_existing(path, force)
        import_nats(source, dataset, path, limit=limit)
        click.echo(f"wrote {dataset} table: {path}")

    @table.command("score")
    @click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
    @click.option("--benchmark", type=click.Path(dir_okay=False), required=True, metavar="FILE",
                  help="The benchmark CSV (from `enas table synthetic` or `enas table import-nats`).")
    @click.option("--column", default="test_acc", show_default=True,
                  help="Table column that scores and ranks the cells.")
    @click.option("--json", "as_json", is_flag=True, help="Print RUN/benchmark.json instead of the summary.")
    def score(run_dir, benchmark, column, as_json):
        """Look an nb201 search run up in a benchmark table; writes RUN/benchmark.json.

        RUN is the folder of `enas search --space nb201` (ENAS, random or DARTS on the
        weight-sharing NB201 supernet). Every epoch's best cell and the derived cell get their
        table metrics; the derive candidates get theirs and the Kendall tau between search-time
        and table accuracy. Also writes benchmark/* scalars to RUN/tb.
        """
        from enas.benchmark.score import OUTPUT, epoch_files, format_score, score_run
        from enas.benchmark.table import read_table

        epoch_files(Path(run_dir))  # a wrong folder fails before the table is read
        result = score_run(run_dir, read_table(benchmark), column)
        if as_json:
            click.echo(json.dumps(result))
        else:
            click.echo(format_score(result))
            click.echo(f"wrote {Path(run_dir) / OUTPUT}")
