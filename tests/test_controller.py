"""Tests for controller/: the ENAS LSTM policy, REINFORCE and the uniform policy."""
import copy
import io
import math

import pytest
import torch

from controller import Controller, Reinforce, Sample, UniformPolicy
from shared_model.genotype import Genotype
from shared_model.spaces import Decision, enas_op_bias, make_space

SPACES = {
    "micro": make_space("micro"),
    "darts": make_space("darts"),
    "tiny": make_space("micro", num_nodes=3, ops=("sep_conv_3x3", "max_pool_3x3", "skip_connect")),
}


def make_controller(space, seed=0, official=True, **kw):
    torch.manual_seed(seed)
    if official:
        bias, prior = enas_op_bias(space.sample_ops)
        kw.setdefault("op_bias_init", bias)
        kw.setdefault("normal_op_prior", prior)
    return Controller(space.decisions, len(space.sample_ops), **kw)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def op_positions(space, cell=None):
    return [i for i, d in enumerate(space.decisions) if d.kind == "op" and cell in (None, d.cell)]


# -- Controller ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SPACES))
def test_sampling_is_seeded_and_decodes(name):
    space = SPACES[name]
    ctrl = make_controller(space)
    a = [ctrl.sample(gen(s)).actions for s in range(5)]
    b = [ctrl.sample(gen(s)).actions for s in range(5)]
    assert a == b
    assert len({tuple(x) for x in a}) > 1  # different seeds give different cells
    for actions in a:
        assert isinstance(space.decode(actions), Genotype)
        for x, d in zip(actions, space.decisions):
            assert 0 <= x < d.num_choices


@pytest.mark.parametrize("name", sorted(SPACES))
def test_log_prob_entropy_and_rescoring(name):
    space = SPACES[name]
    ctrl = make_controller(space)
    s = ctrl.sample(gen(3))
    assert isinstance(s, Sample) and s.log_prob.requires_grad
    max_entropy = sum(math.log(d.num_choices) for d in space.decisions)
    assert math.isfinite(s.log_prob.item()) and s.log_prob.item() < 0
    assert 0 < s.entropy.item() < max_entropy
    lp, ent = ctrl.log_prob(s.actions)
    assert torch.allclose(lp, s.log_prob, atol=1e-5) and torch.allclose(ent, s.entropy, atol=1e-5)
    other = list(s.actions)
    other[1] = (other[1] + 1) % space.decisions[1].num_choices
    assert not torch.allclose(ctrl.log_prob(other)[0], lp)
    # Batched teacher forcing agrees with the per-sample values.
    samples = ctrl.sample_batch(4, gen(4))
    lps, ents = ctrl(torch.tensor([x.actions for x in samples]))
    assert torch.allclose(lps, torch.stack([x.log_prob for x in samples]), atol=1e-5)
    assert torch.allclose(ents, torch.stack([x.entropy for x in samples]), atol=1e-5)


def test_gradient_reaches_every_parameter():
    ctrl = make_controller(SPACES["micro"], num_layers=2)
    ctrl.sample(gen(0)).log_prob.backward()
    for name, p in ctrl.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_greedy_is_deterministic_and_follows_op_bias():
    space = SPACES["micro"]
    ctrl = make_controller(space)
    a = ctrl.sample(gen(0), greedy=True).actions
    assert a == ctrl.sample(gen(1), greedy=True).actions == ctrl.sample(greedy=True).actions
    # Bias 10 on the sep convs plus the +0.25 prior make them the normal cell's mode.
    assert all(a[i] in (0, 1) for i in op_positions(space, "normal"))


def test_official_bias_and_prior_shape_initial_distribution():
    space = SPACES["micro"]
    ctrl = make_controller(space)
    assert "normal_op_prior" in dict(ctrl.named_buffers())
    assert "normal_op_prior" not in dict(ctrl.named_parameters())
    assert ctrl.b_soft.tolist() == [10.0, 10.0, 0.0, 0.0, 0.0]
    with torch.no_grad():
        samples = ctrl.sample_batch(300, gen(0))

    def sep_fraction(cell):
        pos = op_positions(space, cell)
        return sum(s.actions[i] in (0, 1) for s in samples for i in pos) / (len(samples) * len(pos))

    normal, reduce = sep_fraction("normal"), sep_fraction("reduce")
    assert normal > 0.5  # chance is 2/5; the official init gives about 0.63
    assert reduce > 0.42  # bias only (about 0.51)
    assert normal > reduce + 0.05  # the prior is added to the normal cell only
    flat = make_controller(space, official=False, tanh_constant=None)
    with torch.no_grad():
        samples = flat.sample_batch(300, gen(0))
    assert abs(sep_fraction("normal") - 0.4) < 0.06


