"""``enas search`` and ``enas derive``."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import click

from enas.configlib import load_saved_config, parse_set_option, read_config_file, save_config
from enas.errors import UserError
from enas.rundir import attach_log_file, prepare_run_dir
from enas.runtime import configure_threads, describe_device, resolve_device, set_determinism
from enas.search_config import (CONSTRAINTS, PRESETS, STRATEGIES, SearchConfig, build_search_config,
                                validate_search_config)
from shared_model.spaces import list_spaces

logger = logging.getLogger(__name__)

HONESTY = ("Search-time accuracy uses shared weights and is far below the accuracy of the retrained "
           "network; it ranks candidates, it is not a result. Retrain with `enas train {run}`.")


def progress_factory():
    """tqdm bars on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return lambda **kw: tqdm(leave=False, dynamic_ncols=True, **kw)


def _load_run(run_dir: Path) -> Tuple[SearchConfig, Dict[str, Any]]:
    from enas.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt", kind="search")
    cfg = load_saved_config(SearchConfig, state["config"])
    saved_model = state["config"].get("model") if isinstance(state["config"], dict) else None
    if isinstance(saved_model, dict) and "aux_trainable" not in saved_model:
        # Saved before the key existed: the head was trained, and the saved optimizer holds it.
        cfg.model.aux_trainable = True
    validate_search_config(cfg)
    return cfg, state


def _start(cfg: SearchConfig, run_dir: Path, resume: bool, stop_after: Optional[int] = None) -> Path:
    from enas.search.build import build_search
    from enas.search.driver import SearchDriver

    configure_threads(cfg.run.threads)
    set_determinism(cfg.run.seed, cfg.run.deterministic)
    device = resolve_device(cfg.run.device)
    attach_log_file(run_dir)
    logger.info("search: strategy %s, space %s, dataset %s, device %s, run folder %s",
                cfg.strategy, cfg.model.space, cfg.data.dataset, describe_device(device), run_dir)
    setup = build_search(cfg, device, run_dir)
    if not resume:
        from enas.cost.objective import check_feasible

        check_feasible(setup.strategy, setup.generators["sample"])
        save_config(cfg, run_dir / "config.json")
    driver = SearchDriver(cfg, setup, run_dir, progress=progress_factory(), stop_after=stop_after)
    return driver.run(resume=resume)


def _check_benchmark(cfg: SearchConfig):
    """Read and check ``cfg.benchmark`` before anything runs; None when the run has none."""
    if cfg.benchmark is None:
        return None
    from enas.benchmark.table import read_table

    if cfg.model.space != "nb201":
        raise UserError(f"--benchmark scores NAS-Bench-201 cells; this search runs the {cfg.model.space!r} "
                        "space (use --space nb201)")
    table = read_table(cfg.benchmark)
    table.require([cfg.benchmark_column])
    return table


def _score(run_dir: Path, table, column: str) -> None:
    """Look the run's architectures up in the benchmark table (RUN/benchmark.json, TensorBoard)."""
    if table is None:
        return
    from enas.benchmark.score import format_score, score_run

    click.echo(format_score(score_run(run_dir, table, column)))
    click.echo(f"benchmark scores: {run_dir / 'benchmark.json'}")


def _echo_cost(details: Dict[str, Any]) -> None:
    """The derived architecture's cost and the Pareto front size, when the run has a cost."""
    cost = details.get("cost")
    if not cost:
        return
    target = f" (target {cost['target']:g}, {cost['constraint']} constraint)" if cost.get("target") else ""
    front = details.get("pareto_front")
    click.echo(f"cost ({cost['model']}): {details['best_cost']:.6g} {cost['unit']}{target}"
               + (f"; Pareto front of {len(front)} candidates in derive.json" if front is not None else ""))


