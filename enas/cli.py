"""The ``enas`` command line: the only place that configures output.

Every command turns bad input into one line ``error: ...`` on stderr and exit
status 2 (see :class:`enas.errors.UserError`); an interrupted command exits
with status 130 and says how to resume.
"""
from __future__ import annotations

import logging
import sys

import click

from enas.errors import UserError


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("PIL", "matplotlib", "urllib3", "onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class EnasGroup(click.Group):
    """Click group that maps known failures to one clear line and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:
            # One line instead of click's usage block; --help still shows the usage.
            click.echo(f"error: {exc.format_message()} (see '{exc.ctx.command_path if exc.ctx else 'enas'} --help')",
                       err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; the last checkpoint is intact (continue with --resume)", err=True)
            ctx.exit(130)
        except MemoryError:
            click.echo("error: out of memory (RAM); reduce the batch size (--batch-size), channels or "
                       "data.limit", err=True)
            ctx.exit(2)
        except RuntimeError as exc:
            what = memory_error_kind(exc)
            if what is None:
                raise
            click.echo(f"error: out of {what}; reduce the batch size (--batch-size) or channels", err=True)
            ctx.exit(2)


def memory_error_kind(exc: RuntimeError) -> str | None:
    """``"GPU memory"`` for an accelerator allocation failure, ``"memory (RAM)"`` for the CPU
    allocator's (PyTorch raises both as RuntimeError), None for any other error."""
    message = str(exc).lower()
    if type(exc).__name__ == "OutOfMemoryError" or any(
            m in message for m in ("cuda out of memory", "cuda error: out of memory", "hip out of memory",
                                   "mps backend out of memory", "xpu out of memory")):
        return "GPU memory"
    if any(m in message for m in ("defaultcpuallocator", "can't allocate memory", "not enough memory",
                                  "out of memory", "storage size calculation overflowed")):
        return "memory (RAM)"
    return None


@click.group(cls=EnasGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="enas")
def cli(verbose: bool, quiet: bool) -> None:
    """ENAS neural architecture search, with DARTS and random-search baselines.

    Typical flow: `enas search` -> `enas derive` -> `enas train` ->
    `enas evaluate` / `enas export`. Run `enas COMMAND --help` for details.
    """
    configure_logging(verbose, quiet)


def _register() -> None:
    from enas.commands import evaluate, export, genotypes, latency, search, show, table, train

    for module in (search, train, evaluate, show, export, genotypes, table, latency):
        module.register(cli)


_register()


def main() -> None:
    cli(prog_name="enas")


if __name__ == "__main__":
    main()