def test_custom_decision_lists_and_validation():
    # One cell named differently, two nodes: structure comes from the decisions only.
    decisions = [Decision("a", 0, 0, "input", 2), Decision("a", 0, 0, "op", 3),
                 Decision("a", 1, 0, "input", 3), Decision("a", 1, 0, "op", 3)]
    ctrl = Controller(decisions, 3, hidden=8)
    s = ctrl.sample(gen(0))
    assert len(s.actions) == 4 and s.actions[2] < 3
    with pytest.raises(ValueError, match="earlier states"):
        Controller([Decision("a", 0, 0, "input", 3)], 3)
    with pytest.raises(ValueError, match="num_ops"):
        Controller(decisions, 4)
    with pytest.raises(ValueError, match="not contiguous"):
        Controller(decisions[:2] + [Decision("b", 0, 0, "op", 3)] + decisions[2:], 3)
    with pytest.raises(ValueError, match="op_bias_init"):
        Controller(decisions, 3, op_bias_init=[1.0, 2.0])
    with pytest.raises(ValueError, match="out of range"):
        ctrl.log_prob([0, 3, 0, 0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_controller_on_cuda_with_cpu_generator():
    space = SPACES["micro"]
    cpu = make_controller(space)
    cuda = copy.deepcopy(cpu).cuda()
    s_gpu = cuda.sample(gen(0))
    assert s_gpu.log_prob.device.type == "cuda"
    assert torch.allclose(s_gpu.log_prob.cpu(), cpu.log_prob(s_gpu.actions)[0], atol=1e-4)
    r = Reinforce(cuda, samples_per_update=3)
    out = r.update(lambda a: 0.5, gen(1))
    assert out["skipped_nonfinite"] == 0 and math.isfinite(out["loss"])


# -- REINFORCE -----------------------------------------------------------------
def toy_reward(space):
    pos = op_positions(space)
    return lambda actions: sum(actions[i] == 0 for i in pos) / len(pos)


def test_reinforce_learns_toy_reward():
    # Unbounded logits (no tanh) and a high lr make the toy fast; a quicker baseline
    # (decay 0.9) keeps the b0 = 0 start from rewarding every early sample.
    space = make_space("micro", num_nodes=3)
    ctrl = make_controller(space, official=False, tanh_constant=None)
    trainer = Reinforce(ctrl, lr=0.02, samples_per_update=5, baseline_decay=0.9)
    g = gen(0)
    history = [trainer.update(toy_reward(space), g)["raw_reward"] for _ in range(50)]
    assert sum(history[:3]) / 3 < 0.4  # starts near chance (0.2)
    assert sum(history[-10:]) / 10 > 0.6
    assert trainer.num_updates == 50


def test_reinforce_baseline_advantage_and_gradient_average():
    space = SPACES["tiny"]
    ctrl = make_controller(space)
    trainer = Reinforce(ctrl, lr=0.0, samples_per_update=3, baseline_decay=0.9, entropy_weight=0.01)
    trainer.baseline = 0.2
    seen = []

    def reward_fn(actions):
        seen.append(actions)
        return 0.1 * len(seen)

    before = copy.deepcopy(ctrl)
    out = trainer.update(reward_fn, gen(0))
    b, losses = 0.2, []
    for k, actions in enumerate(seen):
        lp, ent = before.log_prob(actions)
        r = 0.1 * (k + 1) + 0.01 * ent.item()
        b -= (1 - 0.9) * (b - r)  # the baseline moves before the advantage is taken
        losses.append(-lp * (r - b))
    expected = torch.stack(losses).mean()
    assert out["baseline"] == pytest.approx(b, abs=1e-6)
    assert out["loss"] == pytest.approx(expected.item(), abs=1e-5)
    assert out["raw_reward"] == pytest.approx(0.2)
    assert out["best_actions"] == seen[2] and out["best_reward"] == pytest.approx(0.3)
    expected.backward()
    for p, q in zip(ctrl.parameters(), before.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)


def test_reinforce_skips_nonfinite_rewards():
    space = SPACES["tiny"]
    ctrl = make_controller(space)
    trainer = Reinforce(ctrl, samples_per_update=4, entropy_weight=0.0, baseline_decay=0.5)
    before = copy.deepcopy(ctrl.state_dict())
    out = trainer.update(lambda a: float("nan"), gen(0))
    assert out["skipped_nonfinite"] == 4 and trainer.baseline == 0.0
    assert math.isnan(out["reward"]) and out["best_actions"] is None
    assert trainer.optimizer.state_dict()["state"] == {}  # no step taken
    assert all(torch.equal(v, ctrl.state_dict()[k]) for k, v in before.items())

    calls = iter([1.0, float("inf"), 1.0, float("nan")])
    out = trainer.update(lambda a: next(calls), gen(1))
    assert out["skipped_nonfinite"] == 2
    assert trainer.baseline == pytest.approx(0.75)  # two finite updates of 1.0 at decay 0.5
    assert out["raw_reward"] == 1.0 and math.isfinite(out["loss"])
    assert trainer.num_updates == 1


def test_reinforce_resume_matches_uninterrupted_run():
    space = SPACES["tiny"]
    reward = toy_reward(space)
    kwargs = dict(lr=0.01, samples_per_update=3)

    full = Reinforce(make_controller(space, seed=0), **kwargs)
    g = gen(7)
    full_log = [full.update(reward, g) for _ in range(6)]

    first = Reinforce(make_controller(space, seed=0), **kwargs)
    g = gen(7)
    for _ in range(3):
        first.update(reward, g)
    buf = io.BytesIO()
    torch.save({"reinforce": first.state_dict(), "rng": g.get_state()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    resumed = Reinforce(make_controller(space, seed=123), **kwargs)  # different init: must be overwritten
    resumed.load_state_dict(ckpt["reinforce"])
    assert resumed.baseline == first.baseline and resumed.num_updates == 3
    g2 = torch.Generator()
    g2.set_state(ckpt["rng"])
    resumed_log = [resumed.update(reward, g2) for _ in range(3)]
    for a, b in zip(full_log[3:], resumed_log):
        assert a["best_actions"] == b["best_actions"] and a["baseline"] == pytest.approx(b["baseline"])
    for p, q in zip(full.controller.parameters(), resumed.controller.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    # Without the Adam moments the continuation would differ.
    fresh = Reinforce(make_controller(space, seed=0), **kwargs)
    fresh.controller.load_state_dict(ckpt["reinforce"]["controller"])
    fresh.baseline = ckpt["reinforce"]["baseline"]
    g3 = torch.Generator()
    g3.set_state(ckpt["rng"])
    for _ in range(3):
        fresh.update(reward, g3)
    assert not all(torch.allclose(p, q, atol=1e-6)
                   for p, q in zip(full.controller.parameters(), fresh.controller.parameters()))


# -- UniformPolicy ---------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SPACES))
def test_uniform_policy(name):
    space = SPACES[name]
    policy = UniformPolicy(space.decisions)
    n = 1500
    g = gen(0)
    samples = [policy.sample(g) for _ in range(n)]
    assert samples[0].actions == policy.sample(gen(0)).actions
    assert policy.sample(gen(5)).actions == policy.sample(gen(5)).actions
    log_size = sum(math.log(d.num_choices) for d in space.decisions)
    assert samples[0].log_prob.item() == pytest.approx(-log_size)
    assert samples[0].entropy.item() == pytest.approx(log_size)
    chi2, dof = 0.0, 0
    for k, d in enumerate(space.decisions):
        counts = torch.bincount(torch.tensor([s.actions[k] for s in samples]), minlength=d.num_choices)
        assert len(counts) == d.num_choices  # never out of range
        expected = n / d.num_choices
        chi2 += float(((counts - expected) ** 2 / expected).sum())
        dof += d.num_choices - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof)  # about 6 sigma above the chi-square mean
    for s in samples[:20]:
        assert isinstance(space.decode(s.actions), Genotype)
    with pytest.raises(ValueError, match="greedy"):
        policy.sample(g, greedy=True)
    assert policy.state_dict() == {}
    policy.load_state_dict({})
