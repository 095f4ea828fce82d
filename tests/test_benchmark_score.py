"""`enas table score RUN`: a weight-sharing nb201 search run looked up in a benchmark table."""
import hashlib
import itertools
import json
import math
import shutil

import numpy as np
import pytest
from cli_helpers import error_line, run

from enas.benchmark.score import format_score, kendall_tau, score_run
from enas.benchmark.synthetic import COLUMN_ORDER, synthetic_columns
from enas.benchmark.table import read_table, write_table
from shared_model.nb201_arch import NB201Arch

N_CELLS = 60  # a partial table: the run's cells, the optimum and a few more



@pytest.fixture(scope="module")
def synthetic():
    archs, columns = synthetic_columns(0)
    best = int(np.argmax(columns["test_acc"]))
    picked = sorted({best, *range(0, 15625, 15625 // N_CELLS)})[:N_CELLS]
    return [archs[i] for i in picked], {c: columns[c][picked] for c in COLUMN_ORDER}


@pytest.fixture()
def table_file(tmp_path, synthetic):
    archs, columns = synthetic
    return write_table(tmp_path / "partial.csv", archs, columns)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


#: Search-time accuracies of the five derive candidates (the last one NaN: left out of tau).
SEARCH_ACCS = [61.0, 70.5, 55.25, 70.5, float("nan")]


def make_run(root, archs, candidates=True, derived=True):
    """A hand-built nb201 search run folder over table cells ``archs`` (3 epochs, 5 candidates)."""
    run_dir = root / "run"
    for e in range(3):
        payload = {"arch": archs[e].to_string(), "space": "nb201"} if e != 1 else json.dumps(archs[e].to_string())
        write(run_dir / "genotypes" / f"epoch_{e + 1:03d}.json", payload)
    write(run_dir / "genotypes" / ".epoch_004.json.123.tmp", "half a file")  # ignored
    write(run_dir / "config.json", {"strategy": "enas", "model": {"space": "nb201"}})
    if derived:
        write(run_dir / "genotype.json", {"arch": archs[3].to_string()})
    details = {"strategy": "enas", "best_valid_acc": 70.5, "best_source": "sample"}
    if candidates:
        details["candidates"] = [
            {"source": "greedy" if k == 0 else "sample", "valid_acc": acc,
             "genotype": archs[3 + k].to_string() if k == 2 else {"arch": archs[3 + k].to_string()}}
            for k, acc in enumerate(SEARCH_ACCS)]
    write(run_dir / "derive.json", json.dumps(details, indent=1))  # NaN as json.dumps writes it
    return run_dir


def naive_tau_b(x, y):
    """Kendall's tau-b by the textbook pair count."""
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        s = (x[i] - x[j]) * (y[i] - y[j])
        c += s > 0
        d += s < 0
        tx += x[i] == x[j]
        ty += y[i] == y[j]
    pairs = len(x) * (len(x) - 1) // 2
    return (c - d) / math.sqrt((pairs - tx) * (pairs - ty))


def test_kendall_tau_against_hand_counts():
    # 6 pairs, one swapped: (5 - 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # Ties: 4 concordant, 0 discordant, one tie in each: 4 / sqrt(5 * 5).
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1.0], [2.0]) is None and kendall_tau([1, 1, 1], [1, 2, 3]) is None
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 30).astype(float)
    assert kendall_tau(x, y) == pytest.approx(naive_tau_b(list(x), list(y)))


