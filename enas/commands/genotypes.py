"""``enas genotypes``: the published cells that ``enas train`` and ``enas show`` accept by name."""
from __future__ import annotations

import json
from functools import lru_cache

import click
import torch

from shared_model.child import ChildNetwork
from shared_model.profile import count_parameters
from shared_model.zoo import ZOO, ZOO_INFO

REF_C, REF_LAYERS, REF_CLASSES = 36, 20, 10


@lru_cache(maxsize=None)
def _params_at_reference(name: str) -> int:
    # Meta tensors have shapes but no storage: counting needs no memory and no init time.
    with torch.device("meta"):
        model = ChildNetwork(ZOO[name], C=REF_C, layers=REF_LAYERS, num_classes=REF_CLASSES)
    return count_parameters(model)


def zoo_table() -> list:
    """One dict per zoo genotype: name, source, node counts, parameters at C 36 / 20 layers."""
    return [{"name": name, "source": ZOO_INFO.get(name, ""),
             "nodes": {"normal": g.num_nodes("normal"), "reduce": g.num_nodes("reduce")},
             "ops": sorted(g.ops()), "params_c36_l20": _params_at_reference(name)}
            for name, g in ZOO.items()]


def register(cli: click.Group) -> None:
    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
    def genotypes(as_json):
        """List the published genotypes usable as GENOTYPE (names ignore case).

        Parameters are counted for the CIFAR-10 evaluation network (C 36,
        20 cells, 10 classes), auxiliary head excluded as in DARTS.
        """
        rows = zoo_table()
        if as_json:
            click.echo(json.dumps(rows, indent=1))
            return
        width = max(len(r["name"]) for r in rows)
        click.echo(f"{'name':<{width}}  nodes  params(C36,L20)  source")
        for r in rows:
            nodes = r["nodes"]["normal"] if r["nodes"]["normal"] == r["nodes"]["reduce"] else \
                f"{r['nodes']['normal']}/{r['nodes']['reduce']}"
            click.echo(f"{r['name']:<{width}}  {nodes!s:>5}  {r['params_c36_l20'] / 1e6:>13.2f} M  {r['source']}")
        click.echo("Use a name as GENOTYPE, e.g. `enas show DARTS_V2` or `enas train DARTS_V2`.")
