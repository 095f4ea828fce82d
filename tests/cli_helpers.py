"""Shared helpers of the CLI tests: invoke the click app, check a one-line usage error."""
from click.testing import CliRunner

from enas.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def error_line(result):
    """The single ``error: ...`` line of a refused command (exit status 2, no traceback)."""
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.strip().splitlines() if l.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
    assert sum(l.startswith("error") for l in lines) == 1, result.output
    return lines[-1]
