"""``enas genotypes``: the published cells that ``enas train`` and ``enas show`` accept by name."""
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
    """One dict per zoo genotype: name, source, node counts, ops, parameters of the preset's network.

    ``params`` is counted for the network ``enas train --preset PRESET`` builds at the
    preset's ``channels`` and ``layers`` (darts: C 36, 20 cells; enas: C 36, 17 cells),
    10 classes, auxiliary head excluded.
    """
    from shared_model.zoo import ZOO, ZOO_INFO

    rows = []
    for name, g in ZOO.items():
        params, channels, layers = _params_at_reference(name, preset)
        rows.append({"name": name, "source": ZOO_INFO.get(name, ""),
                     "nodes": {"normal": g.num_nodes("normal"), "reduce": g.num_nodes("reduce")},
                     "ops": sorted(g.ops()), "params": params, "preset": preset, "channels": channels,
                     "layers": layers})
    return rows


def register(cli: click.Group) -> None:
    @cli.command()
    @opt.option("--preset", default="darts", show_default=True,
                  help="Count the network `enas train --preset` builds: darts (DARTS NetworkCIFAR, C 36, "
                       "20 cells), enas (the official ENAS fixed network, C 36, 17 cells) or quick (C 8, 5 cells).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
    def genotypes(preset, as_json):
        """List the published genotypes usable as GENOTYPE (names ignore case).

        Parameters are counted for the CIFAR-10 network (10 classes) that
        `enas train --preset PRESET` builds, at the preset's channels and
        cells, auxiliary head excluded as in DARTS.
        """
        rows = zoo_table(preset)
        if as_json:
            click.echo(json.dumps(rows, indent=1))
            return
        width = max(len(r["name"]) for r in rows)
        column = f"params(C{rows[0]['channels']},L{rows[0]['layers']})"
        click.echo(f"{'name':<{width}}  nodes  {column:>15}  source")
        for r in rows:
            nodes = r["nodes"]["normal"] if r["nodes"]["normal"] == r["nodes"]["reduce"] else \
                f"{r['nodes']['normal']}/{r['nodes']['reduce']}"
            click.echo(f"{r['name']:<{width}}  {nodes!s:>5}  {r['params'] / 1e6:>13.2f} M  {r['source']}")
        click.echo(f"Counted with the {preset} preset's network. Use a name as GENOTYPE, "
                   "e.g. `enas show DARTS_V2` or `enas train DARTS_V2`.")
