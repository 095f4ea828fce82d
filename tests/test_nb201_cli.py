"""`--space nb201` end to end through the CLI: search (every strategy), train, show, evaluate, export.

Tiny settings (digits' 8 px images, C 4, one cell per stage, one epoch) keep each step a few seconds.
"""
import json

import pytest
from click.testing import CliRunner

from enas.cli import cli
from shared_model.nb201_arch import NB201Arch

SEARCH = ["--preset", "quick", "--space", "nb201", "--epochs", "1", "--batch-size", "32", "--seed", "1",
          "--set", "model.channels=4", "--set", "model.layers=1", "--set", "run.channels_last=off",
          "--set", "controller.updates_per_epoch=2", "--set", "controller.samples_per_update=2",
          "--set", "derive.samples=3"]
TRAIN = ["--preset", "quick", "--channels", "4", "--layers", "1", "--epochs", "1", "--batch-size", "128",
         "--set", "run.channels_last=off"]
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nb201") / "search"
    result = invoke("search", *SEARCH, "--strategy", "enas", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_enas_search_writes_an_nb201_arch(search_run):
    data = json.loads((search_run / "genotype.json").read_text())
    assert list(data) == ["arch"]
    NB201Arch.from_string(data["arch"])
    config = json.loads((search_run / "config.json").read_text())
    assert config["model"]["space"] == "nb201" and config["model"]["layers"] == 1
    assert (search_run / "genotypes" / "epoch_001.json").is_file()
    details = json.loads((search_run / "derive.json").read_text())
    assert details["candidates"][0]["source"] == "greedy"


@pytest.mark.parametrize("strategy", ["random", "darts"])
def test_random_and_darts_search_on_nb201(tmp_path, strategy):
    out = tmp_path / strategy
    result = invoke("search", *SEARCH, "--strategy", strategy, "--set", "derive.top_k=1",
                    "--set", "derive.eval_batches=1", "--out", out)
    assert result.exit_code == 0, result.output
    arch = NB201Arch.from_dict(json.loads((out / "genotype.json").read_text()))
    if strategy == "darts":
        details = json.loads((out / "derive.json").read_text())
        assert details["ops"] == ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
        assert len(details["alphas"]["cell"]) == 6 and details["genotype"] == arch.to_dict()


def test_train_show_evaluate_export_from_the_search_run(search_run, tmp_path):
    run = tmp_path / "train"
    result = invoke("train", search_run, *TRAIN, "--out", run)
    assert result.exit_code == 0, result.output
    res = json.loads((run / "result.json").read_text())
    arch = json.loads((search_run / "genotype.json").read_text())
    assert res["genotype"] == arch and res["epochs"] == 1 and res["test_acc"] is not None
    # The retrain run folder is itself an architecture source.
    shown = invoke("-q", "show", run, "--json", "--channels", "4", "--layers", "1")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    assert report["space"] == "nb201" and report["genotype"] == arch and report["params"] > 0
    evaluated = invoke("-q", "evaluate", run, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["top1"] == pytest.approx(res["test_acc"])
    exported = invoke("export", run, "--format", "torchscript")
    assert exported.exit_code == 0, exported.output
    assert (run / "model.torchscript.pt").is_file()


def test_show_an_arch_file_and_draw_it(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"arch": ARCH}))
    result = invoke("show", path, "--out", tmp_path / "cells")
    assert result.exit_code == 0, result.output
    assert "node 3 = skip_connect(node 0) + nor_conv_3x3(node 1) + skip_connect(node 2)" in result.output
    assert "nb201 network at C 16, 5 layers" in result.output
    assert (tmp_path / "cells" / "cell.png").read_bytes()[:4] == b"\x89PNG"


def test_nb201_is_the_default_train_preset_of_nb201_cells():
    from enas.config.train import build_train_config
    from shared_model.spaces import get_space

    cfg = build_train_config(None, {}, arch_space=get_space("nb201"))
    assert cfg.preset == "nb201" and cfg.epochs == 200 and cfg.data.batch_size == 256
    assert (cfg.optim.lr_max, cfg.optim.lr_min, cfg.optim.weight_decay) == (0.1, 0.0, 5e-4)
    assert cfg.optim.nesterov and cfg.optim.momentum == 0.9 and cfg.optim.grad_clip is None
    assert not cfg.model.auxiliary and cfg.model.drop_path_prob == 0 and cfg.data.cutout == 0


def test_malformed_nb201_file_is_one_error_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"arch": "|nor_conv_3x3~0|"}))
    result = invoke("show", path)
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: genotype file") and "Traceback" not in result.output


def test_train_and_show_an_architecture_string(tmp_path):
    run = tmp_path / "from-string"
    result = invoke("train", ARCH, *TRAIN, "--out", run)
    assert result.exit_code == 0, result.output
    res = json.loads((run / "result.json").read_text())
    assert res["genotype"] == {"arch": ARCH} and res["genotype_source"] == f"arch:{ARCH}"
    assert json.loads((run / "config.json").read_text())["model"]["space"] == "nb201"
    shown = invoke("-q", "show", ARCH, "--json")
    assert shown.exit_code == 0 and json.loads(shown.output)["arch"] == ARCH
    bad = invoke("show", "|bogus~0|")
    assert bad.exit_code == 2 and bad.output.strip().startswith("error: nb201 architecture")
