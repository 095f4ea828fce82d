"""`enas table synthetic | nb201 | import-nats` end to end, bad input as one line, the NATS importer."""
import json
import sys

import pytest
from cli_helpers import error_line, run

from enas.benchmark.nats_import import import_nats, nats_columns
from enas.benchmark.table import read_table
from enas.errors import UserError

FAST = ["--set", "tensorboard=false"]


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "syn.csv"
    result = run("table", "synthetic", "--out", path, "--seed", 0)
    assert result.exit_code == 0 and "15625 cells" in result.output
    return path


def test_nb201_runs_every_method_and_prints_the_published_figures(tmp_path, table_file):
    out = tmp_path / "run"
    result = run("table", "nb201", "--benchmark", table_file, "--seeds", 2, "--budget-queries", 12,
                 "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert "93.70 +- 0.36" in result.output and "93.85 +- 0.37" in result.output and "not comparable" in result.output
    for method in ("random", "reinforce", "enas"):
        assert f"\n{method} " in "\n" + result.output
        for seed in (0, 1):
            d = out / method / f"seed_{seed}"
            assert (d / "metrics.jsonl").is_file() and (d / "checkpoints" / "last.pt").is_file()
            assert json.loads((d / "result.json").read_text())["queries"] == 12
    config = json.loads((out / "config.json").read_text())
    assert config["budget"] == {"queries": 12, "seconds": None} and len(config["benchmark_sha256"]) == 64
    summary = json.loads((out / "results.json").read_text())
    assert summary["methods"]["random"]["runs"] == 2 and summary["methods"]["reinforce"]["published"] == [93.85, 0.37]
    # Resuming a finished run reads it back and prints the same figures.
    again = run("table", "nb201", "--resume", out, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output.strip().splitlines()[-1])["methods"] == summary["methods"]
    assert "already holds a run" in error_line(run("table", "nb201", "--benchmark", table_file, "--out", out))


def test_nb201_time_budget_and_resume_of_an_interrupted_run(tmp_path, table_file):
    out = tmp_path / "run"
    args = ["table", "nb201", "--benchmark", table_file, "--seeds", 1, "--methods", "enas", "--budget-seconds", 900,
            "--set", "checkpoint_every=3", *FAST]
    assert run(*args, "--out", out).exit_code == 0
    whole = json.loads((out / "enas" / "seed_0" / "result.json").read_text())
    assert whole["seconds"] <= 900 and whole["queries"] >= 3
    (out / "enas" / "seed_0" / "result.json").unlink()  # as if killed after the last checkpoint
    (out / "results.json").unlink()
    assert run("table", "nb201", "--resume", out).exit_code == 0
    assert json.loads((out / "enas" / "seed_0" / "result.json").read_text()) == whole


@pytest.mark.parametrize("args, expected", [
    (["--benchmark", "absent.csv"], "benchmark table not found"),
    (["--seeds", 1], "--benchmark FILE is required"),
    (["--budget-queries", 5, "--budget-seconds", 10], "exclude each other"),
    (["--methods", "random,amoeba"], "unknown method 'amoeba'"),
    (["--set", "enas.nope=1"], "unknown config key 'enas.nope'"),
    (["--set", "budget.queries=0"], "budget.queries"),
    (["--set", "columns.reward=nope"], "no column 'nope'"),
    (["--seeds", 0], "config key 'seeds'"),
])
def test_nb201_bad_input_is_one_line(tmp_path, table_file, args, expected):
    if "--benchmark" not in args and expected != "--benchmark FILE is required":
        args = ["--benchmark", table_file, *args]
    result = run("table", "nb201", *args, "--out", tmp_path / "o", *FAST)
    assert expected in error_line(result)


def test_resume_with_another_table_is_refused(tmp_path, table_file):
    out = tmp_path / "run"
    assert run("table", "nb201", "--benchmark", table_file, "--seeds", 1, "--methods", "random",
               "--budget-queries", 3, "--out", out, *FAST).exit_code == 0
    other = tmp_path / "other.csv"
    lines = table_file.read_text().splitlines()
    other.write_text("\n".join(lines[:-1]) + "\n")
    assert "differs from the one this run used" in error_line(run("table", "nb201", "--resume", out,
                                                                  "--benchmark", other))
    assert "cannot be changed when resuming" in error_line(run("table", "nb201", "--resume", out, "--seeds", 3))
    assert "nothing to resume" in error_line(run("table", "nb201", "--resume", tmp_path / "none"))


def test_synthetic_refuses_to_overwrite(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("keep")
    assert "already exists" in error_line(run("table", "synthetic", "--out", path))
    assert path.read_text() == "keep"


class FakeNats:
    """The slice of the nats_bench topology API the importer uses."""

    ARCHS = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
             "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"]

    def __init__(self, archs=None):
        self.archs = archs or self.ARCHS
        self.calls = []

    def __len__(self):
        return len(self.archs)

    def arch(self, i):
        return self.archs[i]

    def get_more_info(self, i, dataset, iepoch=None, hp="12", is_random=True):
        self.calls.append((i, dataset, hp, is_random))
        base = 90.0 - 30 * i
        info = {"train-per-time": 10.0 + i, "train-all-time": (10.0 + i) * int(hp), "valid-per-time": 2.0}
        if dataset == "cifar10-valid":
            info["valid-accuracy"] = base - (8 if hp == "12" else 0)
        else:
            info["test-accuracy"] = base + 4
        return info


def test_importer_reads_the_nb201_protocol_columns(tmp_path):
    api = FakeNats()
    path = import_nats("unused", "cifar10", tmp_path / "nb201.csv", api=api)
    table = read_table(path)
    (best, skip) = table.archs
    assert table.row(best) == {"valid_acc_epoch12": 82.0, "valid_acc": 90.0, "test_acc": 94.0,
                               "train_time_s": 122.0, "epoch_time_s": 10.0}
    assert table.value(skip, "train_time_s") == 11 * 12 + 2.0
    assert {c[1:] for c in api.calls} == {("cifar10-valid", "12", False), ("cifar10-valid", "200", False),
                                          ("cifar10", "200", False)}
    archs, _ = nats_columns(FakeNats(), "cifar10", limit=1)
    assert len(archs) == 1


def test_importer_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="cell 1: .*unknown op"):
        nats_columns(FakeNats([FakeNats.ARCHS[0], "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"]), "cifar10")
    with pytest.raises(UserError, match="unknown NATS-Bench dataset"):
        nats_columns(FakeNats(), "mnist")
    src = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    src.mkdir()
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # not installed
    result = run("table", "import-nats", "--source", src, "--out", tmp_path / "x.csv")
    assert "pip install 'enas[nats]'" in error_line(result)
    assert "not found" in error_line(run("table", "import-nats", "--source", tmp_path / "nope", "--out", tmp_path / "y.csv"))
    assert not (tmp_path / "x.csv").exists()


def test_help_texts_state_the_formats_and_the_trust_rule():
    text = run("table", "import-nats", "--help").output
    assert "pickles" in text and "official" in text and "enas[nats]" in text
    text = run("table", "nb201", "--help").output
    for flag in ("--benchmark", "--seeds", "--budget-queries", "--budget-seconds", "--methods", "--resume"):
        assert flag in text
    assert "test_acc" in run("table", "--help").output


def test_bench_table_script_prints_json():
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_table.py"
    out = subprocess.run([sys.executable, str(script), "--seeds", "2", "--queries", "3", "6", "--seconds", "400",
                          "--methods", "random", "enas", "evolution"], capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert set(data["methods"]) == {"random", "enas", "evolution"}
    assert set(data["versus_random"]) == {"enas", "evolution"}
    assert set(data["versus_random"]["evolution"]) == {"3", "6", "400s"}
    row = data["methods"]["random"]["budgets"]["6"]
    assert {"test_acc_mean", "test_acc_std", "regret_mean", "rank_mean", "queries_mean"} <= set(row)
    assert row["queries_mean"] == 6 and 1 <= data["methods"]["evolution"]["budgets"]["400s"]["queries_mean"] < 10
