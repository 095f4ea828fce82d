"""The reproduction launcher and the results table."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_reproduce_dry_run_prints_search_then_trainings(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce.py"), "darts_2nd", "--dry-run",
                          "--seeds", "0", "1", "--root", str(tmp_path)], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert "search --strategy darts --order 2" in lines[0]
    assert len(lines) == 3 and all("train" in l and "--preset darts" in l for l in lines[1:])


def test_collect_results_table(tmp_path):
    row = tmp_path / "darts_1st"
    for seed, acc in [(0, 0.97), (1, 0.968)]:
        d = row / f"train-darts-seed{seed}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"test_acc": acc, "params": 3_300_000}))
    (row / "search-seed0").mkdir()
    (row / "search-seed0" / "derive.json").write_text(json.dumps({"search_hours": 12.0}))
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "collect_results.py"), str(tmp_path), "--json"],
                         capture_output=True, text=True, check=True)
    (r,) = json.loads(out.stdout)
    assert r["runs"] == 2 and abs(r["test_error_mean"] - 3.1) < 1e-9 and abs(r["search_gpu_days"] - 0.5) < 1e-9
    table = subprocess.run([sys.executable, str(REPO / "scripts" / "collect_results.py"), str(tmp_path)],
                           capture_output=True, text=True, check=True).stdout
    assert "| darts_1st | 2 | 3.10 +- 0.14 | 3.30 | 0.500 |" in table


def test_reproduce_macro_rows_search_24_layers_and_train_the_macro_preset(tmp_path):
    for row, extra in (("enas_macro", ""), ("enas_macro_wide", " --channels 128")):
        out = subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce.py"), row, "--dry-run",
                              "--root", str(tmp_path)], capture_output=True, text=True, check=True)
        search, train = out.stdout.strip().splitlines()
        assert "search --strategy enas --space macro --set model.layers=24" in search
        assert f"--preset enas_macro --seed 0{extra} " in train
    sys.path.insert(0, str(REPO / "scripts"))
    from collect_results import PAPER

    assert PAPER["enas_macro"].startswith("4.23") and PAPER["enas_macro_wide"].startswith("3.87")
