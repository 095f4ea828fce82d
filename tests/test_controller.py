"""Tests for controller/: the ENAS LSTM policy, its official sampling order and the uniform policy
(REINFORCE and TFAdam: tests/test_reinforce.py)."""
import copy
import math

import pytest
import torch

from controller import Controller, Reinforce, Sample, UniformPolicy
from controller_helpers import SPACES, gen, make_controller, op_positions
from shared_model.genotype import Genotype
from shared_model.spaces import Decision, make_space


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


@pytest.mark.cuda
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


# -- Independent transcription of the official sampling order -------------------------
def _official_micro_sampler(ctrl, num_nodes, interleaved=False, generator=None, forced=None):
    """Step-by-step re-reading of melodyguan/enas ``micro_controller.py`` ``_build_sampler``.

    Written from the official loop, not from ``Controller._run``; it only reads the
    controller's weights. Per cell: two LSTM steps on ``g_emb`` give the keys of the two
    cell inputs (their values are zeros); per node: input a, input b (attention), op a,
    op b, then one more step whose output is the node's anchor; the reduction cell
    continues the LSTM state and gets no fixed op prior. ``interleaved=True`` visits
    input a, op a, input b, op b instead (the arc's storage order): a deliberately
    wrong transcription that the controller must not match.

    Returns:
        actions in arc order (``in_a op_a in_b op_b`` per node, normal then reduce), log-prob.
    """
    hidden = ctrl.hidden
    w_ih, w_hh = ctrl.lstm[0].weight_ih, ctrl.lstm[0].weight_hh  # (4H, H), PyTorch gates i, f, g, o

    def lstm(x, h, c):
        i, f, g, o = (x @ w_ih.t() + h @ w_hh.t()).split(hidden, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    step_counter = iter(range(10**6))

    def choose(logits):
        t = next(step_counter)
        log_p = logits.log_softmax(dim=1)[0]
        if forced is not None:
            a = forced[t]
        else:
            a = int(torch.multinomial(logits.softmax(dim=1), 1, generator=generator))
        return a, log_p[a]

    h = c = torch.zeros(1, hidden)
    actions, log_prob = [], torch.zeros(())
    order_positions = []  # arc position of each visited decision, in visiting order
    for cell, use_prior in (("normal", True), ("reduce", False)):
        arc = [None] * (4 * num_nodes)
        x = ctrl.g_emb
        anchors, keys = [], []
        for _ in range(2):
            h, c = lstm(x, h, c)
            anchors.append(torch.zeros_like(h))
            keys.append(h @ ctrl.w_attn_1)

        def pick_input(x, h, c, layer_id):
            h, c = lstm(x, h, c)
            scores = torch.tanh(torch.cat(keys[:layer_id], dim=0) + h @ ctrl.w_attn_2) @ ctrl.v_attn
            logits = ctrl.tanh_constant * torch.tanh(scores.reshape(1, layer_id))
            a, lp = choose(logits)
            return a, lp, anchors[a], h, c

        def pick_op(x, h, c):
            h, c = lstm(x, h, c)
            logits = (ctrl.tanh_constant / ctrl.op_tanh_reduce) * torch.tanh(h @ ctrl.w_soft + ctrl.b_soft)
            if use_prior:
                logits = logits + ctrl.normal_op_prior
            a, lp = choose(logits)
            return a, lp, ctrl.w_emb[a].unsqueeze(0), h, c

        for node in range(num_nodes):
            layer_id = node + 2
            base = 4 * node
            if interleaved:
                visits = [("in", base), ("op", base + 1), ("in", base + 2), ("op", base + 3)]
            else:
                visits = [("in", base), ("in", base + 2), ("op", base + 1), ("op", base + 3)]
            for kind, pos in visits:
                if kind == "in":
                    a, lp, x, h, c = pick_input(x, h, c, layer_id)
                else:
                    a, lp, x, h, c = pick_op(x, h, c)
                arc[pos] = a
                log_prob = log_prob + lp
                order_positions.append(len(actions) + pos)
            h, c = lstm(x, h, c)  # the node's anchor step
            anchors.append(h)
            keys.append(h @ ctrl.w_attn_1)
            x = ctrl.g_emb
        actions += arc
    return actions, log_prob, order_positions


def _in_visit_order(actions, positions):
    return [actions[p] for p in positions]


def test_controller_matches_an_independent_transcription_of_the_official_order():
    space = make_space("micro")
    # Wide initial weights: at the official U(-0.1, 0.1) the logits hardly depend on the LSTM
    # state, so a wrong visiting order would change log-probs by only ~1e-4.
    ctrl = make_controller(space, seed=3, init_range=1.0)
    # The official controller has no temperature on CIFAR; the transcription has none either.
    assert ctrl.temperature is None and ctrl.num_layers == 1
    with torch.no_grad():
        for seed in range(4):
            # Same generator, same draws: only the same visiting order gives the same actions.
            sample = ctrl.sample(gen(seed))
            ours, lp_ours, order = _official_micro_sampler(ctrl, space.num_nodes, generator=gen(seed))
            assert sample.actions == ours
            assert sample.log_prob.item() == pytest.approx(lp_ours.item(), abs=1e-5)
            # Teacher forcing: official-order log-prob of the controller's actions equals its own.
            forced = _in_visit_order(sample.actions, order)
            _, lp_forced, _ = _official_micro_sampler(ctrl, space.num_nodes, forced=forced)
            assert ctrl.log_prob(sample.actions)[0].item() == pytest.approx(lp_forced.item(), abs=1e-5)
            # The deliberately wrong order (in, op, in, op) scores the same actions differently.
            _, _, wrong_order = _official_micro_sampler(ctrl, space.num_nodes, interleaved=True,
                                                        forced=[0] * len(sample.actions))
            _, lp_wrong, _ = _official_micro_sampler(ctrl, space.num_nodes, interleaved=True,
                                                     forced=_in_visit_order(sample.actions, wrong_order))
            assert abs(lp_wrong.item() - sample.log_prob.item()) > 0.1
        # Under a shared generator the wrong order also draws other architectures.
        wrong = [_official_micro_sampler(ctrl, space.num_nodes, interleaved=True, generator=gen(s))[0]
                 for s in range(4)]
        assert any(w != ctrl.sample(gen(s)).actions for s, w in enumerate(wrong))


# -- UniformPolicy without replacement (DARTS space, Li & Talwalkar) ------------------
def test_uniform_policy_draws_distinct_inputs_with_exact_log_prob():
    space = make_space("darts")
    assert space.distinct_inputs and not make_space("micro").distinct_inputs
    policy = UniformPolicy(space.decisions, distinct_inputs=True)
    # First input: n = node + 2 choices; second: the n - 1 others; ops: the 7 non-none ops.
    expected = sum(math.log(d.num_choices - (d.kind == "input" and d.slot == 1)) for d in space.decisions)
    n = 3000
    g = gen(0)
    samples = [policy.sample(g) for _ in range(n)]
    assert samples[0].log_prob.item() == pytest.approx(-expected)
    assert samples[0].entropy.item() == pytest.approx(expected)
    assert policy.log_prob(samples[1].actions)[0].item() == pytest.approx(-expected)
    ds = space.decisions
    chi2, dof = 0.0, 0
    for k in range(0, len(ds), 4):  # in_a, op_a, in_b, op_b of one node
        m = ds[k].num_choices
        pairs = [(s.actions[k], s.actions[k + 2]) for s in samples]
        assert all(a != b for a, b in pairs)
        # Every ordered pair of distinct inputs is equally likely: 1 / (m (m - 1)).
        counts = torch.bincount(torch.tensor([a * m + b for a, b in pairs]), minlength=m * m).float()
        cells = torch.tensor([a * m + b for a in range(m) for b in range(m) if a != b])
        observed, want = counts[cells], n / (m * (m - 1))
        chi2 += float(((observed - want) ** 2 / want).sum())
        dof += len(cells) - 1
        assert counts.sum() == observed.sum()
    assert chi2 < dof + 6 * math.sqrt(2 * dof)
    assert all(space.decode(s.actions) for s in samples[:20])
    bad = list(samples[0].actions)
    bad[2] = bad[0]
    with pytest.raises(ValueError, match="repeats"):
        policy.log_prob(bad)
    # The space's own uniform draw follows the same rule.
    acts = space.random_actions(gen(1))
    assert all(acts[k] != acts[k + 2] for k in range(0, len(acts), 4))
    assert space.size() == math.prod(d.num_choices - (d.kind == "input" and d.slot == 1) for d in ds)
