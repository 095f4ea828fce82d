"""``enas genotypes``: the published architectures that ``enas train`` and ``enas show`` accept by name."""
from __future__ import annotations

import json
from functools import lru_cache

import click

from enas.commands import options as opt

REF_CLASSES, REF_IMAGE_SIZE, REF_IN_CHANNELS = 10, 32, 3  # the CIFAR-10 network


@lru_cache(maxsize=None)
def _params_at_reference(name: str, preset: str) -> tuple:
    """``(params, channels, layers)`` of the preset's CIFAR-10 network for a zoo genotype."""
    from enas.commands.show import counting_network
    from shared_model.profile import count_parameters
    from shared_model.zoo import ZOO

    model, cfg = counting_network(ZOO[name], preset, num_classes=REF_CLASSES, image_size=REF_IMAGE_SIZE,
                                  in_channels=REF_IN_CHANNELS)
    return count_parameters(model), cfg.model.channels, cfg.model.layers


def zoo_table(preset: str = "darts") -> list:
    """One dict per zoo architecture: name, space, source, node counts, ops, parameters of the preset's network.

    ``params`` is counted for the network ``enas train --preset PRESET`` builds at the
    preset's ``channels`` and ``layers`` (darts: C 36, 20 cells; enas: C 36, 17 cells;
    a macro architecture: the macro fixed network at its own depth, C 96 unless the
    preset is ``quick``), 10 classes, auxiliary head excluded. ``nodes`` is per cell
    type for genotypes and ``{"layers": L}`` for a macro network.
    """
    from shared_model.genotype import Genotype
    from shared_model.spaces import space_for_arch
    from shared_model.zoo import ZOO, ZOO_INFO

    rows = []
    for name, g in ZOO.items():
        params, channels, layers = _params_at_reference(name, preset)
        if isinstance(g, Genotype):
            nodes, ops = {"normal": g.num_nodes("normal"), "reduce": g.num_nodes("reduce")}, sorted(g.ops())
        else:
            nodes, ops = {"layers": g.num_layers}, sorted(set(g.ops))
        rows.append({"name": name, "space": space_for_arch(g).name, "source": ZOO_INFO.get(name, ""),
                     "nodes": nodes, "ops": ops, "params": params, "preset": preset, "channels": channels,
                     "layers": layers})
    return rows


def _nodes_text(nodes: dict) -> str:
    if "layers" in nodes:
        return f"L{nodes['layers']}"
    return str(nodes["normal"]) if nodes["normal"] == nodes["reduce"] else f"{nodes['normal']}/{nodes['reduce']}"


def register(cli: click.Group) -> None:
    @cli.command()
    @opt.option("--preset", default="darts", show_default=True,
                  help="Count the network `enas train --preset` builds: darts (DARTS NetworkCIFAR, C 36, "
                       "20 cells), enas (the official ENAS fixed network, C 36, 17 cells) or quick (C 8, 5 cells).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
    def genotypes(preset, as_json):
        """List the published architectures usable as GENOTYPE (names ignore case).

        Parameters are counted for the CIFAR-10 network (10 classes) that
        `enas train --preset PRESET` builds, at the preset's channels and
        cells (a macro network: its own depth, noted after the source),
        auxiliary head excluded as in DARTS.
        """
        rows = zoo_table(preset)
        if as_json:
            click.echo(json.dumps(rows, indent=1))
            return
        width = max(len(r["name"]) for r in rows)
        size = (rows[0]["channels"], rows[0]["layers"])
        column = f"params(C{size[0]},L{size[1]})"
        click.echo(f"{'name':<{width}}  nodes  {column:>15}  source")
        for r in rows:
            other = "" if (r["channels"], r["layers"]) == size else f" [C {r['channels']}, {r['layers']} layers]"
            click.echo(f"{r['name']:<{width}}  {_nodes_text(r['nodes']):>5}  {r['params'] / 1e6:>13.2f} M  "
                       f"{r['source']}{other}")
        click.echo(f"Counted with the {preset} preset's network. Use a name as GENOTYPE, "
                   "e.g. `enas show DARTS_V2` or `enas train DARTS_V2`.")
