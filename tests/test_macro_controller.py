"""The ENAS macro controller (official general_controller.py, search_whole_channels) and its skip penalty."""
import copy
import math

import pytest
import torch

from controller import ExtraLoss, MacroController, Reinforce, UniformPolicy
from controller.macro import plan_layers
from shared_model.spaces import Decision, get_space


def gen(seed):
    return torch.Generator().manual_seed(seed)


def make(layers=4, seed=0, **kw):
    torch.manual_seed(seed)
    space = get_space("macro", num_layers=layers)
    return space, MacroController(space.decisions, len(space.policy_ops), **kw)


def bernoulli_kl(p, target):
    return p * math.log(p / target) + (1 - p) * math.log((1 - p) / (1 - target))


def official_sampler(ctrl, layers, generator=None, forced=None):
    """The official sampler written out one sample, one layer and one bit at a time.

    Returns the arc, its log-probability and the official skip penalty (mean over layers
    1..L-1 of the summed KL(sigmoid(logit) || target) of the layer's bits).
    """
    c, target = ctrl.tanh_constant, ctrl.skip_target
    h = cell = torch.zeros(1, ctrl.hidden)
    x, arc, log_prob, penalties, anchors = ctrl.g_emb, [], 0.0, [], []
    draws = iter(forced or [])

    def draw(logits):
        p = logits.softmax(dim=1)
        a = next(draws) if forced is not None else int(torch.multinomial(p, 1, generator=generator))
        return a, math.log(float(p[0, a]))

    for j in range(layers):
        h, cell = ctrl.lstm[0](x, (h, cell))
        a, lp = draw(c * torch.tanh(h @ ctrl.w_soft))
        arc.append(a)
        log_prob += lp
        h, cell = ctrl.lstm[0](ctrl.w_emb[a].unsqueeze(0), (h, cell))
        if j > 0:
            bits, kl = [], 0.0
            for anchor in anchors:
                q = float(torch.tanh(anchor @ ctrl.w_attn_1 + h @ ctrl.w_attn_2) @ ctrl.v_attn)
                logits = c * torch.tanh(torch.tensor([[-q, q]]))
                b, lp = draw(logits)
                bits.append(b)
                log_prob += lp
                kl += bernoulli_kl(1 / (1 + math.exp(-float(logits[0, 1]))), target)
            arc += bits
            penalties.append(kl)
            x = sum(b * a for b, a in zip(bits, anchors)) / (1.0 + sum(bits))
            if not torch.is_tensor(x):
                x = torch.zeros(1, ctrl.hidden)
        else:
            x = ctrl.g_emb
        anchors.append(h)
    return arc, log_prob, sum(penalties) / max(1, len(penalties))


def test_sampler_matches_an_independent_transcription_of_the_official_sampler():
    # Wide weights: at U(-0.1, 0.1) the logits hardly depend on what is fed back.
    space, ctrl = make(layers=5, seed=2, init_range=1.0)
    with torch.no_grad():
        for seed in range(4):
            sample = ctrl.sample(gen(seed))
            arc, lp, penalty = official_sampler(ctrl, 5, generator=gen(seed))
            assert sample.actions == arc  # same draws in the same order
            assert sample.log_prob.item() == pytest.approx(lp, abs=1e-4)
            assert sample.extras["skip_kl"].item() == pytest.approx(penalty, abs=1e-5)
            assert sample.extras["skip_rate"].item() == pytest.approx(space.decode(arc).skip_count() / 10)
        # Teacher forcing the official way scores the controller's actions as the controller does.
        _, lp_forced, _ = official_sampler(ctrl, 5, forced=sample.actions)
        assert lp_forced == pytest.approx(ctrl.log_prob(sample.actions)[0].item(), abs=1e-4)


def test_sampled_log_prob_entropy_and_penalty_equal_teacher_forced_rescoring():
    space, ctrl = make(layers=6)
    samples = ctrl.sample_batch(5, gen(1))
    assert all(len(s.actions) == len(space.decisions) == 6 + 15 for s in samples)
    assert all(space.contains(space.decode(s.actions)) for s in samples)
    log_prob, entropy, extras = ctrl.score(torch.tensor([s.actions for s in samples]))
    assert torch.allclose(log_prob, torch.stack([s.log_prob for s in samples]), atol=1e-5)
    assert torch.allclose(entropy, torch.stack([s.entropy for s in samples]), atol=1e-5)
    for key in ("skip_kl", "skip_rate"):
        assert torch.allclose(extras[key], torch.stack([s.extras[key] for s in samples]), atol=1e-6)
    one, _ = ctrl.log_prob(samples[0].actions)
    assert one.item() == pytest.approx(samples[0].log_prob.item(), abs=1e-5)
    other = list(samples[0].actions)
    other[2] = 1 - other[2]  # layer 1's skip bit
    assert ctrl.log_prob(other)[0].item() != pytest.approx(one.item(), abs=1e-6)
    # Entropy: the exact one, at most log 6 per layer and log 2 per bit.
    assert 0 < samples[0].entropy.item() < 6 * math.log(6) + 15 * math.log(2)


