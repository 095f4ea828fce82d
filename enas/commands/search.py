"""``enas search`` and ``enas derive``: thin wrappers of :func:`enas.run_search` and :func:`enas.derive`."""
from __future__ import annotations

import os

import click

from enas.commands import options as opt
from enas.config.search import CONSTRAINTS
from enas.config.search_presets import PRESETS, STRATEGIES


def _echo_cost(run_dir) -> None:
    """The derived architecture's cost and the Pareto front's size, when the run has a cost."""
    import json

    details = json.loads((run_dir / "derive.json").read_text())
    cost = details.get("cost")
    if not cost:
        return
    target = f" (target {cost['target']:g}, {cost['constraint']} constraint)" if cost.get("target") else ""
    front = details.get("pareto_front")
    click.echo(f"cost ({cost['model']}): {details['best_cost']:.6g} {cost['unit']}{target}"
               + (f"; Pareto front of {len(front)} candidates in derive.json" if front is not None else ""))


def _report(result, derived: bool = False) -> None:
    from enas.search.run import honesty

    acc = f"{result.best_valid_acc:.4f}"
    if derived:
        click.echo(f"derived genotype: {result.genotype_path} (best search-time valid acc {acc})")
        if result.replaced:
            click.echo(f"replaced the previous {result.genotype_path.name} "
                       f"({'a different architecture' if result.changed else 'the same architecture'})")
    else:
        click.echo(f"derived genotype: {result.genotype_path}")
        click.echo(f"candidate scores: {result.run_dir / 'derive.json'} (best search-time valid acc {acc})")
    _echo_cost(result.run_dir)
    click.echo(honesty(result.run_dir))
    if result.benchmark is not None:
        from enas.benchmark.score import format_score

        click.echo(format_score(result.benchmark))
        click.echo(f"benchmark scores: {result.run_dir / 'benchmark.json'}")


def register(cli: click.Group) -> None:
    @cli.command()
    @opt.option("--preset", type=click.Choice(PRESETS), default=None,
                help="paper: official values of the strategy (default); quick: minutes on a CPU, digits data; "
                     "mobile: quick under a 3 ms latency budget at batch 1 on one CPU thread.")
    @opt.option("--strategy", type=click.Choice(STRATEGIES), default=None,
                help="enas (default): LSTM controller + REINFORCE; darts: gradient-based; random: uniform; "
                     "evolution: regularized (aging) evolution; bo: Bayesian optimisation with Optuna's TPE "
                     "(pip install 'enas[bo]').")
    @opt.option("--space", type=opt.SpaceName(), default=None,
                help="Search space: micro, darts, nb201, macro or any registered one (default: micro for enas, "
                     "evolution and bo, darts for darts and random; macro: every strategy but darts).")
    @click.option("--order", type=click.Choice(["1", "2"]), default=None, help="DARTS order (1 or 2).")
    @opt.dataset()
    @opt.data_dir()
    @opt.option("--epochs", type=int, default=None, help="Search epochs (paper: 150 ENAS, 50 DARTS, 310 ENAS macro).")
    @opt.option("--batch-size", type=int, default=None,
                help="Child minibatch size (under torchrun: the global batch of a step, split between "
                     "the processes).")
    @opt.seed()
    @opt.device()
    @click.option("--deterministic", is_flag=True, default=None, help="Deterministic kernels (exact resume on CPU).")
    @opt.config()
    @opt.sets("controller.lr=0.001")
    @opt.out("Run folder (default runs/search-STRATEGY-TIME).")
    @opt.resume()
    @opt.force()
    @opt.option("--benchmark", default=None,
                help="Benchmark table (CSV) to score the run's cells with at the end (--space nb201): "
                     "RUN/benchmark.json, see README \"Scoring a weight-sharing run\".")
    @click.option("--cost", "cost_model", default=None, metavar="params|macs|latency|MODULE:FACTORY",
                  help="Price every child network (README \"Searching for a device\"): parameters, "
                       "multiply-adds, latency from a table (--lut), or a plug-in factory.")
    @opt.option("--lut", default=None,
                help="Latency table from `enas latency-table` (--cost latency; without it one is measured "
                     "into RUN/latency_table.json).")
    @click.option("--target", type=float, default=None,
                  help="Target cost in the cost's unit (params, MACs, ms); without it costs are only logged.")
    @click.option("--constraint", type=click.Choice(CONSTRAINTS), default=None,
                  help="soft: MnasNet reward acc*(cost/target)^w (default); hard: reject and resample "
                       "architectures over the target; both.")
    def search(preset, strategy, space, order, dataset, data_dir, epochs, batch_size, seed, device,
               deterministic, config_file, sets, out, resume_dir, force, benchmark, cost_model, lut, target,
               constraint):
        """Search an architecture; writes RUN/genotype.json (see README "Run folder").

        Several GPUs or machines: `torchrun --nproc-per-node N -m enas search ...`
        (README "Several GPUs and machines").
        """
        import enas

        result = enas.run_search(out, resume=resume_dir, force=force, preset=preset, strategy=strategy,
                                 space=space, order=int(order) if order else None, dataset=dataset,
                                 data_dir=data_dir, epochs=epochs, batch_size=batch_size, seed=seed,
                                 device=device, deterministic=deterministic, config=config_file,
                                 overrides=opt.parse_sets(sets), benchmark=benchmark, cost=cost_model, lut=lut,
                                 target=target, constraint=constraint)
        if os.environ.get("RANK", "0") == "0":  # under torchrun: process 0 reports
            _report(result)

    @cli.command()
    @click.argument("run_dir", metavar="RUN")
    @opt.option("--samples", type=int, default=None,
                help="Architectures to score (default: the run's derive.samples).")
    @opt.device()
    @click.option("--target", type=float, default=None,
                  help="Derive under this cost target instead of the run's (needs a run with --cost).")
    @click.option("--constraint", type=click.Choice(CONSTRAINTS), default=None,
                  help="With --target: hard keeps only candidates within it; soft ranks by the MnasNet reward.")
    def derive(run_dir, samples, device, target, constraint):
        """Derive the final genotype of a search run from its last checkpoint.

        ENAS: the greedy architecture plus N samples from the trained controller;
        random: N uniform samples; both scored on one validation minibatch with the
        shared weights. Evolution and BO: the final population, then the best rewarded
        architectures of the search up to N, re-scored on one validation minibatch.
        DARTS: the top-2 non-`none` edges per node. The draws replay the search's own
        derive (the same candidates; more or fewer with --samples). Writes RUN/genotype.json
        (replacing the previous one, and saying so) and RUN/derive.json. With a cost,
        only candidates within the budget compete and derive.json lists the
        accuracy-cost Pareto front.
        """
        import enas

        _report(enas.derive(run_dir, samples=samples, device=device, target=target, constraint=constraint),
                derived=True)
