"""The ``enas`` command line: the only place that configures output.

Every command turns bad input into one line ``error: ...`` on stderr and exit
status 2 (see :class:`enas.errors.UserError`); an interrupted command exits
with status 130 and says how to resume. Under ``torchrun`` (README "Several GPUs
and machines") process 0 prints what every process meets, and the others only
what they alone meet.
"""
from __future__ import annotations

import logging
import os
import sys

import click

from enas.errors import UserError


#: This process's rank under torchrun (0 otherwise), and whether torchrun started several.
RANK = int(os.environ.get("RANK", "0") or 0)
SEVERAL = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
#: The commands that run under torchrun; the others work on files in one process.
DISTRIBUTED_COMMANDS = ("search", "train")


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if RANK > 0:
        level = max(level, logging.WARNING)  # process 0 tells the story; the others only warn
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[process {RANK}] %(message)s" if SEVERAL else "%(message)s"))
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
            # Process 0 prints an error all processes met (the same on each); a process prints
            # its own when it alone met it (``report``).
            if getattr(exc, "report", RANK == 0):
                click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:
            # One line instead of click's usage block; --help still shows the usage.
            if RANK == 0:  # the same on every process of a torchrun job
                click.echo(f"error: {exc.format_message()} "
                           f"(see '{exc.ctx.command_path if exc.ctx else 'enas'} --help')", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            if RANK == 0:
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
            where = f"process {RANK}: " if SEVERAL else ""
            click.echo(f"error: {where}out of {what}; reduce the batch size (--batch-size) or channels", err=True)
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
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """ENAS neural architecture search, with DARTS and random-search baselines.

    Typical flow: `enas search` -> `enas derive` -> `enas train` ->
    `enas evaluate` / `enas export`. Run `enas COMMAND --help` for details.
    """
    configure_logging(verbose, quiet)
    if SEVERAL and ctx.invoked_subcommand not in DISTRIBUTED_COMMANDS:
        raise UserError(f"enas {ctx.invoked_subcommand} runs in one process; torchrun is for "
                        f"{' and '.join(f'enas {c}' for c in DISTRIBUTED_COMMANDS)}")


def _register() -> None:
    from enas.commands import evaluate, export, genotypes, latency, search, show, table, train

    for module in (search, train, evaluate, show, export, genotypes, table, latency):
        module.register(cli)


_register()


def main() -> None:
    if not SEVERAL:
        cli(prog_name="enas")
        return
    code = 1
    try:
        cli(prog_name="enas")
        code = 0
    except SystemExit as exc:  # click's exit status
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException:  # noqa: BLE001 - a bug: its traceback, then the worker's exit below
        import traceback

        traceback.print_exc()
    from enas.distributed import exit_worker

    exit_worker(code)  # a torchrun worker skips interpreter shutdown: see exit_worker


if __name__ == "__main__":
    main()