def test_skip_penalty_against_a_hand_computation():
    # v_attn = 0 makes every skip logit 0, so every skip probability is sigmoid(0) = 0.5, and
    # KL(0.5 || 0.4) = 0.5 ln(0.5 / 0.4) + 0.5 ln(0.5 / 0.6) = 0.0204110...
    kl = 0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.6)
    assert kl == pytest.approx(0.020411, abs=1e-6)
    for layers, expected in ((2, kl), (3, (kl + 2 * kl) / 2), (4, (1 + 2 + 3) * kl / 3)):
        _, ctrl = make(layers=layers)
        with torch.no_grad():
            ctrl.v_attn.zero_()
        s = ctrl.sample(gen(0))
        assert s.extras["skip_kl"].item() == pytest.approx(expected, abs=1e-6)
    # Nonzero logits: the transcription test checks p = sigmoid(1.5 tanh(q)) bit by bit (the official
    # skip_prob, not the sampling probability sigmoid(2 * 1.5 tanh(q))).


def test_reinforce_adds_the_weighted_penalty_to_each_sample_loss():
    _, ctrl = make(layers=4)
    trainer = Reinforce(ctrl, lr=0.0, samples_per_update=3, baseline_decay=0.9, entropy_weight=0.0,
                        loss_terms={"skip_penalty": ExtraLoss("skip_kl", 0.8)})
    rewards = iter([0.2, 0.5, 0.1])
    seen = []

    def reward_fn(actions):
        seen.append(actions)
        return next(rewards)

    before = copy.deepcopy(ctrl)
    out = trainer.update(reward_fn, gen(0))
    b, losses, penalties = 0.0, [], []
    for actions, r in zip(seen, (0.2, 0.5, 0.1)):
        lp, _, extras = before.score(torch.tensor([actions]))
        b -= (1 - 0.9) * (b - r)
        penalties.append(0.8 * extras["skip_kl"][0])
        losses.append(-lp[0] * (r - b) + penalties[-1])
    expected = torch.stack(losses).mean()
    assert out["loss"] == pytest.approx(expected.item(), abs=1e-5)
    assert out["skip_penalty"] == pytest.approx(torch.stack(penalties).mean().item(), abs=1e-6)
    assert out["skip_kl"] == pytest.approx(out["skip_penalty"] / 0.8, abs=1e-6)
    assert 0.0 <= out["skip_rate"] <= 1.0
    expected.backward()
    for p, q in zip(ctrl.parameters(), before.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    # The penalty alone pulls the skip probabilities towards the target: its gradient is not zero.
    assert before.w_attn_1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no 'bogus'"):
        Reinforce(ctrl, loss_terms={"x": ExtraLoss("bogus", 1.0)}).update(lambda a: 0.5, gen(0))


def test_penalty_gradient_lowers_the_penalty():
    # A constant reward with baseline decay 0 (b = R, no advantage): only the penalty moves the policy.
    _, ctrl = make(layers=5, seed=1)
    with torch.no_grad():
        ctrl.v_attn.fill_(-0.6)  # skip logits start away from the target
        ctrl.w_attn_1.fill_(0.1)
    fixed = torch.tensor([s.actions for s in ctrl.sample_batch(8, gen(1))])
    before = ctrl.score(fixed)[2]["skip_kl"].mean().item()
    trainer = Reinforce(ctrl, lr=0.01, samples_per_update=4, entropy_weight=0.0, baseline_decay=0.0,
                        loss_terms={"skip_penalty": ExtraLoss("skip_kl", 0.8)})
    g = gen(0)
    for _ in range(5):
        trainer.update(lambda a: 1.0, g)
    assert ctrl.score(fixed)[2]["skip_kl"].mean().item() < 0.7 * before


def test_gradient_reaches_every_parameter_and_greedy_is_deterministic():
    _, ctrl = make(layers=4, seed=1)
    s = ctrl.sample(gen(0))
    (s.log_prob + s.extras["skip_kl"]).backward()
    for name, p in ctrl.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert ctrl.sample(greedy=True).actions == ctrl.sample(greedy=True).actions
    assert "skip_targets" in ctrl.state_dict()


def test_plan_validation_and_the_micro_controller_refuses_skips():
    space = get_space("macro", num_layers=3)
    assert plan_layers(space.decisions) == [(0, []), (1, [2]), (3, [4, 5])]
    d = list(space.decisions)
    for bad, match in ((d[:3] + d[4:], "skip bit 1 of layer 1"), (d[1:], "op of layer 0"),
                       (d[:-1], "layer 2 needs 2 skip"),
                       ([d[0], Decision("network", 1, 0, "op", 6), Decision("network", 1, 0, "skip", 3)],
                        "2 choices")):
        with pytest.raises(ValueError, match=match):
            MacroController(bad, 6)
    with pytest.raises(ValueError, match="cell 'other'"):
        MacroController(d + [Decision("other", 0, 0, "op", 6)], 6)
    with pytest.raises(ValueError, match="skip_target"):
        MacroController(d, 6, skip_target=1.0)
    with pytest.raises(ValueError, match="op decision 0 has 6 choices but num_ops is 5"):
        MacroController(d, 5)
    # Uniform over ops and skip bits: log-prob is the constant -(L log 6 + L(L-1)/2 log 2).
    u = UniformPolicy(space.decisions)
    s = u.sample(gen(0))
    assert s.log_prob.item() == pytest.approx(-(3 * math.log(6) + 3 * math.log(2)))
    assert space.contains(space.decode(s.actions))
