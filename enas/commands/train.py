"""``enas train``: retrain a genotype from scratch and test it."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional

import click

from enas.configlib import load_saved_config, parse_set_option, read_config_file, save_config
from enas.errors import UserError
from enas.rundir import attach_log_file, prepare_run_dir
from enas.runtime import configure_threads, describe_device, resolve_device, set_determinism
from enas.train_config import PRESETS, TrainConfig, build_train_config, validate_train_config

logger = logging.getLogger(__name__)


def _start(cfg: TrainConfig, genotype, source: str, run_dir: Path, resume: bool,
           stop_after: Optional[int] = None) -> Dict[str, Any]:
    from enas.commands.search import progress_factory
    from enas.genotype_io import write_genotype
    from enas.retrain import run_retrain

    configure_threads(cfg.run.threads)
    set_determinism(cfg.run.seed, cfg.run.deterministic)
    device = resolve_device(cfg.run.device)
    attach_log_file(run_dir)
    logger.info("train: genotype %s, preset %s, dataset %s, C %d, %d layers, %d epochs, device %s, run folder %s",
                source, cfg.preset, cfg.data.dataset, cfg.model.channels, cfg.model.layers, cfg.epochs,
                describe_device(device), run_dir)
    if not resume:
        save_config(cfg, run_dir / "config.json")
        write_genotype(run_dir / "genotype.json", genotype)
    try:
        return run_retrain(cfg, genotype, source, run_dir, device, resume=resume, progress=progress_factory(),
                           stop_after=stop_after)
    except BaseException:
        if not resume and not (run_dir / "checkpoints" / "last.pt").exists():
            # Failed before the first checkpoint (bad data, a network the images cannot carry,
            # an interrupt): leave no half run that --resume cannot continue and --out refuses.
            for name in ("config.json", "genotype.json", "metrics.jsonl"):
                (run_dir / name).unlink(missing_ok=True)
        raise


def _resume(resume_dir: str, device: Optional[str]):
    from enas.trained import load_train_checkpoint, network_from_checkpoint

    run_dir = prepare_run_dir(Path(resume_dir), resume=True, force=False)
    state, _ = load_train_checkpoint(run_dir)
    cfg = load_saved_config(TrainConfig, state["config"])
    validate_train_config(cfg)
    if device:
        cfg.run.device = device
    _, _, genotype, _ = network_from_checkpoint(state, inference=False)
    return cfg, genotype, str(state.get("genotype_source", "checkpoint")), run_dir


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("genotype", required=False)
    @click.option("--preset", default=None, metavar="|".join(PRESETS),
                  help="darts (default for cell spaces): DARTS train.py protocol; enas: official ENAS "
                       "micro final; quick: about a minute on a CPU, digits data; nb201 (default for "
                       "NAS-Bench-201 cells): the benchmark's 200-epoch protocol; enas_macro (default for "
                       "macro architectures): official ENAS macro final.")
    @click.option("--dataset", default=None, metavar="NAME", help="cifar10 (default), cifar100, fashion_mnist, imagefolder, digits.")
    @click.option("--data-dir", default=None, metavar="DIR", help="Folder holding the dataset.")
    @click.option("--epochs", type=int, default=None, help="Training epochs (DARTS 600, ENAS 630).")
    @click.option("--batch-size", type=int, default=None, help="Minibatch size (DARTS 96, ENAS 144).")
    @click.option("--channels", type=int, default=None, help="Initial channels C (default 36).")
    @click.option("--layers", type=int, default=None,
                  help="Cells, the 2 reduction cells included (DARTS 20); a macro architecture fixes its own.")
    @click.option("--seed", type=int, default=None, help="Random seed (default 0).")
    @click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")
    @click.option("--config", "config_file", default=None, metavar="FILE",
                  help="JSON or TOML file with config sections (see README).")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                  help="Override any config key, e.g. --set model.drop_path_prob=0.3 (repeatable).")
    @click.option("--out", default=None, metavar="DIR",
                  help="Run folder (default runs/train-NAME-TIME).")
    @click.option("--resume", "resume_dir", default=None, metavar="DIR",
                  help="Continue the run in this folder from its last checkpoint.")
    @click.option("--force", is_flag=True, help="Replace the run already in --out.")
    def train(genotype, preset, dataset, data_dir, epochs, batch_size, channels, layers, seed, device,
              config_file, sets, out, resume_dir, force):
        """Retrain GENOTYPE from scratch on the whole training set and test it.

        GENOTYPE is a zoo name (see `enas genotypes`), a genotype JSON file or
        a run folder holding genotype.json (`enas derive` writes it). Writes
        RUN/result.json with the last epoch's test accuracy (see README "Run folder").
        """
        if resume_dir:
            changed = [n for n, v in [("GENOTYPE", genotype), ("--preset", preset), ("--dataset", dataset),
                                      ("--data-dir", data_dir), ("--epochs", epochs), ("--batch-size", batch_size),
                                      ("--channels", channels), ("--layers", layers), ("--seed", seed),
                                      ("--config", config_file), ("--out", out), ("--force", force or None),
                                      ("--set", sets or None)] if v is not None]
            if changed:
                raise UserError(f"{', '.join(changed)} cannot be given when resuming; "
                                "the run's saved config and genotype are used")
            cfg, geno, source, run_dir = _resume(resume_dir, device)
            result = _start(cfg, geno, source, run_dir, resume=True)
        else:
            from enas.genotype_io import resolve_arch

            if not genotype:
                raise UserError("missing GENOTYPE (a zoo name, a genotype JSON file or a run folder), "
                                "or --resume RUN_DIR")
            space, geno, source = resolve_arch(genotype)
            flags: Dict[str, Any] = {
                "preset": preset, "data.dataset": dataset, "data.data_dir": data_dir, "epochs": epochs,
                "data.batch_size": batch_size, "model.channels": channels, "model.layers": layers,
                "run.seed": seed, "run.device": device,
            }
            for item in sets:
                key, value = parse_set_option(item)
                flags[key] = value
            file_data = read_config_file(config_file) if config_file else None
            cfg = build_train_config(file_data, flags, arch_space=space, arch=geno)
            resolve_device(cfg.run.device)  # a bad --device is refused before the run folder exists
            src = Path(source)
            name = (source[4:] if source.startswith("zoo:") else space.name if source.startswith("arch:")
                    else (src.parent.name if src.name == "genotype.json" else src.stem) or "genotype")
            run_dir = Path(out or f"runs/train-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
            run_dir = prepare_run_dir(run_dir, resume=False, force=force)
            result = _start(cfg, geno, source, run_dir, resume=False)
        top5 = f", top-5 {result['test_top5']:.4f}" if result.get("test_top5") is not None else ""
        click.echo(f"result: {run_dir / 'result.json'}")
        click.echo(f"final test accuracy (epoch {result['epochs']}): {result['test_acc']:.4f}{top5} "
                   f"({result['params_m']:.2f} M params)")
        click.echo(f"This is one run (seed {result['seed']}); report the mean and spread over several seeds.")
