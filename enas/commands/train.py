"""``enas train``: a thin wrapper of :func:`enas.train` (retrain a genotype from scratch and test it)."""
from __future__ import annotations

import os

import click

from enas.commands import options as opt

def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("genotype", required=False)
    @opt.option("--preset", default=None,
                help="darts (default for cell spaces): DARTS train.py protocol; enas: official ENAS "
                     "micro final; quick: about a minute on a CPU, digits data; nb201 (default for "
                     "NAS-Bench-201 cells): the benchmark's 200-epoch protocol; enas_macro (default for "
                     "macro architectures): official ENAS macro final. A quick search run given as "
                     "GENOTYPE defaults to quick.")
    @opt.dataset()
    @opt.data_dir("Folder holding the dataset (default: a search run's own; nothing is downloaded).")
    @opt.option("--epochs", type=int, default=None, help="Training epochs (DARTS 600, ENAS 630).")
    @opt.option("--batch-size", type=int, default=None,
                help="Minibatch size (DARTS 96, ENAS 144); under torchrun the global batch of a step, "
                     "split between the processes.")
    @opt.option("--channels", type=int, default=None, help="Initial channels C (default 36).")
    @opt.option("--layers", type=int, default=None,
                help="Cells, the 2 reduction cells included (DARTS 20); a macro architecture fixes its own.")
    @opt.seed()
    @opt.device()
    @opt.config()
    @opt.sets("model.drop_path_prob=0.3")
    @opt.out("Run folder (default runs/train-NAME-TIME).")
    @opt.resume()
    @opt.force()
    def train(genotype, preset, dataset, data_dir, epochs, batch_size, channels, layers, seed, device,
              config_file, sets, out, resume_dir, force):
        """Retrain GENOTYPE from scratch on the whole training set and test it.

        GENOTYPE is a zoo name (see `enas genotypes`), a genotype JSON file or
        a run folder holding genotype.json (`enas derive` writes it). A search
        run folder also hands over its data (dataset, data dir, image size,
        channels, classes). Writes RUN/result.json with the last epoch's test
        accuracy (see README "Run folder").

        Several GPUs or machines: `torchrun --nproc-per-node N -m enas train ...`
        (README "Several GPUs and machines").
        """
        import enas

        trained = enas.train(genotype, out, resume=resume_dir, force=force, preset=preset, dataset=dataset,
                             data_dir=data_dir, epochs=epochs, batch_size=batch_size, channels=channels,
                             layers=layers, seed=seed, device=device, config=config_file,
                             overrides=opt.parse_sets(sets))
        if os.environ.get("RANK", "0") != "0":  # under torchrun: process 0 reports
            return
        result = trained.result
        top5 = f", top-5 {result['test_top5']:.4f}" if result.get("test_top5") is not None else ""
        click.echo(f"result: {trained.run_dir / 'result.json'}")
        click.echo(f"final test accuracy (epoch {result['epochs']}): {result['test_acc']:.4f}{top5} "
                   f"({result['params_m']:.2f} M params)")
        click.echo(f"This is one run (seed {result['seed']}); report the mean and spread over several seeds.")
