"""`enas search` and `enas derive` end to end through the CLI on tiny settings."""
import json

import pytest
import torch
from click.testing import CliRunner

from enas.cli import cli

TINY = ["--preset", "quick", "--epochs", "2", "--batch-size", "32", "--seed", "1",
        "--set", "model.channels=4", "--set", "model.layers=3",
        "--set", "controller.updates_per_epoch=2", "--set", "controller.samples_per_update=2",
        "--set", "derive.samples=3"]


def run(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def error_line(result):
    lines = [l for l in result.output.strip().splitlines() if l.strip()]
    assert lines and lines[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[-1]


try:
    import optuna  # noqa: F401
except ImportError:
    optuna = None
PROPOSER_SETS = ["--set", "evolution.population=3", "--set", "evolution.sample=2", "--set",
                 "evolution.cycles_per_epoch=4", "--set", "bo.population=3", "--set", "bo.trials_per_epoch=4",
                 "--set", "bo.startup_trials=2"]


@pytest.mark.parametrize("strategy", ["enas", "random", "darts", "evolution", pytest.param(
    "bo", marks=pytest.mark.skipif(optuna is None, reason="needs optuna (pip install 'enas[bo]')"))])
def test_search_then_derive_writes_the_documented_files(tmp_path, strategy):
    out = tmp_path / strategy
    # DARTS runs every op of every edge: 4 px images keep it as fast as the sampled strategies.
    extra = ["--set", "data.image_size=4", "--set", "darts.train_portion=0.2"] if strategy == "darts" else []
    extra += PROPOSER_SETS if strategy in ("evolution", "bo") else []
    result = run("search", *TINY, *extra, "--strategy", strategy, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "derived genotype:" in result.output and "not a result" in result.output
    for name in ["config.json", "log.txt", "metrics.jsonl", "genotype.json", "derive.json",
                 "checkpoints/last.pt", "checkpoints/best.pt", "genotypes/epoch_001.json",
                 "genotypes/epoch_002.json"]:
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    config = json.loads((out / "config.json").read_text())
    assert config["strategy"] == strategy and config["epochs"] == 2
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    phases = {r["phase"] for r in rows}
    assert {"train", "epoch", "derived"} <= phases
    train_rows = [r for r in rows if r["phase"] == "train"]
    assert all({"loss", "acc", "lr", "step"} <= set(r) for r in train_rows)
    steps = [r["step"] for r in train_rows]
    assert steps == sorted(steps) and steps[-1] > 0
    genotype = json.loads((out / "genotype.json").read_text())
    assert list(genotype) == ["normal", "normal_concat", "reduce", "reduce_concat"]
    details = json.loads((out / "derive.json").read_text())
    assert details["strategy"] == strategy
    if strategy == "enas":
        assert {"controller"} <= phases
        assert {"reward", "baseline", "entropy", "loss"} <= set(next(r for r in rows if r["phase"] == "controller"))
        assert len(details["candidates"]) == 4 and details["candidates"][0]["source"] == "greedy"
    if strategy == "darts":
        assert "none" not in {op for op, _ in genotype["normal"] + genotype["reduce"]}
    if strategy in ("evolution", "bo"):
        search_rows = [r for r in rows if r["phase"] == strategy]
        assert len(search_rows) == 8  # 4 proposals per epoch
        assert {"reward", "best_reward", "diversity", "unique", "population_best"} <= set(search_rows[0])
        best = [r["best_reward"] for r in search_rows]
        assert best == sorted(best) and best[-1] == max(r["reward"] for r in search_rows)
        assert "minibatch" in details["selection"] and details["proposals"] == 8
        sources = [c["source"] for c in details["candidates"]]
        assert sources[:3] == ["population"] * 3 and set(sources) <= {"population", "hall_of_fame"}
        assert details["best_valid_acc"] == max(c["valid_acc"] for c in details["candidates"])
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"]["stage"] == "done"
    if strategy == "darts":
        assert any("alpha_normal" in k for k in json.dumps(list(state["strategy"].keys())).split())  or \
            "arch" in state["strategy"]
    before = (out / "checkpoints" / "last.pt").read_bytes()
    searched = [(out / name).read_text() for name in ("genotype.json", "derive.json")]
    result = run("derive", str(out))  # replays the search's own derive: same draws, same scores
    assert result.exit_code == 0, result.output
    again = [(out / name).read_text() for name in ("genotype.json", "derive.json")]
    assert again[0] == searched[0]
    drop_hours = [{k: v for k, v in json.loads(text).items() if k != "search_hours"} for text in (searched[1], again[1])]
    assert drop_hours[0] == drop_hours[1]
    result = run("derive", str(out), "--samples", "2")
    assert result.exit_code == 0, result.output
    assert (out / "checkpoints" / "last.pt").read_bytes() == before  # derive never rewrites checkpoints
    json.loads((out / "genotype.json").read_text())


def test_resume_continues_the_step_count(tmp_path):
    from enas.search.build import build_search
    from enas.search.driver import SearchDriver
    from enas.config.search import build_search_config

    out = tmp_path / "run"
    flags = {"epochs": 2, "data.batch_size": 32, "model.channels": 4, "model.layers": 3,
             "controller.updates_per_epoch": 2, "controller.samples_per_update": 2, "derive.samples": 3,
             "run.checkpoint_every_steps": 5}
    cfg = build_search_config("enas", "quick", None, flags)
    out.mkdir()
    from enas.config.lib import save_config

    save_config(cfg, out / "config.json")
    driver = SearchDriver(cfg, build_search(cfg, torch.device("cpu")), out, stop_after=12)
    with pytest.raises(KeyboardInterrupt):
        driver.run(tensorboard=False)
    saved_step = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["position"]["step"]
    assert saved_step == 10
    result = run("search", "--resume", str(out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["phase"] == "train"]
    assert steps == sorted(set(steps)), "steps repeat or go back after resume"
    assert steps[-1] == 2 * 37  # 1200 search-train digits / 32 = 37 steps per epoch


def test_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    assert run("search", *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
    before = (out / "genotype.json").read_text()
    result = run("search", *TINY, "--out", str(out))
    assert result.exit_code == 2
    assert "already holds a run" in error_line(result)
    assert (out / "genotype.json").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["--dataset", "imagenet22k"], "unknown dataset"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent/data"], "/nonexistent/data"),
    (["--set", "data.image_size=2"], "too small"),
    (["--set", "model.layerz=3"], "unknown config key 'model.layerz'"),
    (["--set", "model.layers=2"], "model.layers must be >= 3"),
    (["--batch-size", "5000"], "batch"),
    (["--device", "cuda:7"], "cuda"),
])
def test_bad_input_gives_one_error_line_and_status_2(tmp_path, args, message):
    if args[:2] == ["--device", "cuda:7"] and torch.cuda.device_count() > 7:
        pytest.skip("machine has 8 GPUs")
    out = tmp_path / "run"
    result = run("search", *TINY, *args, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert message in error_line(result)
    assert not (out / "checkpoints").exists()


def test_malformed_config_file_and_resume_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [")
    result = run("search", "--config", str(bad), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "malformed" in error_line(result)
    result = run("search", "--resume", str(tmp_path / "nothing"))
    assert result.exit_code == 2 and "nothing to resume" in error_line(result)
    result = run("derive", str(tmp_path))
    assert result.exit_code == 2 and "not a search run folder" in error_line(result)
    (tmp_path / "fake" / "checkpoints").mkdir(parents=True)
    (tmp_path / "fake" / "checkpoints" / "last.pt").write_bytes(b"\x00garbage")
    result = run("search", "--resume", str(tmp_path / "fake"))
    assert result.exit_code == 2 and "corrupt" in error_line(result)
    result = run("search", "--resume", str(tmp_path / "fake"), "--epochs", "3")
    assert result.exit_code == 2 and "cannot be changed when resuming" in error_line(result)
