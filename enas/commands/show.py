"""``enas show``: a genotype in words, its network's size, and drawings of its cells."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import click
import torch

from enas.errors import UserError
from shared_model.child import ChildNetwork
from shared_model.genotype import CELL_TYPES, Genotype
from shared_model.profile import count_macs, count_parameters


def _state_name(index: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(index, f"node {index}")


def describe_cell(genotype: Genotype, cell_type: str) -> Dict[str, Any]:
    """Per-node formulas of one cell; node indices are the genotype's (inputs 0, 1; nodes from 2)."""
    entries, concat = genotype.cell(cell_type)
    nodes = []
    for k in range(0, len(entries), 2):
        (op_a, in_a), (op_b, in_b) = entries[k], entries[k + 1]
        nodes.append({"node": k // 2 + 2, "inputs": [[op_a, in_a], [op_b, in_b]],
                      "text": f"node {k // 2 + 2} = {op_a}({_state_name(in_a)}) + {op_b}({_state_name(in_b)})"})
    return {"nodes": nodes, "concat": list(concat),
            "output": "c_{k} = concat(" + ", ".join(_state_name(c) for c in concat) + ")"}


def network_size(genotype: Genotype, channels: int, layers: int, num_classes: int, image_size: int,
                 in_channels: int) -> Dict[str, int]:
    """Parameters (auxiliary head excluded) and multiply-adds per image of the child network.

    Raises:
        UserError: sizes the network cannot have (e.g. too many reductions for the image).
    """
    try:
        # Meta tensors carry shapes only: counting is instant and needs no memory.
        with torch.device("meta"):
            model = ChildNetwork(genotype, C=channels, layers=layers, num_classes=num_classes,
                                 in_channels=in_channels, image_size=image_size)
        macs = count_macs(model, (in_channels, image_size, image_size))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except (TypeError, RuntimeError, OverflowError):
        # Sizes beyond torch's 64-bit shapes (e.g. --channels 2**40) overflow even on the meta device.
        raise UserError(f"a network with C {channels}, {layers} layers and {image_size} px "
                        f"{in_channels}-channel images is too large to build") from None
    return {"params": count_parameters(model), "multiply_adds": macs}


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("genotype")
    @click.option("--channels", type=int, default=36, show_default=True, help="Initial channels C.")
    @click.option("--layers", type=int, default=20, show_default=True, help="Cells, reductions included.")
    @click.option("--classes", "num_classes", type=int, default=10, show_default=True, help="Classifier outputs.")
    @click.option("--image-size", type=int, default=32, show_default=True, help="Input height and width.")
    @click.option("--in-channels", type=int, default=3, show_default=True, help="Image channels.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @click.option("--out", default=None, metavar="DIR",
                  help="Draw the cells to OUT/normal.png/.svg and OUT/reduce.png/.svg.")
    def show(genotype, channels, layers, num_classes, image_size, in_channels, as_json, out):
        """Print GENOTYPE cell by cell with the size of its network.

        GENOTYPE is a zoo name, a genotype JSON file or a run folder. Inputs
        c_{k-2} and c_{k-1} are indices 0 and 1, computed nodes start at 2.
        Parameters exclude the auxiliary head (DARTS convention).
        """
        from enas.genotype_io import resolve_genotype

        geno, source = resolve_genotype(genotype)
        size = network_size(geno, channels, layers, num_classes, image_size, in_channels)
        files: List[str] = []
        if out:
            from enas.draw import render_cell

            for cell in CELL_TYPES:
                try:
                    files += [str(p) for p in render_cell(geno, cell, Path(out) / cell)]
                except OSError as exc:
                    raise UserError(f"cannot write drawings to {out}: {exc.strerror or exc}") from None
        cells = {cell: describe_cell(geno, cell) for cell in CELL_TYPES}
        if as_json:
            click.echo(json.dumps({
                "source": source, "genotype": geno.to_dict(), "cells": cells, "channels": channels,
                "layers": layers, "num_classes": num_classes, "image_size": image_size,
                "in_channels": in_channels, **size, "files": files}, indent=1))
            return
        click.echo(f"genotype: {source}")
        for cell in CELL_TYPES:
            desc = cells[cell]
            click.echo(f"{cell} cell ({len(desc['nodes'])} nodes):")
            for node in desc["nodes"]:
                click.echo(f"  {node['text']}")
            click.echo(f"  {desc['output']}")
        click.echo(f"network at C {channels}, {layers} layers, {num_classes} classes, "
                   f"{in_channels}x{image_size}x{image_size} input:")
        click.echo(f"  params        {size['params']:,} ({_human(size['params'])}, auxiliary head excluded)")
        click.echo(f"  multiply-adds {size['multiply_adds']:,} ({_human(size['multiply_adds'])}) per image")
        for path in files:
            click.echo(f"wrote {path}")
