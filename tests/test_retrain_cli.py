"""`enas train` / `evaluate` / `show` / `genotypes` end to end on the bundled digits data.

Every run is tiny (C 4, 3 cells, 8x8 digits, 2 epochs of 11 steps) and single-threaded:
the point is the run folder, resume and the error contract, not accuracy.
"""
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import enas.retrain.loop
import enas.retrain.trained
from enas.runs.checkpoint import save_checkpoint
from enas.cli import cli
from shared_model.child import ChildNetwork
from shared_model.genotype import Genotype
from shared_model.profile import count_parameters
from shared_model.zoo import ZOO

TINY = ["--preset", "quick", "--channels", "4", "--layers", "3", "--epochs", "2", "--batch-size", "128",
        "--set", "run.threads=1", "--set", "run.channels_last=off", "--set", "run.checkpoint_every_steps=4",
        "--set", "run.log_every=2"]
STEPS = 2 * (1500 // 128)  # digits has 1500 training images; the last partial batch is dropped
RESULT_FIELDS = {"test_acc", "test_top5", "test_loss", "test_error_pct", "best_test_acc", "best_epoch", "params",
                 "multiply_adds", "input_shape", "epochs", "steps", "genotype", "genotype_source", "dataset",
                 "num_classes", "seed", "note", "checkpoint"}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def rows(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def comparable(run: Path):
    """metrics.jsonl without wall-clock-dependent values."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows(run)]


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("train") / "zoo"
    result = invoke("train", "darts_v2", *TINY, "--out", run)
    assert result.exit_code == 0, result.output
    return run, result


def test_train_zoo_name_writes_the_run_folder(zoo_run):
    run, cli_result = zoo_run
    for name in ("config.json", "log.txt", "metrics.jsonl", "genotype.json", "result.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    result = json.loads((run / "result.json").read_text())
    assert RESULT_FIELDS <= set(result)
    assert str(run / "result.json") in cli_result.output
    assert f"{result['test_acc']:.4f}" in cli_result.output
    assert 0.0 <= result["test_acc"] <= 1.0 and 0.0 <= result["test_top5"] <= 1.0
    assert result["test_top5"] >= result["test_acc"]
    assert result["epochs"] == 2 and result["steps"] == STEPS
    assert result["dataset"] == "digits" and result["num_classes"] == 10
    assert result["genotype"] == ZOO["DARTS_V2"].to_dict() and result["genotype_source"] == "zoo:DARTS_V2"
    assert result["input_shape"] == [1, 8, 8]
    expected = ChildNetwork(ZOO["DARTS_V2"], C=4, layers=3, num_classes=10, in_channels=1, image_size=8)
    assert result["params"] == count_parameters(expected)
    assert result["multiply_adds"] > result["params"]
    assert "seed" in result["note"] and "single" in result["note"]
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "quick" and config["model"]["channels"] == 4
    assert json.loads((run / "genotype.json").read_text()) == ZOO["DARTS_V2"].to_dict()


def test_metrics_and_tensorboard_tags(zoo_run):
    run, _ = zoo_run
    records = rows(run)
    phases = {r["phase"] for r in records}
    assert {"train", "test", "epoch"} <= phases
    train_steps = [r["step"] for r in records if r["phase"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == STEPS
    tests = [r for r in records if r["phase"] == "test"]
    assert [r["epoch"] for r in tests] == [1, 2]
    final = json.loads((run / "result.json").read_text())
    assert tests[-1]["test_acc"] == pytest.approx(final["test_acc"])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"retrain/loss", "retrain/acc", "retrain/lr", "retrain/test_acc", "retrain/test_loss",
            "retrain/drop_path_prob"} <= scalars
    assert {"cells/normal", "cells/reduce"} <= set(events.Tags()["images"])


def test_genotype_file_interrupt_and_resume_matches_uninterrupted(zoo_run, tmp_path, monkeypatch):
    zoo, _ = zoo_run
    geno_file = tmp_path / "arch.json"
    geno_file.write_text(ZOO["DARTS_V2"].to_json())
    run = tmp_path / "file"
    # Killed at step 17; the last checkpoint is at step 15, mid-way through epoch 2.
    original = enas.retrain.loop.run_retrain
    monkeypatch.setattr(enas.retrain.loop, "run_retrain", lambda *a, **kw: original(*a, **dict(kw, stop_after=17)))
    first = invoke("train", geno_file, *TINY, "--out", run)
    assert first.exit_code == 130 and "--resume" in first.output
    assert not (run / "result.json").exists()
    assert max(r["step"] for r in rows(run)) >= 16  # logged after the checkpoint, cut on resume
    monkeypatch.undo()

    refused = invoke("-q", "train", geno_file, "--resume", run)
    assert refused.exit_code == 2 and "GENOTYPE" in refused.output

    second = invoke("train", "--resume", run)
    assert second.exit_code == 0, second.output
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == STEPS and result["genotype_source"] == str(geno_file)
    # Same seed and config as the zoo run: exactly the same records and result.
    assert comparable(run) == comparable(zoo)
    assert result["test_acc"] == json.loads((zoo / "result.json").read_text())["test_acc"]


def test_evaluate_json(zoo_run):
    run, _ = zoo_run
    out = invoke("evaluate", run / "checkpoints" / "last.pt", "--json", "--device", "cpu",
                 "--latency-batch", "8", "--repeats", "2")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    result = json.loads((run / "result.json").read_text())
    assert report["top1"] == pytest.approx(result["test_acc"], abs=1e-6)
    assert report["top5"] == pytest.approx(result["test_top5"], abs=1e-6)
    assert report["test_images"] == 297 and report["epoch"] == 2
    assert report["params"] == result["params"] and report["multiply_adds"] == result["multiply_adds"]
    assert set(report["latency"]) == {"batch_1", "batch_8"}
    for lat in report["latency"].values():
        assert 0 < lat["p10"] <= lat["median_ms"] <= lat["p90"]
    table = invoke("evaluate", run, "--repeats", "1", "--latency-batch", "2")
    assert table.exit_code == 0 and "top-1" in table.stdout and "latency b=2" in table.stdout


def test_evaluate_times_on_the_runs_threads_or_threads_flag(zoo_run):
    run, _ = zoo_run
    before = torch.get_num_threads()
    saved = json.loads((run / "config.json").read_text())["run"]["threads"]
    try:
        report = json.loads(invoke("evaluate", run, "--json", "--repeats", "1", "--latency-batch", "2").stdout)
        assert report["threads"] == (saved or before)
        report = json.loads(invoke("evaluate", run, "--json", "--repeats", "1", "--latency-batch", "2",
                                   "--threads", "2").stdout)
        assert report["threads"] == 2
        table = invoke("evaluate", run, "--repeats", "1", "--latency-batch", "2", "--threads", "1").stdout
        assert "on cpu (1 thread)" in table
    finally:
        torch.set_num_threads(before)


def test_show_darts_v2_json_reports_the_paper_parameter_count():
    out = invoke("show", "DARTS_V2", "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["params"] == 3_349_342 and report["channels"] == 36 and report["layers"] == 20
    assert report["multiply_adds"] > 100_000_000
    first = report["cells"]["normal"]["nodes"][0]["text"]
    assert first == "node 2 = sep_conv_3x3(c_{k-2}) + sep_conv_3x3(c_{k-1})"
    assert report["cells"]["reduce"]["concat"] == [2, 3, 4, 5]


def test_show_text_and_drawings(tmp_path):
    out = invoke("show", "enas_released", "--channels", "4", "--layers", "3", "--image-size", "8",
                 "--out", tmp_path / "cells")
    assert out.exit_code == 0, out.output
    assert "normal cell (5 nodes)" in out.output and "c_{k} = concat(" in out.output
    for cell in ("normal", "reduce"):
        assert (tmp_path / "cells" / f"{cell}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (tmp_path / "cells" / f"{cell}.svg").read_text()


def test_genotypes_lists_the_zoo():
    out = invoke("genotypes", "--json")
    assert out.exit_code == 0
    table = {r["name"]: r for r in json.loads(out.stdout)}
    assert set(table) == set(ZOO)
    assert table["DARTS_V2"]["params"] == 3_349_342
    assert (table["DARTS_V2"]["preset"], table["DARTS_V2"]["channels"], table["DARTS_V2"]["layers"]) == \
        ("darts", 36, 20)
    text = invoke("genotypes").output
    assert "params(C36,L20)" in text and "DARTS_V2           4           3.35 M" in text


def test_genotypes_and_show_count_the_network_of_a_preset(tmp_path):
    # The enas train preset's network: the official ENAS fixed network at C 36, 17 cells,
    # whose released cell has the official count_model_params 3,894,372.
    out = invoke("genotypes", "--preset", "enas", "--json")
    assert out.exit_code == 0, out.output
    table = {r["name"]: r for r in json.loads(out.stdout)}
    assert table["ENAS_RELEASED"]["params"] == 3_894_372
    assert {(r["preset"], r["channels"], r["layers"]) for r in table.values() if r["space"] == "micro"} == \
        {("enas", 36, 17)}
    # A macro network keeps its own depth and the macro fixed network's width.
    assert (table["ENAS_MACRO"]["channels"], table["ENAS_MACRO"]["layers"]) == (96, 24)
    text = invoke("genotypes", "--preset", "enas").output
    assert "params(C36,L17)" in text and "ENAS_RELEASED      5           3.89 M" in text
    shown = json.loads(invoke("show", "ENAS_RELEASED", "--preset", "enas", "--json").stdout)
    assert (shown["params"], shown["preset"], shown["channels"], shown["layers"]) == (3_894_372, "enas", 36, 17)
    assert "enas network at C 36, 17 layers" in invoke("show", "ENAS_RELEASED", "--preset", "enas").output
    # The same builder as `enas train`: a genotype leaving input 0 unread gets the ENAS loose
    # inputs (wider cells) with enas, and flags still override the preset's sizes.
    from enas.config.train import build_train_config
    from enas.retrain.trained import make_child

    cells = [["skip_connect", 1], ["max_pool_3x3", 1], ["avg_pool_3x3", 2], ["skip_connect", 2]]
    unread0 = Genotype(cells, [3], cells, [3])
    (tmp_path / "unread0.json").write_text(unread0.to_json())
    counts = {}
    for preset in ("darts", "enas"):
        cfg = build_train_config(None, {"model.channels": 8, "model.layers": 5}, preset=preset)
        info = {"num_classes": 10, "in_channels": 3, "image_size": 32}
        model = make_child(unread0, cfg, info, inference=True)
        got = json.loads(invoke("show", tmp_path / "unread0.json", "--preset", preset, "--channels", "8",
                                "--layers", "5", "--json").stdout)
        assert got["params"] == count_parameters(model) and got["layers"] == 5, preset
        counts[preset] = model.classifier.in_features
    assert counts == {"darts": 32, "enas": 64}  # enas: input 0 joins every cell's output
    assert invoke("-q", "show", "DARTS_V2", "--preset", "bogus").stderr.strip() == \
        "error: unknown preset 'bogus'; choose from darts, enas, quick, nb201, enas_macro"


def _bad_inputs(tmp: Path, good_ckpt: Path):
    (tmp / "bad.json").write_text("{not json")
    (tmp / "badop.json").write_text(json.dumps(dict(ZOO["DARTS_V2"].to_dict(), normal=[["conv_9x9", 0]] * 8)))
    (tmp / "search_run").mkdir()
    (tmp / "search_run" / "config.json").write_text("{}")
    data = good_ckpt.read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 10)
    torch.save({"weights": torch.zeros(2)}, tmp / "foreign.pt")
    torch.save(torch.nn.Linear(2, 2), tmp / "module.pt")
    save_checkpoint(tmp / "search.pt", "search", {"config": {}})
    t = str(tmp)
    return [
        (["train", f"{t}/bad.json"], "not valid JSON"),
        (["train", f"{t}/badop.json"], "unknown op"),
        (["train", "DARTS_V9"], "unknown genotype"),
        (["show", f"{t}/missing.json"], "not found"),
        (["train", f"{t}/search_run"], "enas derive"),
        (["train", "DARTS_V2", *TINY, "--set", "data.image_size=1", "--out", f"{t}/small"], "too small"),
        (["train", "DARTS_V2", "--set", "preset=bogus"], "unknown preset"),
        (["train", "DARTS_V2", "--preset", "bogus"], "unknown preset"),
        (["train", "DARTS_V2", "--config", t], "config file not found"),
        (["train", "DARTS_V2", "--out", f"{t}/bad.json"], "not a folder"),
        (["show", "DARTS_V2", "--layers", "3", "--out", f"{t}/bad.json"], "cannot write"),
        (["train", "DARTS_V2", "--set", "model.nope=1"], "unknown config key"),
        (["train", "--resume", f"{t}/nothing"], "nothing to resume"),
        (["evaluate", f"{t}/truncated.pt"], "corrupt"),
        (["evaluate", f"{t}/garbage.pt"], "corrupt"),
        (["evaluate", f"{t}/foreign.pt"], "not an enas checkpoint"),
        (["evaluate", f"{t}/module.pt"], "refused"),
        (["evaluate", f"{t}/search.pt"], "search checkpoint"),
        (["evaluate", f"{t}/missing.pt"], "not found"),
        (["evaluate", f"{t}/missing.pt", "--threads", "0"], "--threads must be >= 1"),
        (["show", "DARTS_V2", "--image-size", "2"], "too small"),
    ]


def test_bad_input_is_one_error_line_and_exit_2(zoo_run, tmp_path):
    run, _ = zoo_run
    for args, expected in _bad_inputs(tmp_path, run / "checkpoints" / "last.pt"):
        result = invoke("-q", *args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert expected in lines[0], (args, lines[0])
        assert "Traceback" not in result.output


def test_diverging_run_stops_with_one_error_and_keeps_its_checkpoint(tmp_path):
    run = tmp_path / "nan"
    result = invoke("-q", "train", "DARTS_V2", *TINY, "--out", run, "--set", "optim.lr_max=1e38",
                    "--set", "optim.grad_clip=null", "--set", "run.max_nonfinite=2")
    assert result.exit_code == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 consecutive non-finite steps") and "Traceback" not in result.output
    state, _ = enas.retrain.trained.load_train_checkpoint(run)
    assert state["position"]["step"] == 0  # the start checkpoint, untouched by the bad steps
