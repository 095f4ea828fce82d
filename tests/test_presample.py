"""One batched controller pass per train phase (resumable) and REINFORCE rewards read at once."""
import copy
import math

import torch

from controller import Controller, Reinforce
from enas.search.build import build_search
from enas.config.search import build_search_config
from shared_model.spaces import make_space

TINY = {"epochs": 1, "data.batch_size": 16, "model.channels": 4, "model.layers": 3, "data.image_size": 8,
        "data.limit": 96, "controller.samples_per_update": 2, "controller.updates_per_epoch": 2}


def setup():
    cfg = build_search_config("enas", "quick", None, dict(TINY))
    torch.manual_seed(0)
    return build_search(cfg, torch.device("cpu"))


def record(setup_, seen):
    """Note the genotype of every training step."""
    step = setup_.trainer.train_step
    setup_.trainer.train_step = lambda x, y, arch: (seen.append(setup_.space.arch_to_json(arch)), step(x, y, arch))[1]


def test_train_phase_draws_once_and_a_resumed_phase_redraws_the_same_architectures():
    s = setup()
    strategy, policy = s.strategy, s.strategy.policy
    phase = strategy.phases(0)[0]
    seen, calls = [], []
    record(s, seen)
    batch = policy.sample_batch
    policy.sample_batch = lambda n, **kw: (calls.append(n), batch(n, **kw))[1]
    assert phase.length >= 4
    it = phase.run(0)
    for _ in range(2):
        next(it)
    assert calls == [phase.length]  # one pass for the whole phase, not one sample per step
    state = copy.deepcopy(strategy.state_dict())
    gen_state = s.generators["sample"].get_state()
    rest = [row["loss"] for row in it]
    first_run = list(seen)

    resumed = setup()
    resumed.strategy.load_state_dict(state)
    resumed.generators["sample"].set_state(gen_state)
    resumed.model.load_state_dict(s.model.state_dict())  # any weights: only the architectures matter
    seen.clear()
    record(resumed, seen)
    assert len(list(resumed.strategy.phases(0)[0].run(2))) == len(rest)
    assert seen == first_run[2:]
    assert len({str(g) for g in first_run}) > 1  # a fresh architecture per step


def test_reinforce_reads_tensor_rewards_like_floats():
    space = make_space("micro")
    results = []
    for as_tensor in (False, True):
        torch.manual_seed(0)
        ctrl = Controller(space.decisions, len(space.sample_ops))
        reinforce = Reinforce(ctrl, samples_per_update=4)
        gen = torch.Generator().manual_seed(1)

        def reward(actions):
            value = (sum(actions) % 7) / 7.0 if actions[0] != 1 else math.nan
            return torch.tensor(value, dtype=torch.float64) if as_tensor else value

        stats = [reinforce.update(reward, generator=gen) for _ in range(3)]
        results.append((stats, [p.detach().clone() for p in ctrl.parameters()]))
    (a, pa), (b, pb) = results
    for sa, sb in zip(a, b):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert sa[k] == sb[k] or (isinstance(sa[k], float) and math.isnan(sa[k]) and math.isnan(sb[k])), k
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
