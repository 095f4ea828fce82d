"""Table-mode search: the NB201 decisions in every policy, budgets, determinism and exact resume."""
import json

import numpy as np
import pytest
import torch

from controller.categorical import CategoricalPolicy, CategoricalReinforce
from controller.lstm import Controller, plan_decisions
from controller.uniform import UniformPolicy
from enas.benchmark.policies import NB201_DECISIONS, make_policy
from enas.benchmark.synthetic import synthetic_table
from enas.benchmark.table import BenchmarkTable
from enas.benchmark.table_config import build_table_config
from enas.benchmark.table_search import SimulatedKill, TableSearch, best_report_at
from enas.errors import UserError
from shared_model.nb201_arch import EDGES, NB201Arch

try:
    import optuna  # noqa: F401
except ImportError:
    optuna = None
# bo needs the optional Optuna (pip install 'enas[bo]'); it is installed where the suite runs.
METHODS = ["random", "reinforce", "enas", "evolution",
           pytest.param("bo", marks=pytest.mark.skipif(optuna is None, reason="needs optuna"))]


@pytest.fixture(scope="module")
def syn():
    return synthetic_table(0)


@pytest.fixture(scope="module")
def flat(syn):
    """The synthetic table plus a constant 10 s cost column."""
    values = np.concatenate([syn.values, np.full((len(syn), 1), 10.0)], axis=1)
    return BenchmarkTable(syn.archs, syn.columns + ("flat_cost",), values, source="flat")


def cfg(**flags):
    return build_table_config(None, None, {"tensorboard": False, **flags})


def test_nb201_decisions_are_one_op_per_edge_and_every_policy_walks_them():
    assert [(d.node, d.slot, d.kind, d.num_choices) for d in NB201_DECISIONS] == \
        [(j - 1, i, "op", 5) for j, i in EDGES]
    plan = plan_decisions(NB201_DECISIONS)
    assert [len(ops) for _, nodes in plan for inputs, ops in nodes if not inputs] == [1, 2, 3]
    g = torch.Generator().manual_seed(0)
    for policy in (Controller(NB201_DECISIONS, num_ops=5), UniformPolicy(NB201_DECISIONS),
                   CategoricalPolicy(NB201_DECISIONS, generator=g)):
        s = policy.sample(g)
        assert len(s.actions) == 6 and all(0 <= a < 5 for a in s.actions)
        NB201Arch.from_actions(s.actions)
        lp, _ = policy.log_prob(s.actions)
        assert torch.allclose(lp, s.log_prob.detach(), atol=1e-5)


def test_categorical_policy_and_its_reinforce():
    policy = CategoricalPolicy(NB201_DECISIONS, init_std=0.0)
    s = policy.sample(torch.Generator().manual_seed(1))
    assert abs(float(s.entropy.detach()) - 6 * np.log(5)) < 1e-5
    assert abs(float(s.log_prob.detach()) + 6 * np.log(5)) < 1e-5
    trainer = CategoricalReinforce(policy, lr=0.1, ema_momentum=0.9)
    g = torch.Generator().manual_seed(0)
    # Reward 1 for skip_connect on every edge: the policy must move toward it.
    for _ in range(80):
        trainer.update(lambda a: float(sum(x == 1 for x in a)), g)
    assert policy.probabilities()[:, 1].mean() > 0.6
    first = CategoricalReinforce(CategoricalPolicy(NB201_DECISIONS))
    first.update(lambda a: 80.0, g)
    assert first.baseline == pytest.approx(80.0)  # debiased EMA: the first baseline is the first reward
    copy = CategoricalReinforce(CategoricalPolicy(NB201_DECISIONS))
    copy.load_state_dict(trainer.state_dict())
    assert torch.equal(copy.policy.logits, policy.logits) and copy.baseline == trainer.baseline


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_deterministically_in_table_mode(syn, method):
    c = cfg(**{"budget.queries": 25})
    a, b = (TableSearch(syn, c, method, seed=3).run() for _ in range(2))
    assert a == b and a["queries"] == 25 and len(a["trajectory"]["best_report"]) == 25
    other = TableSearch(syn, c, method, seed=4).run()
    assert other["trajectory"] != a["trajectory"]
    # The result is the best-by-reward cell, reported by test accuracy.
    best = NB201Arch.from_string(a["best_arch"])
    assert a["best_reward"] == syn.value(best, "valid_acc_epoch12") == max(a["trajectory"]["best_reward"])
    assert a["best_report"] == syn.value(best, "test_acc") == best_report_at(a, 25)
    assert a["regret"] == pytest.approx(syn.best("test_acc")[1] - a["best_report"]) and a["rank"] >= 1
    rewards = a["trajectory"]["best_reward"]
    assert rewards == sorted(rewards)


