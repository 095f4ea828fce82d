"""Evolution and TPE on the shared supernet (enas/search/population.py), on every registered space."""
import pytest
import torch

from enas.search.build import build_search
from enas.search.driver import SearchDriver
from enas.config.search import build_search_config
from shared_model.spaces import list_spaces

TINY = {"epochs": 1, "data.batch_size": 16, "model.channels": 4, "model.layers": 3, "data.image_size": 8,
        "derive.samples": 6, "evolution.population": 4, "evolution.sample": 2, "evolution.cycles_per_epoch": 6,
        "bo.population": 4, "bo.trials_per_epoch": 6, "bo.startup_trials": 2, "run.threads": 1}


def strategies():
    try:
        import optuna  # noqa: F401
    except ImportError:
        return ["evolution", pytest.param("bo", marks=pytest.mark.skip(reason="needs optuna"))]
    return ["evolution", "bo"]


def setup(strategy, **extra):
    cfg = build_search_config(strategy, "quick", None, dict(TINY, **extra))
    torch.manual_seed(0)
    return cfg, build_search(cfg, torch.device("cpu"))


@pytest.mark.parametrize("space", list_spaces())
@pytest.mark.parametrize("strategy", strategies())
def test_a_toy_search_runs_and_derives_on_every_space(tmp_path, strategy, space):
    extra = {"model.layers": 1} if space == "nb201" else {}
    cfg, s = setup(strategy, **{"model.space": space, **extra})
    assert s.strategy.name == strategy and cfg.model.space == space
    SearchDriver(cfg, s, tmp_path).run(tensorboard=False)
    genotype = s.space.arch_from_json(__import__("json").loads((tmp_path / "genotype.json").read_text()))
    assert s.space.contains(genotype)
    assert s.strategy.proposals == 6 and len(s.strategy.proposer.members()) == 4
    assert s.strategy.best[1] == max(r for r, _, _ in s.strategy.hall)


@pytest.mark.parametrize("strategy", strategies())
def test_rewards_go_through_the_one_reward_callable(strategy):
    cfg, s = setup(strategy)
    inner = s.strategy.reward_fn
    seen = []

    def cost_aware(actions):  # what a reward transform (e.g. a cost penalty) would do
        seen.append(list(actions))
        return inner(actions) - 10.0

    s.strategy.reward_fn = cost_aware
    rows = list(s.strategy._search(0))
    assert len(rows) == len(seen) == 6
    assert all(r["reward"] < -9.0 for r in rows)
    assert [r for _, r in s.strategy.proposer.scored_members()] == [r["reward"] for r in rows][-4:]


def test_training_paths_come_from_the_population_unless_exploring():
    cfg, s = setup("evolution", **{"evolution.explore": 0.0})
    list(s.strategy._search(0))  # fill the population
    members = {tuple(m) for m in s.strategy.proposer.members()}
    assert all(tuple(s.strategy.training_actions()) in members for _ in range(50))
    s.strategy.explore = 1.0
    drawn = {tuple(s.strategy.training_actions()) for _ in range(50)}
    assert len(drawn - members) > 40  # uniform paths over a space of ~10^11 cells
    cfg, fresh = setup("evolution", **{"evolution.explore": 0.0})
    assert len(fresh.strategy.training_actions()) == len(fresh.space.decisions)  # empty population: uniform


def test_derive_rescoring_resumes_exactly():
    cfg, a = setup("evolution")
    list(a.strategy._search(0))
    state, gen = a.strategy.state_dict(), a.generators["sample"].get_state()
    phase = a.strategy.derive_phase(cfg.derive.samples)
    assert [c["source"] for c in a.strategy.derive_candidates][:4] == ["population"] * 4
    whole = list(phase.run(0))
    cfg, b = setup("evolution")
    b.strategy.load_state_dict(state)
    b.generators["sample"].set_state(gen)
    phase = b.strategy.derive_phase(cfg.derive.samples)
    head = [row for _, row in zip(range(3), phase.run(0))]
    cfg, c = setup("evolution")
    c.strategy.load_state_dict(b.strategy.state_dict())  # killed after three candidates
    c.generators["sample"].set_state(b.generators["sample"].get_state())
    tail = list(c.strategy.derive_phase(cfg.derive.samples).run(3))
    assert head + tail == whole
    assert c.strategy.derive_result()[1] == a.strategy.derive_result()[1]
    # A checkpoint taken right after the last candidate resumes to the same result.
    cfg, d = setup("evolution")
    d.strategy.load_state_dict(c.strategy.state_dict())
    assert list(d.strategy.derive_phase(cfg.derive.samples).run(len(whole))) == []
    assert d.strategy.derive_result()[1] == a.strategy.derive_result()[1]
    # `enas derive --samples N` again: new candidates from the unchanged population and hall of fame.
    again = d.strategy.derive_phase(2)
    assert again.length == 4 and len(list(again.run(0))) == 4 and len(d.strategy.derive_scores) == 4
