"""Tests for controller/: REINFORCE (EMA baseline, entropy bonus, resume) and TFAdam."""
import copy
import io
import math

import pytest
import torch

from controller import Reinforce, TFAdam
from controller_helpers import SPACES, gen, make_controller, op_positions
from shared_model.spaces import make_space


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


# -- TFAdam ------------------------------------------------------------------------
def _tf_adam_by_hand(w, grads, lr, beta1, beta2, eps):
    """tf.train.AdamOptimizer written out in float64 (bias corrections in the step size)."""
    w, m, v = [float(x) for x in w], [0.0] * len(w), [0.0] * len(w)
    out = []
    for t, g in enumerate(grads, start=1):
        lr_t = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        for k in range(len(w)):
            m[k] = beta1 * m[k] + (1 - beta1) * g[k]
            v[k] = beta2 * v[k] + (1 - beta2) * g[k] ** 2
            w[k] -= lr_t * m[k] / (math.sqrt(v[k]) + eps)
        out.append(list(w))
    return out


@pytest.mark.parametrize("beta1", [0.0, 0.9])
def test_tf_adam_follows_the_tensorflow_formula(beta1):
    grads = [[0.5, -2.0, 1e-4], [0.1, 3.0, -1e-4], [-0.7, 0.0, 2e-4], [0.2, -1.0, 0.0], [1.0, 1.0, 1.0]]
    p = torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64))
    opt = TFAdam([p], lr=0.0035, betas=(beta1, 0.999), eps=1e-3)
    expected = _tf_adam_by_hand(p.tolist(), grads, 0.0035, beta1, 0.999, 1e-3)
    for g, want in zip(grads, expected):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        assert p.tolist() == pytest.approx(want, rel=1e-12, abs=1e-15)
    # PyTorch's Adam with the same eps is a different optimizer (eps on the corrected sqrt(v)).
    q = torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64))
    torch_adam = torch.optim.Adam([q], lr=0.0035, betas=(beta1, 0.999), eps=1e-3)
    q.grad = torch.tensor(grads[0], dtype=torch.float64)
    torch_adam.step()
    assert q.tolist() != pytest.approx(expected[0], rel=1e-6)


def test_tf_adam_checkpoint_resumes_exactly_and_loads_torch_adam_state():
    def run(opt_cls, p, steps, state=None):
        opt = opt_cls([p], lr=0.01, betas=(0.0, 0.999), eps=1e-3)
        if state is not None:
            opt.load_state_dict(state)
        for k in steps:
            p.grad = torch.full_like(p, 0.1 * (k + 1))
            opt.step()
        return opt
    full = torch.nn.Parameter(torch.ones(3))
    run(TFAdam, full, range(4))
    half = torch.nn.Parameter(torch.ones(3))
    buf = io.BytesIO()
    torch.save(run(TFAdam, half, range(2)).state_dict(), buf)
    buf.seek(0)
    run(TFAdam, half, range(2, 4), torch.load(buf, weights_only=True))
    assert torch.equal(full, half)
    # Same state names as torch.optim.Adam: an older checkpoint's controller Adam state loads.
    p = torch.nn.Parameter(torch.ones(3))
    state = run(torch.optim.Adam, p, range(2)).state_dict()
    opt = run(TFAdam, p, range(2, 3), state)
    assert float(opt.state[p]["step"]) == 3.0
