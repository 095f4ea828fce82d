"""Start and resume a retrain run folder (behind ``enas.train``).

A search run given as GENOTYPE hands its data over: the dataset, data dir,
image size and the ``data.resize``, ``data.channels`` and ``data.limit`` it
searched with, so the cell is retrained on the images it was found on; its
``data.json`` (classes, channels, size) is checked against the loaded data.
Without ``--preset`` a ``quick`` search gets the ``quick`` retrain preset, any
other the space's default. The log says what was carried over and why; flags,
``--set`` and ``--config`` still override everything.
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
from enas.config.train import TrainConfig, build_train_config, validate_train_config

logger = logging.getLogger(__name__)

#: The data keys a search run hands to its retrain (augmentation belongs to the train preset).
CARRIED_DATA = ("dataset", "data_dir", "image_size", "resize", "channels", "limit")


@dataclass
class TrainResult:
    """A finished retrain: its run folder and ``result.json`` (``test_acc`` is the last epoch's)."""

    run_dir: Path
    result: Dict[str, Any]

    @property
    def test_acc(self) -> float:
        return self.result["test_acc"]


def search_run_info(arg: str) -> Optional[Dict[str, Any]]:
    """``{"config": ..., "data": ...}`` of a search run folder (``data`` may be None), else None."""
    folder = Path(arg).expanduser()
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "strategy" not in config or not isinstance(config.get("data"), dict):
        return None  # a retrain run, or not a run
    try:
        data = json.loads((folder / "data.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None  # a run from before data.json: its config still names the data
    return {"folder": str(folder), "config": config, "data": data if isinstance(data, dict) else None}


def carry_over(search: Dict[str, Any], flags: Mapping[str, Any], file_data: Mapping[str, Any]
               ) -> Tuple[Dict[str, Any], Optional[str], Optional[Dict[str, Any]]]:
    """The search run's data keys, the preset it implies, and its data.json to check against.

    Returns ``({}, ..., None)`` for the data when ``--dataset``/``--data-dir`` (flag, ``--set``
    or config file) name other data: then nothing of the search's data applies.
    """
    file_section = file_data.get("data") if isinstance(file_data.get("data"), dict) else {}
    own = any(flags.get(f"data.{k}") is not None or k in file_section for k in ("dataset", "data_dir"))
    saved = search["config"]["data"]
    carried = {} if own else {f"data.{k}": saved[k] for k in CARRIED_DATA if k in saved}
    if carried.get("data.data_dir") and (search["data"] or {}).get("data_dir"):
        # data.json holds it absolute: the retrain may run from another folder than the search.
        carried["data.data_dir"] = search["data"]["data_dir"]
    preset = "quick" if search["config"].get("preset") == "quick" else None
    where = search["folder"]
    if own:
        logger.info("train: data as given (not the data of the search run %s)", where)
    else:
        info = search["data"] or {}
        size = "x".join(str(v) for v in info.get("image_size", [])) or "its size"
        classes = info.get("classes") or []
        names = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        logger.info("train: the data of the search run %s: %s%s, %s px, %s channel(s), %s classes (%s); "
                    "--dataset/--data-dir/--set data.* override", where, saved.get("dataset"),
                    f" in {saved['data_dir']}" if saved.get("data_dir") else "", size,
                    info.get("in_channels", "?"), len(classes) or "?", names or "?")
    return carried, preset, None if own else search["data"]


def check_same_data(info: Dict[str, Any], expect: Optional[Dict[str, Any]], where: str) -> None:
    """Refuse a retrain whose data no longer is what the search saw (files changed since)."""
    if not expect:
        return
    for key, what in (("classes", "classes"), ("in_channels", "channels"), ("image_size", "image size")):
        got = list(info[key]) if isinstance(info[key], (list, tuple)) else info[key]
        if key in expect and got != expect[key]:
            raise UserError(f"the {what} of the data ({got}) differ from those the search run {where} saw "
                            f"({expect[key]}): the data changed since the search (pass --data-dir to train "
                            "on other data)")


def start_train(genotype: str, flags: Dict[str, Any], config: Any = None, out: Optional[str] = None,
                force: bool = False, progress: Any = True) -> TrainResult:
    """A new retrain of ``genotype`` (a zoo name, a file, a run folder or an architecture string).

    Under torchrun each set-up step is agreed between the processes (one error for all) and
    process 0 alone prepares the run folder (:mod:`enas.distributed`).
    """
    from enas.distributed import session
    from enas.runs.genotype_io import resolve_arch

    def configure() -> tuple:
        space, geno, source = resolve_arch(genotype)
        file_data = read_config_file(config) if isinstance(config, (str, Path)) else dict(config or {})
        search = search_run_info(genotype)
        carried, implied, expect = carry_over(search, flags, file_data) if search else ({}, None, None)
        cfg = build_train_config(file_data, flags, preset=implied, arch_space=space, arch=geno, carried=carried)
        if search:
            given = flags.get("preset") or file_data.get("preset")
            why = ("as asked" if given else "the search run used --preset quick" if implied
                   else f"the default for {space.name} architectures; the search run used preset "
                        f"{search['config'].get('preset')!r}")
            logger.info("train: preset %s (%s)", cfg.preset, why)
        return space, geno, source, cfg, (expect, search["folder"]) if expect else None

    with session() as dist:
        space, geno, source, cfg, expect = dist.agree(configure)
        dist.configure(cfg.run.device, cfg.run.seed)  # a bad --device is refused before the run folder exists
        dist.check_batch(cfg.data.batch_size)  # so is a global batch the processes cannot share
        src = Path(source)
        name = (source[4:] if source.startswith("zoo:") else space.name if source.startswith("arch:")
                else (src.parent.name if src.name == "genotype.json" else src.stem) or "genotype")
        default = Path(f"runs/train-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir = dist.agree(lambda: prepare_run_dir(Path(out) if out else default, resume=False, force=force,
                                                     kind="train"), main_only=True)
        return TrainResult(run_dir, _run(cfg, geno, source, run_dir, False, progress, expect, dist))


def resume_train(resume_dir: str | Path, device: Optional[str] = None, progress: Any = True) -> TrainResult:
    """Continue a retrain run from its last checkpoint with its saved config and genotype."""
    from enas.distributed import session
    from enas.retrain.trained import load_train_checkpoint, network_from_checkpoint

    def load() -> tuple:
        state, _ = load_train_checkpoint(prepare_run_dir(Path(resume_dir), resume=True, force=False))
        cfg = load_saved_config(TrainConfig, state["config"])
        validate_train_config(cfg)
        if device:
            cfg.run.device = device
        _, _, genotype, _ = network_from_checkpoint(state, inference=False)
        return cfg, genotype, str(state.get("genotype_source", "checkpoint"))

    with session() as dist:
        cfg, genotype, source = dist.agree(load, main_only=True)  # process 0 reads the run folder
        return TrainResult(Path(resume_dir), _run(cfg, genotype, source, Path(resume_dir), True, progress, dist=dist))


def _run(cfg: TrainConfig, genotype: Any, source: str, run_dir: Path, resume: bool, progress: Any,
         expect: Any = None, dist: Any = None) -> Dict[str, Any]:
    from enas.retrain import loop as retrain
    from enas.distributed import Dist
    from enas.runs.genotype_io import write_genotype
    from enas.runs.progress import progress_factory
    from enas.runtime import configure_threads, describe_device, set_determinism

    dist = dist or Dist()
    configure_threads(cfg.run.threads)
    set_determinism(cfg.run.seed, cfg.run.deterministic)  # the same initial weights on every process
    device = dist.configure(cfg.run.device, cfg.run.seed)
    dist.check_batch(cfg.data.batch_size)
    if dist.is_main:
        attach_log_file(run_dir)
    logger.info("train: genotype %s, preset %s, dataset %s, C %d, %d layers, %d epochs, device %s, run folder %s%s",
                source, cfg.preset, cfg.data.dataset, cfg.model.channels, cfg.model.layers, cfg.epochs,
                describe_device(device), run_dir,
                f", {dist.world} processes (global batch {cfg.data.batch_size}, "
                f"{cfg.data.batch_size // dist.world} per process)" if dist.world > 1 else "")
    if not resume and dist.is_main:
        save_config(cfg, run_dir / "config.json")
        write_genotype(run_dir / "genotype.json", genotype)
    factory = progress_factory(cfg.run.progress_seconds) if progress is True else progress or None
    try:
        return retrain.run_retrain(cfg, genotype, source, run_dir, device, resume=resume,
                                   progress=factory if dist.is_main else None, expect=expect, dist=dist)
    except BaseException:
        if dist.is_main and not resume and not (run_dir / "checkpoints" / "last.pt").exists():
            # Failed before the first checkpoint (bad data, a network the images cannot carry,
            # an interrupt): leave no half run that --resume cannot continue and --out refuses.
            for name in ("config.json", "genotype.json", "metrics.jsonl", "data.json"):
                (run_dir / name).unlink(missing_ok=True)
        raise
