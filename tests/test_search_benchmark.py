"""`enas search --benchmark FILE`: an nb201 search scored against a benchmark table at its end."""
import json

from click.testing import CliRunner

from enas.benchmark.synthetic import write_synthetic
from enas.cli import cli
from test_nb201_cli import SEARCH


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def table_file(tmp_path):
    path = tmp_path / "table.csv"
    return write_synthetic(path, seed=0)


def test_search_scores_its_cells_and_resume_keeps_the_table(tmp_path):
    table, out = table_file(tmp_path), tmp_path / "run"
    result = invoke("search", *SEARCH, "--strategy", "enas", "--benchmark", table, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Kendall tau" in result.output
    scored = json.loads((out / "benchmark.json").read_text())
    derived = json.loads((out / "genotype.json").read_text())["arch"]
    assert scored["derived"]["arch"] == derived
    assert len(scored["epochs"]) == 1 and scored["candidates"]
    assert json.loads((out / "config.json").read_text())["benchmark"] == str(table.resolve())
    (out / "benchmark.json").unlink()
    again = invoke("derive", out)  # the saved config keeps the table
    assert again.exit_code == 0, again.output
    assert (out / "benchmark.json").is_file()


def test_benchmark_needs_the_nb201_space_and_a_good_table(tmp_path):
    table = table_file(tmp_path)
    result = invoke("search", "--preset", "quick", "--space", "micro", "--benchmark", table,
                    "--out", tmp_path / "micro")
    assert result.exit_code == 2 and "use --space nb201" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "micro").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("arch,test_acc\nnot-an-arch,1\n")
    result = invoke("search", *SEARCH, "--benchmark", bad, "--out", tmp_path / "bad")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
