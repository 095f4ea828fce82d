"""Start, resume and re-derive a search run folder (behind ``enas.run_search`` / ``enas.derive``).

Builds the config (defaults -> preset -> config file -> flags), prepares the
run folder, runs the :class:`~enas.search.driver.SearchDriver` and, for
NAS-Bench-201 runs with a benchmark table, scores the result.

Started by ``torchrun`` with several processes, each set-up step runs under
:meth:`enas.distributed.Dist.agree` (a user error met by any process ends all of
them with one line), process 0 alone prepares and writes the run folder, and a
resumed run's config comes from process 0's checkpoint.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from enas.config.lib import load_saved_config, read_config_file, save_config
from enas.errors import UserError
from enas.runs.rundir import attach_log_file, prepare_run_dir
from enas.config.search import SearchConfig, build_search_config, validate_search_config

logger = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """What a search or a derive left in its run folder.

    Attributes:
        run_dir: the run folder.
        genotype: the derived architecture (the space's frozen type, e.g. ``Genotype``).
        genotype_path: ``run_dir/genotype.json``.
        best_valid_acc: the winning candidate's search-time validation accuracy (shared
            weights: it ranks candidates, it is not a result).
        replaced: ``derive`` replaced an existing ``genotype.json``; ``changed``: with another
            architecture.
        benchmark: ``benchmark.json``'s content when the run was scored against a table.
    """

    run_dir: Path
    genotype: Any
    genotype_path: Path
    best_valid_acc: float
    replaced: bool = False
    changed: bool = False
    benchmark: Optional[Dict[str, Any]] = None


def load_run(run_dir: Path) -> Tuple[SearchConfig, Dict[str, Any]]:
    """The saved config and last checkpoint of a search run."""
    from enas.runs.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt", kind="search")
    cfg = load_saved_config(SearchConfig, state["config"])
    saved_model = state["config"].get("model") if isinstance(state["config"], dict) else None
    if isinstance(saved_model, dict) and "aux_trainable" not in saved_model:
        # Saved before the key existed: the head was trained, and the saved optimizer holds it.
        cfg.model.aux_trainable = True
    validate_search_config(cfg)
    return cfg, state


def check_benchmark(cfg: SearchConfig):
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


def _driver(cfg: SearchConfig, run_dir: Path, progress: Any, stop_after: Optional[int] = None, dist: Any = None):
    from enas.distributed import Dist
    from enas.runs.progress import progress_factory
    from enas.runtime import configure_threads, describe_device, set_determinism
    from enas.search.build import build_search
    from enas.search.driver import SearchDriver

    dist = dist or Dist()
    device = dist.configure(cfg.run.device, cfg.run.seed)
    if dist.world > 1:
        dist.check_batch(cfg.data.batch_size)
        if cfg.cost.model == "latency" and cfg.cost.lut is None:
            raise UserError("--cost latency under torchrun needs a latency table (--lut FILE): measure it "
                            "first with `enas latency-table` in one process (several processes measuring "
                            "at once would each time the others' load)")

    def build():
        configure_threads(cfg.run.threads)
        set_determinism(cfg.run.seed, cfg.run.deterministic)  # the same weights on every process
        if dist.is_main:
            attach_log_file(run_dir)
        logger.info("search: strategy %s, space %s, dataset %s, device %s, run folder %s%s",
                    cfg.strategy, cfg.model.space, cfg.data.dataset, describe_device(device), run_dir,
                    f", {dist.world} processes (global batch {cfg.data.batch_size}, "
                    f"{cfg.data.batch_size // dist.world} per process)" if dist.world > 1 else "")
        return build_search(cfg, device, run_dir, dist)

    setup = dist.agree(build)
    factory = progress_factory(cfg.run.progress_seconds) if progress is True else progress or None
    return SearchDriver(cfg, setup, run_dir, progress=factory if dist.is_main else None,
                        stop_after=stop_after, dist=dist)


def _outcome(driver: Any, cfg: SearchConfig, table) -> SearchResult:
    """The run's :class:`SearchResult`: from its files on process 0, from memory on the others."""
    if driver.dist.is_main:
        return _result(driver.run_dir, cfg, table)
    genotype, details = driver.derived
    return SearchResult(driver.run_dir, genotype, driver.run_dir / "genotype.json",
                        float(details.get("best_valid_acc", float("nan"))))


