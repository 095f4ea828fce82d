"""Hardware-aware search end to end: latency tables, costs in ENAS/random/DARTS, derive under a budget."""
import json
import sys

import pytest
import torch

from cli_helpers import error_line, run
from enas.cost.lut import read_table
from enas.cost.measure import measure_table
from enas.cost.models import cost_spec
from enas.errors import UserError
from shared_model.spaces import get_space

TINY = ["--preset", "quick", "--epochs", "1", "--batch-size", "32", "--seed", "1",
        "--set", "model.channels=4", "--set", "model.layers=3", "--set", "controller.updates_per_epoch=2",
        "--set", "controller.samples_per_update=3", "--set", "derive.samples=8"]


def _rows(out, phase):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["phase"] == phase]


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    """A latency table of the darts space at C 4, 3 cells, 8 px (2 timed runs per block)."""
    spec = cost_spec(4, 3, 10, 3, 8)
    table = measure_table(get_space("darts"), spec, 1, torch.device("cpu"), warmup=1, repeats=2, rounds=1,
                          calibrate=1)
    path = tmp_path_factory.mktemp("lut") / "lut.json"
    table.save(path)
    return path


def test_latency_table_round_trip_units_and_prediction(tiny_table, tmp_path):
    table = read_table(tiny_table)
    data = json.loads(tiny_table.read_text())
    assert data["units"] == "ms" and data["statistic"] == "median" and data["batch_size"] == 1
    assert {"torch", "python"} <= set(data["versions"]) and data["device"]["threads"] == 1
    assert {"load_average_before", "repeats", "warmup", "clock"} <= set(data["measurement"])
    space = get_space("darts")
    vocab = space.cost_vocabulary(table.network)
    assert set(table.entries) == {b.key for b in vocab}
    assert all(e["op"] == b.is_op for b, e in zip(vocab, (table.entries[b.key] for b in vocab)))
    arch = space.decode(space.random_actions(torch.Generator().manual_seed(0)))
    predicted = table.predict(space.cost_blocks(arch, table.network))
    assert predicted["total_ms"] == pytest.approx(predicted["ops_ms"] + predicted["fixed_ms"] + predicted["overhead_ms"])
    # The same table in microseconds predicts the same milliseconds.
    data["units"] = "us"
    for entry in data["entries"].values():
        for k in ("median", "p10", "p90"):
            entry[k] *= 1000
    data["fixed"]["overhead"]["median"] *= 1000
    (tmp_path / "us.json").write_text(json.dumps(data))
    again = read_table(tmp_path / "us.json").predict(space.cost_blocks(arch, table.network))
    assert again["total_ms"] == pytest.approx(predicted["total_ms"])
    data["units"] = "cycles"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="units 'cycles'"):
        read_table(tmp_path / "bad.json")


def test_wrong_units_or_another_network_is_one_error_line(tiny_table, tmp_path):
    data = json.loads(tiny_table.read_text())
    del data["units"]
    bad = tmp_path / "nounits.json"
    bad.write_text(json.dumps(data))
    line = error_line(run("search", *TINY, "--strategy", "darts", "--cost", "latency", "--lut", bad,
                          "--out", tmp_path / "r1"))
    assert 'no "units" field' in line
    line = error_line(run("show", "DARTS_V2", "--lut", bad))
    assert 'no "units" field' in line
    # A table of another network (3-channel 8 px vs the digits' 1 channel) is refused by name.
    line = error_line(run("search", *TINY, "--strategy", "darts", "--cost", "latency", "--lut", tiny_table,
                          "--out", tmp_path / "r2"))
    assert "network.in_channels 3 in the table, 1 here" in line


def test_show_prints_predicted_and_measured_latency(tiny_table):
    result = run("show", "DARTS_V2", "--lut", tiny_table, "--json")
    assert result.exit_code == 0, result.output
    latency = json.loads(result.stdout)["latency"]
    assert latency["predicted_ms"]["total_ms"] > 0 and latency["measured_ms"]["median"] > 0
    text = run("show", "DARTS_V2", "--lut", tiny_table).output
    assert "predicted" in text and "measured" in text


def test_latency_table_command_writes_a_checked_file(tmp_path):
    out = tmp_path / "t.json"
    result = run("latency-table", "--space", "nb201", "--channels", "4", "--layers", "1", "--image-size", "8",
                 "--repeats", "2", "--rounds", "1", "--calibrate", "0", "--out", out)
    assert result.exit_code == 0, result.output
    assert "fixed parts" in result.output and read_table(out).runtime == "torch"
    assert "exists" in error_line(run("latency-table", "--space", "nb201", "--out", out))