def test_duplicates_cost_a_query_and_their_time_again(flat):
    # REINFORCE with a huge learning rate collapses onto one cell: most proposals repeat.
    c = cfg(**{"budget.seconds": 395.0, "columns.cost": "flat_cost", "reinforce.lr": 50.0})
    search = TableSearch(flat, c, "reinforce", seed=0)
    result = search.run()
    assert result["queries"] == 39 and result["seconds"] == 390.0  # the 40th would exceed 395 s
    assert result["duplicates"] > 10 and result["unique_archs"] + result["duplicates"] == 39
    assert len(search.history["arch"]) == 39 and sum(search.history["cost"]) == 390.0
    assert result["trajectory"]["seconds"][-1] == 390.0


def test_time_budget_sums_the_cost_column(syn):
    c = cfg(**{"budget.seconds": 1000.0})
    search = TableSearch(syn, c, "random", seed=1)
    result = search.run()
    assert result["seconds"] <= 1000.0 and result["seconds"] == pytest.approx(sum(search.history["cost"]))
    assert result["queries"] == len(search.history["cost"]) > 3


def test_partial_table_and_missing_columns_are_one_line(syn):
    part = BenchmarkTable(syn.archs[:100], syn.columns, syn.values[:100], source="part.csv")
    with pytest.raises(UserError, match="is not in benchmark table part.csv"):
        TableSearch(part, cfg(**{"budget.queries": 50}), "random", seed=0).run()
    with pytest.raises(UserError, match="no column 'nope'"):
        TableSearch(syn, cfg(**{"columns.reward": "nope"}), "random", seed=0)
    with pytest.raises(UserError, match="allows no query"):
        TableSearch(syn, cfg(**{"budget.seconds": 1.0}), "random", seed=0).run()


@pytest.mark.parametrize("method", METHODS)
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, syn, method):
    c = cfg(**{"budget.queries": 23, "checkpoint_every": 4})
    whole = TableSearch(syn, c, method, seed=5, run_dir=tmp_path / "whole").run()
    killed = tmp_path / "killed"
    with pytest.raises(SimulatedKill):  # mid-budget, 2 queries past the checkpoint at 8
        TableSearch(syn, c, method, seed=5, run_dir=killed, stop_after=10).run()
    assert not (killed / "result.json").exists()
    assert len((killed / "metrics.jsonl").read_text().splitlines()) > 8
    resumed = TableSearch(syn, c, method, seed=5, run_dir=killed).run(resume=True)
    assert resumed == whole
    for name in ("metrics.jsonl", "result.json"):
        assert (killed / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    rows = [json.loads(l) for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["phase"] == "query"] == list(range(1, 24))


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, syn):
    c = cfg(**{"budget.queries": 6, "checkpoint_every": 2})
    TableSearch(syn, c, "random", seed=0, run_dir=tmp_path).run()
    with pytest.raises(UserError, match="belongs to another run"):
        TableSearch(syn, c, "random", seed=1, run_dir=tmp_path).run(resume=True)


def test_policies_start_from_seeded_weights():
    c = cfg()
    a, b = make_policy("enas", c, 0), make_policy("enas", c, 0)
    state = torch.get_rng_state()
    assert all(torch.equal(x, y) for x, y in zip(a.policy.parameters(), b.policy.parameters()))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    assert not torch.equal(make_policy("reinforce", c, 0).policy.logits, make_policy("reinforce", c, 1).policy.logits)


def test_decisions_match_the_registered_nb201_space_when_there_is_one():
    spaces = pytest.importorskip("shared_model.spaces")
    if not hasattr(spaces, "get_space") or "nb201" not in spaces.list_spaces():
        pytest.skip("no nb201 space registered")
    assert tuple(spaces.get_space("nb201").decisions) == NB201_DECISIONS