def register(cli: click.Group) -> None:
    @cli.command()
    @click.option("--preset", type=click.Choice(PRESETS), default=None,
                  help="paper: official values of the strategy (default); quick: minutes on a CPU, digits data; "
                       "mobile: quick under a 3 ms latency budget at batch 1 on one CPU thread.")
    @click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
                  help="enas (default): LSTM controller + REINFORCE; darts: gradient-based; random: uniform; "
                       "evolution: regularized (aging) evolution; bo: Bayesian optimisation with Optuna's TPE "
                       "(pip install 'enas[bo]').")
    @click.option("--space", type=click.Choice(list_spaces()), default=None,
                  help="Search space (default: micro for enas, evolution and bo, darts for darts and random; "
                       "macro: every strategy but darts).")
    @click.option("--order", type=click.Choice(["1", "2"]), default=None, help="DARTS order (1 or 2).")
    @click.option("--dataset", default=None, help="cifar10 (default), cifar100, fashion_mnist, imagefolder, digits.")
    @click.option("--data-dir", default=None, help="Folder holding the dataset (no download).")
    @click.option("--epochs", type=int, default=None, help="Search epochs (paper: 150 ENAS, 50 DARTS, 310 ENAS macro).")
    @click.option("--batch-size", type=int, default=None, help="Child minibatch size.")
    @click.option("--seed", type=int, default=None, help="Random seed (default 0).")
    @click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")
    @click.option("--deterministic", is_flag=True, default=None, help="Deterministic kernels (exact resume on CPU).")
    @click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                  help="JSON or TOML file with config sections (see README).")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                  help="Override any config key, e.g. --set controller.lr=0.001 (repeatable).")
    @click.option("--out", type=click.Path(file_okay=False), default=None,
                  help="Run folder (default runs/search-STRATEGY-TIME).")
    @click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
                  help="Continue the run in this folder from its last checkpoint.")
    @click.option("--force", is_flag=True, help="Replace the run already in --out.")
    @click.option("--benchmark", type=click.Path(dir_okay=False), default=None,
                  help="Benchmark table (CSV) to score the run's cells with at the end (--space nb201): "
                       "RUN/benchmark.json, see README \"Scoring a weight-sharing run\".")
    @click.option("--cost", "cost_model", default=None, metavar="params|macs|latency|MODULE:FACTORY",
                  help="Price every child network (README \"Searching for a device\"): parameters, "
                       "multiply-adds, latency from a table (--lut), or a plug-in factory.")
    @click.option("--lut", type=click.Path(dir_okay=False), default=None,
                  help="Latency table from `enas latency-table` (--cost latency; without it one is measured "
                       "into RUN/latency_table.json).")
    @click.option("--target", type=float, default=None,
                  help="Target cost in the cost's unit (params, MACs, ms); without it costs are only logged.")
    @click.option("--constraint", type=click.Choice(CONSTRAINTS), default=None,
                  help="soft: MnasNet reward acc*(cost/target)^w (default); hard: reject and resample "
                       "architectures over the target; both.")
    def search(preset, strategy, space, order, dataset, data_dir, epochs, batch_size, seed, device,
               deterministic, config_file, sets, out, resume_dir, force, benchmark, cost_model, lut, target,
               constraint):
        """Search an architecture; writes RUN/genotype.json (see README "Run folder")."""
        if resume_dir:
            changed = [n for n, v in [("--preset", preset), ("--strategy", strategy), ("--space", space),
                                      ("--order", order), ("--dataset", dataset), ("--data-dir", data_dir),
                                      ("--epochs", epochs), ("--batch-size", batch_size), ("--seed", seed),
                                      ("--config", config_file), ("--out", out), ("--force", force or None),
                                      ("--set", sets or None), ("--deterministic", deterministic),
                                      ("--benchmark", benchmark), ("--cost", cost_model), ("--lut", lut),
                                      ("--target", target), ("--constraint", constraint)]
                       if v is not None]
            if changed:
                raise UserError(f"{', '.join(changed)} cannot be changed when resuming; "
                                "the run's saved config is used")
            run_dir = prepare_run_dir(Path(resume_dir), resume=True, force=False)
            cfg, _ = _load_run(run_dir)
            if device:
                cfg.run.device = device
            table = _check_benchmark(cfg)
            genotype_path = _start(cfg, run_dir, resume=True)
        else:
            flags: Dict[str, Any] = {
                "strategy": strategy, "preset": preset, "model.space": space,
                "darts.order": int(order) if order else None, "data.dataset": dataset,
                "data.data_dir": data_dir, "epochs": epochs, "data.batch_size": batch_size,
                "run.seed": seed, "run.device": device, "run.deterministic": deterministic,
                "benchmark": str(Path(benchmark).resolve()) if benchmark else None,
                "cost.model": cost_model, "cost.lut": str(Path(lut).resolve()) if lut else None,
                "cost.target": target, "cost.constraint": constraint,
            }
            for item in sets:
                key, value = parse_set_option(item)
                flags[key] = value
            file_data = read_config_file(config_file) if config_file else None
            cfg = build_search_config("enas", "paper", file_data, flags)
            resolve_device(cfg.run.device)  # a bad --device is refused before the run folder exists
            table = _check_benchmark(cfg)  # so is a bad table
            run_dir = Path(out or f"runs/search-{cfg.strategy}-{time.strftime('%Y%m%d-%H%M%S')}")
            run_dir = prepare_run_dir(run_dir, resume=False, force=force)
            genotype_path = _start(cfg, run_dir, resume=False)
        details = json.loads((run_dir / "derive.json").read_text())
        click.echo(f"derived genotype: {genotype_path}")
        click.echo(f"candidate scores: {run_dir / 'derive.json'} (best search-time valid acc "
                   f"{details.get('best_valid_acc', float('nan')):.4f})")
        _echo_cost(details)
        click.echo(HONESTY.format(run=run_dir))
        _score(run_dir, table, cfg.benchmark_column)

    @cli.command()
    @click.argument("run_dir", type=click.Path(file_okay=False))
    @click.option("--samples", type=int, default=None, help="Architectures to score (default: the run's derive.samples).")
    @click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")
    @click.option("--target", type=float, default=None,
                  help="Derive under this cost target instead of the run's (needs a run with --cost).")
    @click.option("--constraint", type=click.Choice(CONSTRAINTS), default=None,
                  help="With --target: hard keeps only candidates within it; soft ranks by the MnasNet reward.")
    def derive(run_dir, samples, device, target, constraint):
        """Derive the final genotype of a search run from its last checkpoint.

        ENAS: the greedy architecture plus N samples from the trained controller;
        random: N uniform samples; both scored on one validation minibatch with the
        shared weights. Evolution and BO: the final population, then the best rewarded
        architectures of the search up to N, re-scored on one validation minibatch.
        DARTS: the top-2 non-`none` edges per node. Writes RUN_DIR/genotype.json and
        RUN_DIR/derive.json. With a cost, only candidates within the budget compete and
        derive.json lists the accuracy-cost Pareto front.
        """
        from enas.search.build import build_search
        from enas.search.driver import SearchDriver

        run_dir = Path(run_dir)
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise UserError(f"{run_dir} is not a search run folder (no checkpoints/last.pt)")
        cfg, _ = _load_run(run_dir)
        if samples is not None:
            if samples < 1:
                raise UserError("--samples must be >= 1")
            cfg.derive.samples = samples
        if device:
            cfg.run.device = device
        if target is not None or constraint is not None:
            if cfg.cost.model is None:
                raise UserError("--target and --constraint need a run searched with a cost (--cost)")
            cfg.cost.target = target if target is not None else cfg.cost.target
            cfg.cost.constraint = constraint or cfg.cost.constraint
            validate_search_config(cfg)
        set_determinism(cfg.run.seed, cfg.run.deterministic)
        dev = resolve_device(cfg.run.device)
        table = _check_benchmark(cfg)
        attach_log_file(run_dir)
        setup = build_search(cfg, dev, run_dir)
        driver = SearchDriver(cfg, setup, run_dir, progress=progress_factory())
        path = driver.derive_only()
        details = json.loads((run_dir / "derive.json").read_text())
        click.echo(f"derived genotype: {path} (best search-time valid acc "
                   f"{details.get('best_valid_acc', float('nan')):.4f})")
        _echo_cost(details)
        click.echo(HONESTY.format(run=run_dir))
        _score(run_dir, table, cfg.benchmark_column)