def test_hard_constraint_never_trains_or_derives_an_architecture_over_budget(tmp_path):
    out = tmp_path / "hard"
    target = 150_000  # MACs of the digits child network at C 4, 3 cells: about half the space fits
    result = run("search", *TINY, "--cost", "macs", "--target", target, "--constraint", "hard", "--out", out)
    assert result.exit_code == 0, result.output
    assert "cost (macs): " in result.output
    train = _rows(out, "train")
    assert train and all(r["cost"] <= target for r in train)
    assert all(r["cost_max"] <= target for r in _rows(out, "controller"))
    details = json.loads((out / "derive.json").read_text())
    assert details["best_cost"] <= target and details["cost"]["constraint"] == "hard"
    scored = [c for c in details["candidates"] if c["valid_acc"] is not None]
    assert scored and all(c["cost"] <= target for c in scored)
    assert all(c["valid_acc"] is None for c in details["candidates"] if c["cost"] > target)
    front = details["pareto_front"]
    assert [c["cost"] for c in front] == sorted(c["cost"] for c in front)
    assert [c["valid_acc"] for c in front] == sorted(c["valid_acc"] for c in front)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(out / "tb")).Reload().Tags()
    assert "derive/pareto" in tags["images"]
    assert {"shared/cost", "derive/best_cost"} <= set(tags["scalars"])
    controller = EventAccumulator(str(out / "tb" / "controller")).Reload().Tags()  # its own sub-run
    assert {"controller/cost", "controller/acc", "controller/cost_max"} <= set(controller["scalars"])


def test_infeasible_budget_is_one_error_line(tmp_path):
    line = error_line(run("search", *TINY, "--strategy", "random", "--cost", "params", "--target", 10,
                          "--constraint", "hard", "--set", "cost.max_tries=5", "--out", tmp_path / "r"))
    assert "infeasible cost budget" in line and "cheapest" in line


