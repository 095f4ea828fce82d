"""The public Python API: everything the ``enas`` command does, as functions.

``import enas`` is cheap (torch loads on the first call), and the CLI commands
are thin wrappers around these functions. Keyword arguments mirror the
command-line flags; ``overrides`` takes any config key as ``--set`` does
(``{"controller.lr": 0.001}``) and ``config`` a JSON/TOML file or a dict of
config sections. Bad input raises :class:`enas.errors.UserError` with one
line (the CLI prints it as ``error: ...``)::

    import enas

    run = enas.run_search(preset="quick", out="runs/quick")   # -> SearchResult
    print(run.genotype, run.best_valid_acc)
    trained = enas.train(run.run_dir, out="runs/quick-train")  # the search's data and preset
    print(trained.test_acc)
    print(enas.evaluate(trained.run_dir)["top1"])
    enas.export(trained.run_dir, format="onnx")
    net = enas.build_child(enas.load_genotype("DARTS_V2"), num_classes=10)

(``enas.search`` is the package of the search strategies, so the function is
``run_search``.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from enas.errors import UserError
from enas.search.run import SearchResult
from enas.retrain.run import TrainResult

__all__ = ["SearchResult", "TrainResult", "build_child", "derive", "evaluate", "export", "load_genotype",
           "run_search", "train"]

PathLike = Union[str, Path]


def _given(names: Mapping[str, Any], what: str) -> None:
    """Refuse settings passed together with ``resume`` (the saved config is used)."""
    flag = {"genotype": "GENOTYPE", "overrides": "--set"}
    changed = [flag.get(name, "--" + name.replace("_", "-"))
               for name, value in names.items() if value not in (None, False, (), {})]
    if changed:
        raise UserError(f"{', '.join(changed)} cannot be {what} when resuming; the run's saved config is used")


def _flags(base: Dict[str, Any], overrides: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    flags = dict(base)
    for key, value in (overrides or {}).items():
        flags[str(key)] = value
    return flags


def load_genotype(arg: PathLike) -> Any:
    """An architecture from a zoo name (``"DARTS_V2"``), a genotype JSON file, a run folder or
    an architecture string (NAS-Bench-201); see README "Getting the architecture out"."""
    from enas.runs.genotype_io import resolve_arch

    return resolve_arch(str(arg))[1]


def build_child(genotype: Any, preset: Optional[str] = None, channels: Optional[int] = None,
                layers: Optional[int] = None, num_classes: int = 10,
                image_size: Union[int, Sequence[int]] = 32, in_channels: int = 3, auxiliary: bool = False):
    """The network ``enas train --preset PRESET`` builds for ``genotype`` (a ``torch.nn.Module``
    on the CPU, freshly initialised; ``forward(x) -> (logits, aux or None)``).

    ``channels``/``layers`` default to the preset's (darts: C 36, 20 cells); ``image_size`` is
    ``H`` or ``[H, W]``; ``auxiliary`` adds the preset's auxiliary head (training only).
    """
    from enas.data.datasets import image_hw
    from enas.config.train import build_train_config
    from enas.retrain.trained import make_child
    from shared_model.spaces import space_for_arch

    if isinstance(genotype, (str, Path)):
        genotype = load_genotype(genotype)
    cfg = build_train_config(None, {"model.channels": channels, "model.layers": layers,
                                    "model.auxiliary": auxiliary or None}, preset=preset,
                             arch_space=space_for_arch(genotype), arch=genotype)
    if not auxiliary:
        cfg.model.auxiliary = False
    h, w = image_hw(image_size)
    info = {"num_classes": num_classes, "in_channels": in_channels, "image_size": [h, w]}
    return make_child(genotype, cfg, info, inference=not auxiliary)


def run_search(out: Optional[PathLike] = None, *, resume: Optional[PathLike] = None, force: bool = False,
               preset: Optional[str] = None, strategy: Optional[str] = None, space: Optional[str] = None,
               order: Optional[int] = None, dataset: Optional[str] = None, data_dir: Optional[PathLike] = None,
               epochs: Optional[int] = None, batch_size: Optional[int] = None, seed: Optional[int] = None,
               device: Optional[str] = None, deterministic: Optional[bool] = None,
               config: Union[PathLike, Mapping[str, Any], None] = None,
               overrides: Optional[Mapping[str, Any]] = None, benchmark: Optional[PathLike] = None,
               cost: Optional[str] = None, lut: Optional[PathLike] = None, target: Optional[float] = None,
               constraint: Optional[str] = None, progress: Any = True) -> SearchResult:
    """Search an architecture (``enas search``): train the shared weights, derive ``genotype.json``.

    Args:
        out: the run folder (default ``runs/search-STRATEGY-TIME``); an existing run is refused
            unless ``force`` (which deletes only the files that run wrote).
        resume: continue the run in this folder from its last checkpoint (only ``device`` may
            be given with it).
        preset: ``paper`` (default) or ``quick``; strategy: ``enas``, ``darts``, ``random``;
            space: a registered space; order: DARTS order 1 or 2.
        dataset, data_dir, epochs, batch_size, seed, device, deterministic: as the flags.
        config: a JSON/TOML file or a dict of config sections; overrides: ``{"section.key": value}``.
        benchmark: a NAS-Bench-201 table to score the run with (``--space nb201``).
        cost, lut, target, constraint: price the child networks and search under a budget
            (``params``, ``macs``, ``latency`` with a latency table, or ``package.module:factory``;
            ``soft``, ``hard`` or ``both``), README "Searching for a device".
        progress: True: tqdm bars on a terminal, log lines elsewhere; False: none; or a factory
            ``progress(total=, initial=, desc=)`` returning a tqdm-like object.

    Returns:
        :class:`SearchResult`: the run folder, the derived genotype and its search-time score.
    """
    from enas.search.run import resume_search, start_search

    if resume is not None:
        _given({"out": out, "force": force, "preset": preset, "strategy": strategy, "space": space,
                "order": order, "dataset": dataset, "data_dir": data_dir, "epochs": epochs,
                "batch_size": batch_size, "seed": seed, "deterministic": deterministic, "config": config,
                "overrides": overrides, "benchmark": benchmark, "cost": cost, "lut": lut, "target": target,
                "constraint": constraint}, "changed")
        return resume_search(resume, device=device, progress=progress)
    flags = _flags({"strategy": strategy, "preset": preset, "model.space": space,
                    "darts.order": int(order) if order else None, "data.dataset": dataset,
                    "data.data_dir": str(data_dir) if data_dir is not None else None, "epochs": epochs,
                    "data.batch_size": batch_size, "run.seed": seed, "run.device": device,
                    "run.deterministic": deterministic,
                    "benchmark": str(Path(benchmark).resolve()) if benchmark else None,
                    "cost.model": cost, "cost.lut": str(Path(lut).resolve()) if lut else None,
                    "cost.target": target, "cost.constraint": constraint}, overrides)
    return start_search(flags, config, str(out) if out is not None else None, force, progress)


def derive(run_dir: PathLike, *, samples: Optional[int] = None, device: Optional[str] = None,
           target: Optional[float] = None, constraint: Optional[str] = None, progress: Any = True) -> SearchResult:
    """Re-derive a search run's genotype from its last checkpoint (``enas derive``).

    The candidates replay the search's own derive draws (the same ones with the run's
    ``samples``). ``samples``: candidates to score (default: the run's ``derive.samples``). ``target`` /
    ``constraint``: derive under another cost budget (a run searched with a cost). An existing
    ``genotype.json`` is replaced; the result says so (``replaced``, ``changed``).
    """
    from enas.search.run import derive_run

    return derive_run(run_dir, samples=samples, device=device, target=target, constraint=constraint,
                      progress=progress)


def train(genotype: Optional[PathLike] = None, out: Optional[PathLike] = None, *,
          resume: Optional[PathLike] = None, force: bool = False, preset: Optional[str] = None,
          dataset: Optional[str] = None, data_dir: Optional[PathLike] = None, epochs: Optional[int] = None,
          batch_size: Optional[int] = None, channels: Optional[int] = None, layers: Optional[int] = None,
          seed: Optional[int] = None, device: Optional[str] = None,
          config: Union[PathLike, Mapping[str, Any], None] = None,
          overrides: Optional[Mapping[str, Any]] = None, progress: Any = True) -> TrainResult:
    """Retrain ``genotype`` from scratch and test it (``enas train``).

    ``genotype`` is anything :func:`load_genotype` takes. A search run folder also hands over
    its data (dataset, data dir, image size, resize, channels, limit) and, for a ``quick``
    search, the ``quick`` preset; the arguments override. ``resume`` continues a train run
    (only ``device`` may be given with it). Returns :class:`TrainResult` (``result.json``).
    """
    from enas.retrain.run import resume_train, start_train

    if resume is not None:
        _given({"genotype": genotype, "out": out, "force": force, "preset": preset, "dataset": dataset,
                "data_dir": data_dir, "epochs": epochs, "batch_size": batch_size, "channels": channels,
                "layers": layers, "seed": seed, "config": config, "overrides": overrides}, "given")
        return resume_train(resume, device=device, progress=progress)
    if genotype is None:
        raise UserError("missing GENOTYPE (a zoo name, a genotype JSON file or a run folder), "
                        "or --resume RUN_DIR")
    flags = _flags({"preset": preset, "data.dataset": dataset,
                    "data.data_dir": str(data_dir) if data_dir is not None else None, "epochs": epochs,
                    "data.batch_size": batch_size, "model.channels": channels, "model.layers": layers,
                    "run.seed": seed, "run.device": device}, overrides)
    return start_train(str(genotype), flags, config, str(out) if out is not None else None, force, progress)


def evaluate(checkpoint: PathLike, *, device: str = "auto", data_dir: Optional[PathLike] = None,
             batch_size: Optional[int] = None, latency_batch: int = 64, repeats: int = 20,
             lut: Optional[PathLike] = None, threads: Optional[int] = None) -> Dict[str, Any]:
    """Test a retrained checkpoint (a ``.pt`` or a train run folder; ``enas evaluate``): top-1/5,
    loss, parameters, multiply-adds and latency, as the ``--json`` object; with ``lut`` (a latency
    table) also ``table_latency``, its prediction next to a measurement. ``threads``: CPU threads
    (default: the run's ``run.threads``, else torch's default); note that it is set process-wide."""
    from enas.retrain.evaluator import evaluate_checkpoint

    return evaluate_checkpoint(str(checkpoint), device, str(data_dir) if data_dir is not None else None,
                               batch_size, latency_batch, repeats, str(lut) if lut is not None else None,
                               threads)


def export(checkpoint: PathLike, format: str = "onnx", out: Optional[PathLike] = None, *,  # noqa: A002
           batch_size: int = 1, force: bool = False) -> Dict[str, Any]:
    """Export a retrained checkpoint to ONNX or TorchScript, verified against PyTorch (``enas export``).

    An existing ``out`` is replaced only if enas exported it, or with ``force``.
    """
    from enas.retrain.exporter import export_checkpoint

    return export_checkpoint(str(checkpoint), format, str(out) if out is not None else None, batch_size, force)
