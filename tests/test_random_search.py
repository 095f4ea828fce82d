"""Random search with weight sharing (Li & Talwalkar 2019): network, sampling and derive."""
import torch

from enas.search.build import build_search
from enas.config.search import build_search_config

TINY = {"epochs": 1, "data.batch_size": 16, "model.channels": 4, "model.layers": 3,
        "data.image_size": 8, "controller.samples_per_update": 2, "derive.samples": 4,
        "derive.rounds": 2, "derive.eval_batches": 2, "derive.top_k": 2}


def setup(**extra):
    cfg = build_search_config("random", "quick", None, dict(TINY, **extra))
    torch.manual_seed(0)  # same supernet weights in every setup
    return cfg, build_search(cfg, torch.device("cpu"))


def run_phase(phase, start=0, stop=None):
    it = phase.run(start)
    return [row for _, row in zip(range((stop or phase.length) - start), it)]


def test_random_search_uses_the_darts_space_network_and_training():
    cfg, s = setup()
    assert s.space.name == "darts" and s.space.distinct_inputs and cfg.model.cell_output == "concat"
    assert s.trainer.update_off_path is False and s.trainer.grad_clip == 1.0
    assert s.strategy.policy.distinct_inputs
    for _ in range(20):
        actions = s.strategy._sample()
        assert all(actions[k] != actions[k + 2] for k in range(0, len(actions), 4))


def test_derive_scores_rounds_then_rescoring_the_top_k_on_the_whole_split():
    cfg, s = setup()
    phase = s.strategy.derive_phase(cfg.derive.samples)
    assert phase.length == 2 * (4 + 2)
    run_phase(phase)
    scores = s.strategy.derive_scores
    assert [c["source"] for c in scores] == (["sample"] * 4 + ["full_valid"] * 2) * 2
    for r in range(2):
        sampled = [c for c in scores if c["round"] == r and c["source"] == "sample"]
        full = [c for c in scores if c["round"] == r and c["source"] == "full_valid"]
        best_two = sorted(sampled, key=lambda c: -c["valid_acc"])[:2]
        assert [c["genotype"] for c in full] == [c["genotype"] for c in best_two]
        assert [c["minibatch_acc"] for c in full] == [c["valid_acc"] for c in best_two]
    genotype, details = s.strategy.derive_result()
    best = max((c for c in scores if c["source"] == "full_valid"), key=lambda c: c["valid_acc"])
    assert details["best_source"] == "full_valid" and details["best_valid_acc"] == best["valid_acc"]
    assert genotype.to_dict() == best["genotype"]


def test_derive_resumes_mid_round_exactly():
    cfg, a = setup()
    run_phase(a.strategy.derive_phase(cfg.derive.samples))
    cfg, b = setup()
    phase = b.strategy.derive_phase(cfg.derive.samples)
    run_phase(phase, 0, 5)  # stop inside the first round's full-split re-scores
    state, gen_state = b.strategy.state_dict(), b.generators["sample"].get_state()
    cfg, c = setup()
    c.strategy.load_state_dict(state)
    c.generators["sample"].set_state(gen_state)
    run_phase(c.strategy.derive_phase(cfg.derive.samples), 5)
    assert c.strategy.derive_scores == a.strategy.derive_scores