def test_tighter_target_derives_a_cheaper_architecture(tmp_path):
    """One toy search, derived under three MAC budgets: the derived cost never rises as the budget tightens.

    Derive scores the same candidate draws whatever the budget (`enas derive` replays the
    search's own draws) and only lets those within it compete, so this holds by construction,
    not by luck of the search.
    """
    out = tmp_path / "run"
    result = run("search", *TINY, "--strategy", "random", "--cost", "macs", "--set", "derive.samples=12",
                 "--out", out)
    assert result.exit_code == 0, result.output
    costs = sorted(c["cost"] for c in json.loads((out / "derive.json").read_text())["candidates"])
    targets = [costs[-1], costs[len(costs) // 2], costs[1]]  # loose, median, second cheapest
    derived = []
    for target in targets:
        result = run("derive", out, "--target", target, "--constraint", "hard")
        assert result.exit_code == 0, result.output
        details = json.loads((out / "derive.json").read_text())
        assert details["best_cost"] <= target
        derived.append(details["best_cost"])
    assert derived[0] >= derived[1] >= derived[2]
    assert derived[2] <= costs[1] < derived[0] or derived[0] == derived[2] == costs[0]


def test_darts_cost_term_adds_its_gradient_to_the_architecture_step(tmp_path):
    from enas.search.build import build_search
    from enas.config.search import build_search_config

    cfg = build_search_config("darts", "quick", None, {
        "strategy": "darts", "data.batch_size": 16, "data.image_size": 4, "model.channels": 4,
        "model.layers": 3, "cost.model": "macs", "cost.target": 1e5, "cost.darts_weight": 5.0})
    strategy = build_search(cfg, torch.device("cpu")).strategy
    x, y = next(iter(strategy.train_loader.epoch_batches(0)))
    base, _, _ = strategy.arch_grads(x, y, x, y)
    penalty, expected = strategy.cost_term()
    alphas = [strategy.arch.alpha(c) for c in strategy.arch.cells]
    extra = torch.autograd.grad(penalty, alphas)
    applied = []
    strategy.arch_optimizer.step = lambda: applied.extend(p.grad.clone() for p in strategy.arch.parameters())
    stats = strategy.arch_step(x, y, x, y)
    for got, g, e in zip(applied, base, extra):
        assert torch.allclose(got, g + e, atol=1e-6)
    assert stats["expected_cost"] == pytest.approx(float(expected.detach()))
    # Finite differences of the term (float32) along one logit of the normal cell.
    h, (e_, k_) = 1e-2, (2, 4)
    with torch.no_grad():
        strategy.arch.alpha("normal")[e_, k_] += h
        up = float(strategy.cost_term()[0])
        strategy.arch.alpha("normal")[e_, k_] -= 2 * h
        down = float(strategy.cost_term()[0])
        strategy.arch.alpha("normal")[e_, k_] += h
    assert (up - down) / (2 * h) == pytest.approx(float(extra[0][e_, k_]), rel=2e-2)


def test_cost_plugin_by_dotted_path(tmp_path, monkeypatch):
    (tmp_path / "my_costs.py").write_text(
        "class Ops:\n"
        "    unit = 'ops'\n"
        "    def __init__(self, space, spec):\n"
        "        self.space = space\n"
        "    def arch_cost(self, arch):\n"
        "        return float(len(self.space.encode(arch)))\n"
        "def factory(space, spec):\n"
        "    return Ops(space, spec)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    result = run("search", *TINY, "--strategy", "random", "--cost", "my_costs:factory", "--out", out)
    assert result.exit_code == 0, result.output
    details = json.loads((out / "derive.json").read_text())
    assert details["cost"]["unit"] == "ops" and details["best_cost"] == 32
    assert "cannot import" in error_line(run("search", *TINY, "--cost", "no_such_module:f", "--out", tmp_path / "x"))
    assert "cost.model" in error_line(run("search", *TINY, "--cost", "__import__('os')", "--out", tmp_path / "y"))
    assert "factory(space=" in error_line(run("search", *TINY, "--cost", "os:getcwd", "--out", tmp_path / "z"))
    sys.modules.pop("my_costs", None)


def test_mobile_preset_is_a_latency_budget():
    from enas.config.search import build_search_config

    cfg = build_search_config("enas", "mobile", None, {})
    assert (cfg.cost.model, cfg.cost.target, cfg.cost.constraint, cfg.cost.batch_size, cfg.cost.threads) == \
        ("latency", 3.0, "both", 1, 1)
    assert cfg.data.dataset == "digits" and cfg.epochs == 20
    # It prices the network `enas train --preset quick` retrains: C 8, 5 cells; nb201: N 1.
    assert (cfg.cost.channels, cfg.cost.layers, cfg.model.layers) == (8, 5, 3)
    nb201 = build_search_config("enas", "mobile", None, {"model.space": "nb201"})
    assert (nb201.cost.channels, nb201.cost.layers) == (8, 1)


def test_evaluate_prints_predicted_and_measured_latency_of_the_checkpoint(tmp_path):
    run_dir, lut = tmp_path / "train", tmp_path / "lut.json"
    result = run("train", "DARTS_V2", "--preset", "quick", "--channels", "4", "--layers", "3", "--epochs", "1",
                 "--batch-size", "256", "--set", "run.threads=1", "--out", run_dir)
    assert result.exit_code == 0, result.output
    result = run("latency-table", "--space", "darts", "--channels", "4", "--layers", "3", "--image-size", "8",
                 "--in-channels", "1", "--repeats", "2", "--rounds", "1", "--calibrate", "1", "--out", lut)
    assert result.exit_code == 0, result.output
    result = run("evaluate", run_dir, "--json", "--repeats", "2", "--latency-batch", "2", "--lut", lut)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["table_latency"]
    assert report["predicted_ms"]["total_ms"] > 0 and report["measured_ms"]["median"] > 0
    text = run("evaluate", run_dir, "--repeats", "2", "--latency-batch", "2", "--lut", lut).output
    assert "predicted" in text and "measured" in text


def test_evolution_proposes_within_a_hard_budget_and_derives_under_it(tmp_path):
    out, target = tmp_path / "evo", 150_000
    result = run("search", *TINY, "--strategy", "evolution", "--cost", "macs", "--target", target,
                 "--constraint", "both", "--set", "evolution.cycles_per_epoch=8", "--out", out)
    assert result.exit_code == 0, result.output
    rows = _rows(out, "evolution")
    assert len(rows) == 8 and all(r["cost"] <= target for r in rows)
    details = json.loads((out / "derive.json").read_text())
    assert details["best_cost"] <= target and details["pareto_front"]
    assert all(c["cost"] <= target for c in details["candidates"])