def _result(run_dir: Path, cfg: SearchConfig, table, replaced: bool = False, previous: Any = None
            ) -> SearchResult:
    from enas.runs.genotype_io import load_arch_file

    details = json.loads((run_dir / "derive.json").read_text())
    space, arch = load_arch_file(run_dir / "genotype.json", cfg.model.space)
    scored = None
    if table is not None:
        from enas.benchmark.score import score_run

        scored = score_run(run_dir, table, cfg.benchmark_column)
    return SearchResult(run_dir, arch, run_dir / "genotype.json", float(details.get("best_valid_acc", float("nan"))),
                        replaced=replaced, changed=replaced and previous != space.arch_to_json(arch),
                        benchmark=scored)


def start_search(flags: Mapping[str, Any], config: Any = None, out: Optional[str] = None, force: bool = False,
                 progress: Any = True, stop_after: Optional[int] = None) -> SearchResult:
    """A new search: ``flags`` are dotted config keys (``None`` ignored), ``config`` a file or a dict."""
    from enas.distributed import session

    with session() as dist:
        def configure() -> SearchConfig:
            file_data = read_config_file(config) if isinstance(config, (str, Path)) else dict(config or {})
            return build_search_config("enas", "paper", file_data, dict(flags))

        cfg = dist.agree(configure)
        dist.configure(cfg.run.device, cfg.run.seed)  # a bad --device is refused before the run folder exists
        dist.check_batch(cfg.data.batch_size)  # so is a global batch the processes cannot share
        table = dist.agree(lambda: check_benchmark(cfg), main_only=True, share=False)  # and a bad table
        run_dir = dist.agree(lambda: prepare_run_dir(
            Path(out or f"runs/search-{cfg.strategy}-{time.strftime('%Y%m%d-%H%M%S')}"), resume=False,
            force=force, kind="search"), main_only=True)
        driver = _driver(cfg, run_dir, progress, stop_after, dist)
        from enas.cost.objective import check_feasible

        # A hard budget nothing meets (the same draw on every process).
        check_feasible(driver.setup.strategy, driver.setup.generators["sample"])
        if dist.is_main:
            save_config(cfg, run_dir / "config.json")
        driver.run(resume=False)
        return _outcome(driver, cfg, table)


def resume_search(run_dir: str | Path, device: Optional[str] = None, progress: Any = True) -> SearchResult:
    """Continue a search run from its last checkpoint with its saved config."""
    from enas.distributed import session

    with session() as dist:
        tables = []  # process 0's benchmark table (not sent to the others)

        def load() -> SearchConfig:
            cfg = load_run(prepare_run_dir(Path(run_dir), resume=True, force=False))[0]
            if device:
                cfg.run.device = device
            tables.append(check_benchmark(cfg))
            return cfg

        cfg = dist.agree(load, main_only=True)
        table = tables[0] if tables else None
        driver = _driver(cfg, Path(run_dir), progress, dist=dist)
        driver.run(resume=True)
        return _outcome(driver, cfg, table)


def derive_run(run_dir: str | Path, samples: Optional[int] = None, device: Optional[str] = None,
               progress: Any = True, target: Optional[float] = None, constraint: Optional[str] = None
               ) -> SearchResult:
    """Re-derive a search run's genotype from its last checkpoint (says when it replaces one);
    ``target`` / ``constraint`` derive under another cost budget."""
    from enas.distributed import launched

    if launched():
        raise UserError("enas derive runs in one process: start it without torchrun (derive is a small, "
                        "deterministic part of a search)")
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise UserError(f"{run_dir} is not a search run folder (no checkpoints/last.pt)")
    cfg, _ = load_run(run_dir)
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
    table = check_benchmark(cfg)
    old = run_dir / "genotype.json"
    previous = None
    if old.is_file():
        try:
            previous = json.loads(old.read_text())
        except (OSError, ValueError):
            previous = "unreadable"
    _driver(cfg, run_dir, progress).derive_only()
    result = _result(run_dir, cfg, table, replaced=previous is not None, previous=previous)
    if result.replaced:
        logger.info("replaced the previous %s (%s)", old,
                    "with a different architecture" if result.changed else "same architecture")
    return result


def honesty(run_dir: Path) -> str:
    return ("Search-time accuracy uses shared weights and is far below the accuracy of the retrained "
            f"network; it ranks candidates, it is not a result. Retrain with `enas train {run_dir}`.")

