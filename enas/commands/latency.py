"""``enas latency-table``: measure every block a space can place, for ``--cost latency``."""
from __future__ import annotations

from pathlib import Path

import click

from enas.commands import options as opt
from enas.errors import UserError


def register(cli: click.Group) -> None:
    @cli.command("latency-table")
    @opt.option("--space", type=opt.SpaceName(), default="micro", show_default=True,
                help="Search space whose blocks are measured (any registered one).")
    @click.option("--num-nodes", type=int, default=None, help="Nodes per cell (cell spaces; default the space's).")
    @click.option("--ops", default=None, metavar="OP,OP,...", help="Op list (cell spaces; default the space's).")
    @opt.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N: the target device.")
    @click.option("--runtime", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True,
                  help="Run each block with PyTorch eager or with ONNX Runtime (pip install 'enas[export]').")
    @click.option("--image-size", type=int, default=32, show_default=True, help="Input height and width.")
    @opt.option("--channels", type=int, default=16, show_default=True, help="Initial channels C of the child network.")
    @opt.option("--layers", type=int, default=8, show_default=True,
                help="The space's layers (cell spaces: cells, reductions included; nb201: cells per stage; "
                     "macro: layers).")
    @click.option("--classes", "num_classes", type=int, default=10, show_default=True, help="Classifier outputs.")
    @click.option("--in-channels", type=int, default=3, show_default=True, help="Image channels.")
    @click.option("--stem-multiplier", type=int, default=3, show_default=True, help="Stem width / C (cell spaces).")
    @click.option("--batch", "batch_size", type=int, default=1, show_default=True, help="Images per forward pass.")
    @click.option("--threads", type=int, default=1, show_default=True,
                  help="Intra-op threads while measuring (1: least disturbed by other processes).")
    @click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs per block first.")
    @click.option("--repeats", type=int, default=100, show_default=True, help="Timed runs per block (median kept).")
    @click.option("--rounds", type=int, default=5, show_default=True,
                  help="Interleaved passes over all blocks the repeats are split into.")
    @click.option("--calibrate", type=int, default=5, show_default=True,
                  help="Random networks measured end to end to calibrate the overhead (0: none).")
    @opt.option("--seed", type=int, default=0, show_default=True, help="Seed of inputs and calibration networks.")
    @click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
                  help="wall: elapsed time; cpu: the measuring thread's CPU time (--device cpu --threads 1), "
                       "which other processes on a busy machine do not inflate.")
    @opt.option("--out", required=True, metavar="FILE", help="The table (JSON) to write.")
    @click.option("--force", is_flag=True, help="Replace an existing --out file.")
    def latency_table(space, num_nodes, ops, device, runtime, image_size, channels, layers, num_classes,
                      in_channels, stem_multiplier, batch_size, threads, warmup, repeats, rounds, calibrate,
                      seed, clock, out, force):
        """Measure the latency of every (op, shape, stride) and fixed part a space can place.

        Writes a table for `enas search --cost latency --lut OUT` and `enas show` /
        `enas evaluate --lut OUT`: per block the median, 10th and 90th percentile in
        milliseconds, the device, threads, runtime and library versions, and the load
        average around the measurement. A network's predicted latency is the sum of its
        blocks plus the calibrated overhead. Measure on an otherwise idle machine.
        """
        from enas.cost.measure import measure_table
        from enas.cost.models import cost_spec
        from enas.runtime import resolve_device
        from shared_model.spaces import get_space

        for name, value, low in (("--batch", batch_size, 1), ("--threads", threads, 1), ("--warmup", warmup, 0),
                                 ("--repeats", repeats, 1), ("--rounds", rounds, 1), ("--calibrate", calibrate, 0)):
            if value < low:
                raise UserError(f"{name} must be >= {low}")
        if Path(out).exists() and not force:
            raise UserError(f"{out} exists; pass --force to replace it")
        try:
            the_space = get_space(space, num_nodes=num_nodes, ops=ops.split(",") if ops else None)
            the_space = the_space.for_layers(layers)  # spaces whose architecture fixes the depth (macro)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if layers < the_space.min_layers:
            raise UserError(f"--layers must be >= {the_space.min_layers} ({the_space.layers_meaning})")
        spec = cost_spec(channels, layers, num_classes, in_channels, image_size, stem_multiplier)
        table = measure_table(the_space, spec, batch_size, resolve_device(device), runtime=runtime,
                              threads=threads, warmup=warmup, repeats=repeats, rounds=min(rounds, repeats),
                              calibrate=calibrate, seed=seed, clock=clock)
        table.save(out)
        m = table.meta["measurement"]
        ops_n = sum(e["op"] for e in table.entries.values())
        click.echo(f"measured {len(table.entries)} blocks ({ops_n} op placements, "
                   f"{len(table.entries) - ops_n} fixed parts) for {table.describe()} in {m['seconds']:.0f} s")
        click.echo(f"overhead {table.overhead['median']:.3f} ms per network (median over {calibrate} "
                   f"calibration networks); load average {m['load_average_before']} -> {m['load_average_after']}")
        r = table.meta["random_architectures_ms"]
        click.echo(f"predicted latency of {r['draws']} random architectures: min {r['p0']:.3f}, p5 {r['p5']:.3f}, "
                   f"median {r['p50']:.3f}, p95 {r['p95']:.3f}, max {r['p100']:.3f} ms (choose --target from these)")
        click.echo(f"wrote {out}")