def test_score_run_writes_benchmark_json(tmp_path, table_file, synthetic):
    archs, columns = synthetic
    table = read_table(table_file)
    run_dir = make_run(tmp_path, archs)
    result = score_run(run_dir, table, "test_acc")
    saved = json.loads((run_dir / "benchmark.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["benchmark"]["sha256"] == hashlib.sha256(table_file.read_bytes()).hexdigest()
    assert saved["benchmark"]["path"] == str(table_file.resolve()) and saved["benchmark"]["cells"] == N_CELLS
    assert saved["column"] == "test_acc"
    top = int(np.argmax(columns["test_acc"]))
    assert saved["table_best"] == {"arch": archs[top].to_string(), "test_acc": table.value(archs[top], "test_acc")}
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2, 3]
    for e, row in zip(range(3), saved["epochs"]):
        assert row["arch"] == archs[e].to_string()
        assert row["metrics"] == table.row(archs[e]) and set(row["metrics"]) == set(COLUMN_ORDER)
        assert row["rank"] == table.rank(archs[e], "test_acc")
    derived = saved["derived"]
    assert derived["arch"] == archs[3].to_string() and derived["metrics"] == table.row(archs[3])
    assert derived["best_valid_acc"] == 70.5 and derived["best_source"] == "sample"
    assert derived["regret"] == pytest.approx(saved["table_best"]["test_acc"] - derived["metrics"]["test_acc"])
    cands = saved["candidates"]
    assert [c["arch"] for c in cands] == [a.to_string() for a in archs[3:8]]
    assert [c["search_valid_acc"] for c in cands] == SEARCH_ACCS[:4] + [None]
    assert all(c["metrics"] == table.row(a) for c, a in zip(cands, archs[3:8]))
    corr = saved["rank_correlation"]
    expected = naive_tau_b(SEARCH_ACCS[:4], [table.value(a, "test_acc") for a in archs[3:7]])
    assert corr["n"] == 4 and corr["tau"] == pytest.approx(expected) and corr["table"] == "test_acc"
    assert set(corr["by_source"]) == {"greedy", "sample"} and corr["by_source"]["greedy"] == {"n": 1, "tau": None}
    # TensorBoard: one event file of the scoring, replaced (not duplicated) by the next one.
    events = list((run_dir / "tb").glob("events.out.tfevents.*.benchmark"))
    assert len(events) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    curve = acc.Scalars("benchmark/epoch_best_test_acc")
    assert [s.step for s in curve] == [1, 2, 3]
    assert [s.value for s in curve] == pytest.approx([table.value(a, "test_acc") for a in archs[:3]], abs=1e-4)
    assert [s.step for s in acc.Scalars("benchmark/derived_test_acc")] == [3]
    score_run(run_dir, table, "valid_acc")
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*.benchmark"))) == 1
    assert json.loads((run_dir / "benchmark.json").read_text())["column"] == "valid_acc"
    assert "regret" in format_score(result) and "1:" in format_score(result)


def test_epochs_only_and_darts_style_runs(tmp_path, table_file, synthetic):
    archs, _ = synthetic
    table = read_table(table_file)
    result = score_run(make_run(tmp_path / "a", archs, derived=False), table, write=False, tensorboard=False)
    assert result["derived"] is None and len(result["epochs"]) == 3
    assert "none yet" in format_score(result)
    assert not (tmp_path / "a" / "run" / "benchmark.json").exists() and not (tmp_path / "a" / "run" / "tb").exists()
    darts = score_run(make_run(tmp_path / "b", archs, candidates=False), table, tensorboard=False)
    assert darts["candidates"] is None and darts["rank_correlation"] is None
    assert darts["derived"]["best_valid_acc"] == 70.5


def test_cli_prints_a_summary(tmp_path, table_file, synthetic):
    archs, _ = synthetic
    run_dir = make_run(tmp_path, archs)
    result = run("table", "score", run_dir, "--benchmark", table_file)
    assert result.exit_code == 0, result.output
    assert archs[3].to_string() in result.output and "best in table" in result.output
    assert "Kendall tau" in result.output and "1:" in result.output and "3:" in result.output
    assert f"wrote {run_dir / 'benchmark.json'}" in result.output
    as_json = run("table", "score", run_dir, "--benchmark", table_file, "--json", "--column", "valid_acc")
    assert as_json.exit_code == 0 and json.loads(as_json.output.strip().splitlines()[-1])["column"] == "valid_acc"


def _darts_genotype(run_dir):
    write(run_dir / "genotypes" / "epoch_002.json", {"normal": [["sep_conv_3x3", 0]], "normal_concat": [2]})


def _missing_cell(run_dir):
    absent = NB201Arch.from_actions([4, 4, 4, 4, 4, 3])
    write(run_dir / "genotype.json", {"arch": absent.to_string()})


def _bad_candidate(run_dir):
    write(run_dir / "derive.json", {"best_valid_acc": 1.0, "candidates": [{"valid_acc": 1.0}]})


@pytest.mark.parametrize("damage, args, expected", [
    (None, ["--run", "absent"], "run folder not found"),
    (lambda d: shutil.rmtree(d / "genotypes"), [], "has no genotypes/epoch_NNN.json"),
    (_darts_genotype, [], "epoch_002.json is not an NB201 architecture"),
    (lambda d: write(d / "genotype.json", "|nor_conv_3x3~0|+|bogus~0|"), [], "is not an nb201 search"),
    (lambda d: write(d / "config.json", {"model": {"space": "darts"}}), [], "search on the 'darts' space"),
    (_missing_cell, [], "is not in benchmark table"),
    (_bad_candidate, [], "candidate 0 has no 'genotype'"),
    (lambda d: write(d / "derive.json", "{broken"), [], "derive.json is not valid JSON"),
    (None, ["--benchmark", "absent.csv"], "benchmark table not found"),
    (None, ["--bad-table"], "not a number"),
    (None, ["--column", "nope"], "no column 'nope'"),
])
def test_bad_input_is_one_line(tmp_path, table_file, synthetic, damage, args, expected):
    archs, _ = synthetic
    run_dir = make_run(tmp_path, archs)
    if damage is not None:
        damage(run_dir)
    bench = table_file
    if args and args[0] == "--run":
        run_dir, args = tmp_path / args[1], []
    elif args == ["--bad-table"]:
        bench, args = tmp_path / "bad.csv", []
        bench.write_text(f"arch,test_acc\n{archs[0].to_string()},high\n")
    elif args and args[0] == "--benchmark":
        bench, args = tmp_path / args[1], []
    line = error_line(run("table", "score", run_dir, "--benchmark", bench, *args))
    assert expected in line, line
    assert not (run_dir / "benchmark.json").exists()
