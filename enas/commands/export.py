"""``enas export``: a thin wrapper of :func:`enas.export` (ONNX / TorchScript of a retrained network)."""
from __future__ import annotations

import click

from enas.commands import options as opt


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("checkpoint")
    @click.option("--format", "fmt", required=True, metavar="onnx|torchscript",
                  help="onnx (opset 18, PyTorch's dynamo exporter; needs the export extra) or torchscript.")
    @opt.option("--out", default=None, metavar="FILE",
                help="Output file (default RUN/model.onnx or RUN/model.torchscript.pt); an existing file "
                     "that enas did not export is refused without --force.")
    @opt.option("--batch-size", type=int, default=1, show_default=True,
                help="Batch of the example input; the exported batch dimension stays dynamic.")
    @opt.force("Overwrite --out even if it is not an earlier enas export.")
    def export(checkpoint, fmt, out, batch_size, force):
        """Export a retrained CHECKPOINT (a .pt file or a train run folder) for inference.

        The file runs without enas: input normalised images (N, C, H, W)
        float32, output logits. It is checked against PyTorch before it is
        written (ONNX: with onnxruntime when installed).
        """
        import enas

        r = enas.export(checkpoint, fmt, out, batch_size=batch_size, force=force)
        what = f"ONNX opset {r['opset']}, {r['exporter']} exporter" if fmt == "onnx" else "TorchScript"
        click.echo(f"{'replaced' if r['replaced'] else 'wrote'} {r['path']} ({what}, {r['bytes'] / 1e6:.1f} MB)")
        dims = ", ".join(str(d) for d in r["input_shape"])
        click.echo(f"input: images float32 ({dims}), normalised per channel with "
                   f"mean {[round(v, 4) for v in r['mean']]} std {[round(v, 4) for v in r['std']]}; "
                   f"output: logits (N, {r['num_classes']})")
        if "max_abs_diff" in r:
            click.echo(f"verified with {r['verified']}: max abs diff {r['max_abs_diff']:.2e} "
                       f"(relative {r['max_rel_diff']:.2e}) at batch sizes {r['verify_batches']}")
        else:
            click.echo(r["verified"])
