"""``enas show``: an architecture in words, the size of its retrain network, and drawings of its cells.

Everything space-specific comes from the architecture's space: its text
(``Space.describe``), its JSON description (``Space.describe_json``), its
drawings (``Space.graphs``) and its retrain network (``Space.build_child``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from enas.commands import options as opt
from enas.errors import UserError


def _too_large(cfg: Any, image_size: int, in_channels: int) -> UserError:
    return UserError(f"a network with C {cfg.model.channels}, {cfg.model.layers} layers and {image_size} px "
                     f"{in_channels}-channel images is too large to build")


def counting_network(genotype: Any, preset: Optional[str] = None, channels: Optional[int] = None,
                     layers: Optional[int] = None, num_classes: int = 10, image_size: int = 32,
                     in_channels: int = 3) -> Tuple[Any, Any]:
    """The network ``enas train --preset PRESET`` builds for ``genotype``, on the meta device.

    Built by the same config and builder as retraining (``build_train_config``,
    ``make_child``), without the auxiliary head: the ``darts`` network, or the
    official ENAS fixed network for ``enas``. ``channels`` and ``layers`` default
    to the preset's. Meta tensors carry shapes only, so building is instant and
    needs no memory.

    Returns:
        The network and the resolved train config.

    Raises:
        UserError: an unknown preset, or sizes the network cannot have (e.g. too
            many reductions for the image, or fewer than 3 layers).
    """
    import torch

    from enas.config.train import build_train_config
    from enas.retrain.trained import make_child
    from shared_model.spaces import space_for_arch

    # The head is excluded from the counts; without it no aux-position check applies.
    cfg = build_train_config(None, {"model.channels": channels, "model.layers": layers,
                                    "model.auxiliary": False}, preset=preset,
                             arch_space=space_for_arch(genotype), arch=genotype)
    info = {"num_classes": num_classes, "in_channels": in_channels, "image_size": _hw(image_size)}
    try:
        with torch.device("meta"):
            model = make_child(genotype, cfg, info, inference=True)
    except (TypeError, RuntimeError, OverflowError):
        # Sizes beyond torch's 64-bit shapes (e.g. --classes 2**40) overflow even on the meta device.
        raise _too_large(cfg, image_size, in_channels) from None
    return model, cfg


def network_size(genotype: Any, channels: Optional[int], layers: Optional[int], num_classes: int,
                 image_size: int, in_channels: int, preset: Optional[str] = None) -> Dict[str, Any]:
    """Parameters (auxiliary head excluded) and multiply-adds per image of the preset's network.

    Raises:
        UserError: see :func:`counting_network`.
    """
    from shared_model.profile import count_macs, count_parameters

    model, cfg = counting_network(genotype, preset, channels, layers, num_classes, image_size, in_channels)
    try:
        macs = count_macs(model, (in_channels, *_hw(image_size)))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except (TypeError, RuntimeError, OverflowError):
        raise _too_large(cfg, image_size, in_channels) from None
    return {"params": count_parameters(model), "multiply_adds": macs, "preset": cfg.preset,
            "channels": cfg.model.channels, "layers": cfg.model.layers}


def _hw(size: Any) -> List[int]:
    return [size, size] if isinstance(size, int) else [int(v) for v in size]


def run_sizes(arg: str) -> Dict[str, Any]:
    """The sizes of the network a run folder trains (empty for anything else).

    A train run: its preset, channels, layers and data; a search run: the preset and data
    ``enas train RUN`` would use (its data.json).
    """
    from enas.retrain.run import search_run_info

    folder = Path(arg).expanduser()
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        data = json.loads((folder / "data.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not (isinstance(config, dict) and isinstance(data, dict)):
        return {}
    out: Dict[str, Any] = {k: data[k] for k in ("num_classes", "in_channels", "image_size") if k in data}
    if search_run_info(arg) is not None:
        out["preset"] = "quick" if config.get("preset") == "quick" else None
    elif isinstance(config.get("model"), dict):
        out.update(preset=config.get("preset"), channels=config["model"].get("channels"),
                   layers=config["model"].get("layers"))
    return out


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("genotype")
    @opt.option("--preset", default=None,
                help="Count the network `enas train --preset` builds: darts (DARTS NetworkCIFAR; the "
                     "default for cell spaces), enas (the official ENAS fixed network), quick, nb201 "
                     "(the default for NAS-Bench-201 cells) or enas_macro (the official ENAS macro fixed "
                     "network; the default for macro architectures). A run folder: the run's own.")
    @opt.option("--channels", type=int, default=None,
                help="Initial channels C  [default: a train run's own, else the preset's: 36, quick 8]")
    @opt.option("--layers", type=int, default=None,
                help="Cells, reductions included  [default: a train run's own, else the preset's: darts 20, "
                     "enas 17, quick 5; a macro architecture's own depth]")
    @opt.option("--classes", "num_classes", type=int, default=None,
                help="Classifier outputs  [default: a run's own, else 10]")
    @opt.option("--image-size", type=int, default=None, help="Input height and width  [default: a run's own, else 32]")
    @opt.option("--in-channels", type=int, default=None, help="Image channels  [default: a run's own, else 3]")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @opt.out("Draw the cells to OUT/normal.png/.svg and OUT/reduce.png/.svg.")
    @opt.option("--lut", default=None,
                help="Latency table (`enas latency-table`): print the predicted latency of the table's "
                     "network for GENOTYPE next to a measurement on this machine.")
    def show(genotype, preset, channels, layers, num_classes, image_size, in_channels, as_json, out, lut):
        """Print GENOTYPE cell by cell with the size of its network.

        GENOTYPE is a zoo name, a genotype JSON file or a run folder. Inputs
        c_{k-2} and c_{k-1} are indices 0 and 1, computed nodes start at 2
        (in the drawings too). Parameters are those of the network
        `enas train --preset PRESET` builds, auxiliary head excluded (DARTS
        convention); for a run folder, at the run's own sizes.
        """
        from enas.runs.genotype_io import resolve_arch

        space, geno, source = resolve_arch(genotype)
        own = run_sizes(genotype)
        given = {"preset": preset, "channels": channels, "layers": layers, "num_classes": num_classes,
                 "image_size": image_size, "in_channels": in_channels}
        sizes = {**{"num_classes": 10, "image_size": 32, "in_channels": 3}, **{k: v for k, v in own.items()},
                 **{k: v for k, v in given.items() if v is not None}}
        size = network_size(geno, sizes.get("channels"), sizes.get("layers"), sizes["num_classes"],
                            sizes["image_size"], sizes["in_channels"], preset=sizes.get("preset"))
        channels, layers = size["channels"], size["layers"]
        num_classes, in_channels = sizes["num_classes"], sizes["in_channels"]
        image_size = _hw(sizes["image_size"])
        files: List[str] = []
        if out:
            from enas.runs.draw import render_graph

            for cell, graph in space.graphs(geno).items():
                try:
                    files += [str(p) for p in render_graph(graph, Path(out) / cell, name=cell)]
                except OSError as exc:
                    raise UserError(f"cannot write drawings to {out}: {exc.strerror or exc}") from None
        latency = None
        if lut:
            from enas.cost.lut import read_table
            from enas.cost.report import format_latency, latency_report

            latency = latency_report(space, geno, read_table(lut))
        if as_json:
            click.echo(json.dumps({
                "source": source, "space": space.name, "genotype": space.arch_to_json(geno),
                **space.describe_json(geno), "num_classes": num_classes,
                "image_size": image_size[0] if image_size[0] == image_size[1] else image_size,
                "in_channels": in_channels, **size, "sizes_from": "run" if own else "defaults",
                "files": files, **({"latency": latency} if latency else {})}, indent=1))
            return
        click.echo(f"genotype: {source}")
        for line in space.describe(geno):
            click.echo(line)
        whose = " (the run's own sizes)" if own else ""
        click.echo(f"{size['preset']} network at C {channels}, {layers} layers, {num_classes} classes, "
                   f"{in_channels}x{image_size[0]}x{image_size[1]} input{whose}:")
        click.echo(f"  params        {size['params']:,} ({_human(size['params'])}, auxiliary head excluded)")
        click.echo(f"  multiply-adds {size['multiply_adds']:,} ({_human(size['multiply_adds'])}) per image")
        for line in format_latency(latency) if latency else []:
            click.echo(line)
        for path in files:
            click.echo(f"wrote {path}")
