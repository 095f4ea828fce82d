"""`--space macro` end to end through the CLI: search (ENAS, random), derive, train, show, evaluate, export.

Tiny settings (digits' 8 px images, 3 layers of 4 channels, one epoch) keep each step a few seconds.
"""
import json

import pytest
import torch

from cli_helpers import error_line, run
from shared_model.macro_arch import MacroArch
from shared_model.zoo import ENAS_MACRO_ARC

SEARCH = ["--preset", "quick", "--space", "macro", "--epochs", "1", "--batch-size", "32", "--seed", "1",
          "--set", "model.channels=4", "--set", "model.layers=3", "--set", "run.channels_last=off",
          "--set", "controller.updates_per_epoch=2", "--set", "controller.samples_per_update=2",
          "--set", "derive.samples=3"]
TRAIN = ["--preset", "quick", "--channels", "4", "--epochs", "1", "--batch-size", "128",
         "--set", "run.channels_last=off"]


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("macro") / "search"
    result = run("search", *SEARCH, "--strategy", "enas", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_enas_search_writes_a_macro_arch_and_logs_the_skip_penalty(search_run):
    data = json.loads((search_run / "genotype.json").read_text())
    assert list(data) == ["ops", "skips"] and MacroArch.from_dict(data).num_layers == 3
    config = json.loads((search_run / "config.json").read_text())
    assert config["model"]["space"] == "macro" and config["model"]["layers"] == 3
    assert (config["controller"]["skip_target"], config["controller"]["skip_weight"]) == (0.4, 0.8)
    rows = [json.loads(line) for line in (search_run / "metrics.jsonl").read_text().splitlines()]
    controller = [r for r in rows if r["phase"] == "controller"]
    assert len(controller) == 2
    for r in controller:
        assert r["skip_penalty"] == pytest.approx(0.8 * r["skip_kl"], rel=1e-5) and 0 <= r["skip_rate"] <= 1
    details = json.loads((search_run / "derive.json").read_text())
    assert details["candidates"][0]["source"] == "greedy" and len(details["candidates"]) == 4
    # enas derive re-derives from the last checkpoint with the same space.
    result = run("derive", search_run, "--samples", "2")
    assert result.exit_code == 0, result.output
    assert len(json.loads((search_run / "derive.json").read_text())["candidates"]) == 3


def test_random_search_on_macro(tmp_path):
    out = tmp_path / "random"
    result = run("search", *SEARCH, "--strategy", "random", "--set", "derive.top_k=1", "--out", out)
    assert result.exit_code == 0, result.output
    MacroArch.from_dict(json.loads((out / "genotype.json").read_text()))
    assert json.loads((out / "config.json").read_text())["strategy"] == "random"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_train_show_evaluate_export_from_the_search_run(search_run, tmp_path):
    train = tmp_path / "train"
    result = run("train", search_run, *TRAIN, "--out", train)
    assert result.exit_code == 0, result.output
    res = json.loads((train / "result.json").read_text())
    assert res["layers"] == 3 and res["preset"] == "quick" and res["genotype"] == \
        json.loads((search_run / "genotype.json").read_text())
    config = json.loads((train / "config.json").read_text())["model"]
    assert (config["space"], config["layers"], config["auxiliary"], config["sep_as_conv"]) == ("macro", 3, False, True)
    evaluated = json.loads(run("evaluate", train, "--json", "--repeats", "1", "--latency-batch", "2").stdout)
    assert evaluated["params"] == res["params"]
    result = run("export", train, "--format", "torchscript")
    assert result.exit_code == 0, result.output
    model = torch.jit.load(str(train / "model.torchscript.pt"))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    shown = run("show", search_run, "--json", "--out", tmp_path / "drawn")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["space"] == "macro" and data["layers"] == 3 and data["network"][0]["reduce_after"]
    assert (tmp_path / "drawn" / "network.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "drawn" / "network.svg").read_text()


def test_the_official_arc_string_and_enas_macro_by_name(tmp_path):
    shown = run("show", ENAS_MACRO_ARC.replace("\n", " "))
    assert shown.exit_code == 0, shown.output
    assert "enas_macro network at C 96, 24 layers" in shown.output and "42,559,392" in shown.output
    assert "layer 1 = sep_conv_5x5(layer 0)\n" in shown.output and "layer 2 = conv_3x3(layer 1) + skip(stem)\n" in shown.output
    by_name = json.loads(run("show", "ENAS_MACRO", "--json").stdout)
    assert by_name["arc"] == " ".join(ENAS_MACRO_ARC.split()) and by_name["params"] == 42_559_392
    wide = json.loads(run("show", "ENAS_MACRO", "--json", "--channels", "128").stdout)
    assert wide["params"] == 75_636_608
    separable = json.loads(run("show", "ENAS_MACRO", "--json", "--preset", "quick").stdout)
    assert (separable["channels"], separable["layers"]) == (8, 24)
    table = {r["name"]: r for r in json.loads(run("genotypes", "--json").stdout)}
    assert table["ENAS_MACRO"]["space"] == "macro" and table["ENAS_MACRO"]["nodes"] == {"layers": 24}
    # An arc string trains directly (3 layers here).
    out = tmp_path / "arc"
    result = run("train", "0 3 1 4 0 1", *TRAIN, "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "result.json").read_text())["genotype_source"] == "arch:0 3 1 4 0 1"


@pytest.mark.parametrize("args, message", [
    (["show", "0 3"], "macro architecture '0 3': a macro arc has L (L + 1) / 2 integers"),
    (["show", "0 7 0"], "layer 1 (arc[1]): op index 7 out of range 0..5"),
    (["train", "0 3 2", "--preset", "quick"], "layer 1: skip bit 0 must be 0 or 1, got 2"),
    (["train", "ENAS_MACRO", "--layers", "12"], "model.layers is 24 for this macro architecture, not 12"),
    (["show", "0 3 1"], "model.layers must be >= 3"),
    (["search", "--space", "macro", "--strategy", "darts"], "the macro space has no DARTS relaxation"),
    (["search", "--space", "macro", "--preset", "quick", "--set", "model.auxiliary=true"],
     "the macro network has no auxiliary head"),
])
def test_bad_macro_input_is_one_error_line(args, message, tmp_path):
    out = tmp_path / "never"
    line = error_line(run(*args, "--out", out) if args[0] != "show" else run(*args))
    assert message in line
    assert not out.exists()


@pytest.mark.parametrize("content, message", [
    ('{"ops": ["conv_3x3", "bogus"], "skips": [[], [1]]}', "layer 1: unknown op 'bogus'"),
    ('{"ops": ["conv_3x3"], "skips": [[1]]}', "layer 0: needs 0 skip bit(s)"),
    ('{"ops": ["conv_3x3"], "skips": [[]], "extra": 1}', "unknown field(s): extra"),
    ('{"space": "macro", "arch": "|none~0|"}', "unknown field(s): arch"),
])
def test_malformed_macro_json_is_one_error_line(tmp_path, content, message):
    path = tmp_path / "arch.json"
    path.write_text(content)
    for command in ("show", "train"):
        assert message in error_line(run(command, path))
