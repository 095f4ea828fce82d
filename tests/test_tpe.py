"""Optuna TPE behind the propose / tell interface (controller/tpe.py), in table mode and alone."""
import math
import sys

import pytest
import torch

from controller.tpe import INSTALL_HINT, TPEProposer, require_optuna
from enas.benchmark.synthetic import synthetic_table
from enas.benchmark.table_config import build_table_config
from enas.benchmark.table_search import TableSearch
from shared_model.spaces import get_space


@pytest.fixture(autouse=True)
def optuna(request):
    """Optuna for every test here but the one that checks its absence."""
    if request.node.name != "test_missing_optuna_is_one_clear_line":
        return pytest.importorskip("optuna")
    return None


def test_proposals_are_valid_in_every_space_and_inputs_stay_distinct():
    for name in ("micro", "darts", "nb201"):
        space = get_space(name)
        tpe = TPEProposer(space.decisions, space.distinct_inputs, startup_trials=3)
        g = torch.Generator().manual_seed(0)
        for _ in range(8):
            actions = tpe.propose(g)
            space.decode(actions)  # a valid architecture of the space
            tpe.tell(actions, float(sum(actions)))
        if space.distinct_inputs:
            cells = {}
            for a, d in zip(actions, space.decisions):
                if d.kind == "input":
                    cells.setdefault((d.cell, d.node), []).append(a)
            assert all(len(set(v)) == len(v) for v in cells.values())


def test_tpe_learns_on_a_synthetic_table():
    """After its random start-up trials TPE proposes better cells than the start-up ones."""
    table = synthetic_table(0)
    cfg = build_table_config(None, None, {"budget.queries": 60, "tensorboard": False, "methods": ["bo"]})
    search = TableSearch(table, cfg, "bo", seed=0)
    result = search.run()
    rewards = search.history["reward"]
    assert result["queries"] == 60 and len(search.tp.policy.trials) == 60
    startup, late = rewards[:10], rewards[-20:]
    assert sum(late) / 20 > sum(startup) / 10 + 5.0  # percent points
    assert result == TableSearch(table, cfg, "bo", seed=0).run()  # seeded: the same run again


def test_sampler_state_survives_a_round_trip_bit_identically(tmp_path):
    space = get_space("darts")
    reward = lambda a: math.sin(sum(k * x for k, x in enumerate(a)))  # noqa: E731
    tpe = TPEProposer(space.decisions, True, startup_trials=4, population=5, history=6)
    g = torch.Generator().manual_seed(3)
    for _ in range(12):
        tpe.update(reward, g)
    tpe.reject(tpe.propose(g))  # a rejected proposal is part of the state too
    torch.save({"tpe": tpe.state_dict(), "rng": g.get_state()}, tmp_path / "s.pt")
    expected = [tpe.update(reward, g) for _ in range(8)]
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    again = TPEProposer(space.decisions, True, startup_trials=4, population=5, history=6)
    again.load_state_dict(state["tpe"])
    g2 = torch.Generator()
    g2.set_state(state["rng"])
    assert [again.update(reward, g2) for _ in range(8)] == expected
    assert again.state_dict() == tpe.state_dict()
    assert len(again.members()) == 5 and again.stats()["trials"] == 21
    # TPE models only the latest 6..11 trials: 21 told, the study holds trials 12..20.
    assert len(again.study.trials) == len(tpe.study.trials) == 9


def test_non_finite_rewards_fail_the_trial_and_tell_must_match_the_proposal(optuna):
    space = get_space("nb201")
    tpe = TPEProposer(space.decisions)
    g = torch.Generator().manual_seed(0)
    a = tpe.propose(g)
    with pytest.raises(RuntimeError, match="before asking"):
        tpe.propose(g)
    with pytest.raises(RuntimeError, match="last propose"):
        tpe.tell([(x + 1) % 5 for x in a], 1.0)
    tpe.tell(a, float("nan"))
    assert tpe.trials[-1][1] is None and tpe.members() == []
    assert tpe.study.trials[-1].state == optuna.trial.TrialState.FAIL


def test_missing_optuna_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'enas\[bo\]'") as info:
        require_optuna()
    assert str(info.value) == INSTALL_HINT
    from cli_helpers import error_line, run

    out = tmp_path / "run"
    line = error_line(run("search", "--strategy", "bo", "--preset", "quick", "--epochs", "1", "--out", out))
    assert "enas[bo]" in line and not out.exists()  # refused before the run folder exists
    syn = tmp_path / "syn.csv"
    assert run("table", "synthetic", "--out", syn).exit_code == 0
    line = error_line(run("table", "nb201", "--benchmark", syn, "--methods", "bo", "--out", tmp_path / "t"))
    assert "enas[bo]" in line and not (tmp_path / "t").exists()
