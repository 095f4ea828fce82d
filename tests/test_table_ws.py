"""`enas table nb201 --weight-sharing`: real NB201 supernet searches (tiny protocol) scored by a table."""
import json

import pytest
from click.testing import CliRunner

from enas.benchmark.synthetic import write_synthetic
from enas.benchmark.ws_protocols import PROTOCOLS, PUBLISHED_WS, search_args
from enas.cli import cli

METHODS = ("enas", "random", "darts")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ws-table") / "syn.csv"
    write_synthetic(path, 0)
    return path


@pytest.fixture(scope="module")
def ws_run(table_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ws") / "run"
    result = invoke("table", "nb201", "--benchmark", table_file, "--weight-sharing", "--protocol", "tiny",
                    "--seeds", 1, "--methods", "enas,random,darts", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_every_method_runs_a_real_search_and_is_scored(ws_run, table_file):
    out, output = ws_run
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "weight-sharing" and results["protocol"] == "tiny"
    assert results["dataset"] == "digits" and results["report_column"] == "test_acc"
    assert list(results["methods"]) == list(METHODS)
    for method in METHODS:
        m = results["methods"][method]
        run = results["runs"][method][0]
        score = json.loads((out / method / "seed_0" / "benchmark.json").read_text())
        assert m["runs"] == 1 and m["report_std"] == 0.0
        assert m["report_mean"] == pytest.approx(score["derived"]["metrics"]["test_acc"])
        assert run["arch"] == json.loads((out / method / "seed_0" / "genotype.json").read_text())["arch"]
        assert run["rank"] == score["derived"]["rank"] and m["published"] == list(PUBLISHED_WS[method])
        assert run["search_seconds"] > 0 and (out / method / "seed_0.log").is_file()
        config = json.loads((out / method / "seed_0" / "config.json").read_text())
        assert config["strategy"] == method and config["model"]["space"] == "nb201"
        assert config["run"]["seed"] == 0 and config["model"]["channels"] == 4 and config["epochs"] == 1
    assert results["methods"]["darts"]["tau_mean"] is None  # DARTS has no candidates
    assert results["methods"]["enas"]["tau_runs"] == 1
    assert results["runs"]["enas"][0]["tau"] == json.loads(
        (out / "enas" / "seed_0" / "benchmark.json").read_text())["rank_correlation"]["tau"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["weight_sharing"] is True and saved["benchmark"] == str(table_file.resolve())
    for text in ("53.89 +- 0.58", "54.30", "84.07 +- 3.61", "NOT NAS-Bench-201 results", "not comparable"):
        assert text in output


def test_resume_reuses_finished_searches(ws_run):
    out, _ = ws_run
    watched = [out / m / "seed_0" / name for m in METHODS for name in ("genotype.json", "benchmark.json")]
    watched += [out / m / "seed_0.log" for m in METHODS]
    before = {p: p.stat().st_mtime_ns for p in watched}
    result = invoke("table", "nb201", "--resume", out, "--json")
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in watched} == before  # no search launched, nothing rescored
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["mode"] == "weight-sharing" and set(summary["methods"]) == set(METHODS)


def test_resume_scores_a_finished_search_without_its_row(ws_run):
    out, _ = ws_run
    (out / "random" / "seed_0.json").unlink()
    (out / "random" / "seed_0" / "benchmark.json").unlink()
    log = out / "random" / "seed_0.log"
    size = log.stat().st_size
    result = invoke("table", "nb201", "--resume", out)
    assert result.exit_code == 0, result.output
    assert (out / "random" / "seed_0" / "benchmark.json").is_file() and log.stat().st_size == size


@pytest.mark.parametrize("args, expected", [
    (["--budget-queries", "100"], "--budget-queries is a table-mode option"),
    (["--enas-preset", "search", "--set", "enas.lr=0.1"], "--enas-preset, --set are table-mode"),
    (["--methods", "enas,reinforce"], "--methods with --weight-sharing takes enas, random, darts"),
    (["--methods", "enas,enas"], "names a method twice"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--protocol", "bogus"], None),
])
def test_bad_options_are_one_line(table_file, tmp_path, args, expected):
    result = invoke("table", "nb201", "--benchmark", table_file, "--weight-sharing", *args, "--out", tmp_path / "r")
    if expected is None:  # click's choice check
        assert result.exit_code == 2 and "Traceback" not in result.output
    else:
        assert expected in one_error_line(result)
    assert not (tmp_path / "r").exists()


def test_weight_sharing_options_need_the_flag(table_file, tmp_path):
    line = one_error_line(invoke("table", "nb201", "--benchmark", table_file, "--protocol", "cpu",
                                 "--out", tmp_path / "r"))
    assert "--protocol only apply with --weight-sharing" in line and not (tmp_path / "r").exists()


def test_a_failed_search_names_method_seed_and_log(table_file, tmp_path):
    out = tmp_path / "run"
    result = invoke("-q", "table", "nb201", "--benchmark", table_file, "--weight-sharing", "--protocol", "tiny",
                    "--methods", "random", "--dataset", "imagefolder", "--data-dir", tmp_path / "missing",
                    "--out", out)
    line = one_error_line(result)
    log = out / "random" / "seed_0.log"
    assert "the random search of seed 0 failed" in line and str(log) in line and log.is_file()
    assert not (out / "results.json").exists()


def test_resume_refuses_changes_and_other_tables(ws_run, tmp_path):
    out, _ = ws_run
    assert "--seeds cannot be changed" in one_error_line(invoke("table", "nb201", "--resume", out, "--seeds", 2))
    other = tmp_path / "other.csv"
    write_synthetic(other, 1)
    assert "differs from the one this run used" in one_error_line(
        invoke("-q", "table", "nb201", "--resume", out, "--benchmark", other))


def test_evolution_and_bo_are_opt_in_weight_sharing_rows(table_file, tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "run"
    result = invoke("table", "nb201", "--benchmark", table_file, "--weight-sharing", "--protocol", "tiny",
                    "--seeds", 1, "--methods", "evolution,bo", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == ["evolution", "bo"]
    for method in ("evolution", "bo"):
        derive = json.loads((out / method / "seed_0" / "derive.json").read_text())
        assert derive["strategy"] == method and derive["candidates"][0]["source"] == "population"
        assert results["methods"][method]["tau_runs"] == 1 and results["methods"][method]["published"] is None


def test_protocols_are_nb201_searches():
    assert set(PROTOCOLS) == {"full", "cpu", "tiny"}
    assert search_args("full", "darts") == ["--space", "nb201", "--strategy", "darts", "--preset", "paper",
                                            "--order", "1"]
    cpu = search_args("cpu", "enas")
    assert "data.image_size=16" in cpu and "run.threads=2" in cpu and "model.layers=1" in cpu
