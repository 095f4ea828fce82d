"""ChildTrainer: off-path weight decay and momentum, clipping and skipped steps (ENAS Sec. 2.2)."""
import copy

import pytest
import torch

from enas.runtime import sgd
from enas.search.trainer import ChildTrainer
from shared_model.spaces import make_space
from shared_model.supernet import Supernet

LR, WD, MOMENTUM = 0.1, 0.05, 0.9


def setup(update_off_path, nesterov=False, grad_clip=None, seed=0):
    torch.manual_seed(seed)
    space = make_space("micro", num_nodes=3)
    model = Supernet(space.ops, space.num_nodes, 4, 3, 10, image_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=nesterov, weight_decay=WD)
    trainer = ChildTrainer(model, opt, torch.device("cpu"), grad_clip=grad_clip, amp="off",
                           update_off_path=update_off_path)
    genotype = space.decode(space.random_actions(torch.Generator().manual_seed(seed)))
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    return model, trainer, genotype, x, y


def off_path_names(model, trainer, genotype, x, y):
    """Parameters the sampled architecture does not reach (no gradient from its loss)."""
    model.zero_grad(set_to_none=True)
    trainer.loss(x, y, genotype)[0].backward()
    names = [n for n, p in model.named_parameters() if p.grad is None]
    model.zero_grad(set_to_none=True)
    return names


@pytest.mark.parametrize("nesterov", [False, True])
def test_off_path_weights_decay_with_momentum_by_default(nesterov):
    model, trainer, genotype, x, y = setup(True, nesterov=nesterov)
    off = off_path_names(model, trainer, genotype, x, y)
    assert len(off) > 50
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in off}
    trainer.train_step(x, y, genotype)
    # First step: the momentum buffer is the decayed gradient wd * w itself, so plain
    # momentum moves by -lr wd w and Nesterov by -lr (1 + m) wd w.
    factor = 1 + MOMENTUM if nesterov else 1.0
    for n in off:
        torch.testing.assert_close(params[n].detach(), before[n] * (1 - LR * factor * WD), rtol=1e-6, atol=1e-7)
    # Second step: the buffer carries momentum, b2 = m b1 + wd w1.
    w1 = {n: params[n].detach().clone() for n in off}
    trainer.train_step(x, y, genotype)
    for n in off:
        b1 = WD * before[n]
        b2 = MOMENTUM * b1 + WD * w1[n]
        step = WD * w1[n] + MOMENTUM * b2 if nesterov else b2
        torch.testing.assert_close(params[n].detach(), w1[n] - LR * step, rtol=1e-5, atol=1e-7)


def test_off_path_weights_stay_put_when_disabled():
    model, trainer, genotype, x, y = setup(False)
    off = off_path_names(model, trainer, genotype, x, y)
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in off}
    on_before = {n: p.detach().clone() for n, p in params.items() if n not in before}
    trainer.train_step(x, y, genotype)
    assert all(torch.equal(params[n], before[n]) for n in off)
    assert all(trainer.optimizer.state.get(params[n]) in (None, {}) for n in off)
    assert any(not torch.equal(params[n], w) for n, w in on_before.items())


def test_clip_norm_and_on_path_step_do_not_depend_on_the_option():
    results = []
    for flag in (True, False):
        model, trainer, genotype, x, y = setup(flag, grad_clip=0.05)
        off = set(off_path_names(model, trainer, genotype, x, y))
        stats = trainer.train_step(x, y, genotype)
        on = {n: p.detach().clone() for n, p in model.named_parameters() if n not in off}
        results.append((stats, on))
    (s1, on1), (s2, on2) = results
    assert s1["grad_norm"] == pytest.approx(s2["grad_norm"], rel=1e-6) and s1["grad_norm"] > 0.05
    assert on1.keys() == on2.keys()
    for n in on1:
        torch.testing.assert_close(on1[n], on2[n], rtol=1e-6, atol=1e-7)


def test_non_finite_step_is_skipped_for_every_parameter():
    model, trainer, genotype, x, y = setup(True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = trainer.train_step(torch.full_like(x, float("nan")), y, genotype)
    assert stats["skipped"] == 1.0 and trainer.nonfinite_total == 1
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())
    # The next finite step materialises zero gradients again and decays off-path weights.
    off = off_path_names(model, trainer, genotype, x, y)
    trainer.train_step(x, y, genotype)
    p = dict(model.named_parameters())[off[0]]
    torch.testing.assert_close(p.detach(), before[off[0]] * (1 - LR * WD), rtol=1e-6, atol=1e-7)


def test_frozen_parameters_are_left_alone():
    model, trainer, genotype, x, y = setup(True)
    frozen = next(p for n, p in model.named_parameters() if n.startswith("classifier"))
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    trainer.train_step(x, y, genotype)
    assert frozen.grad is None and torch.equal(frozen, before)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("update_off_path", [False, True])
def test_fused_sgd_takes_torch_sgd_steps_when_paths_change(nesterov, update_off_path):
    # Different architectures each step: without off-path updates some parameters get their
    # first gradient after others hold momentum buffers (torch's own fused step fails there).
    # Each step starts from the reference's weights and optimizer state, loaded as from a
    # checkpoint (which holds buffers only for the parameters that had gradients so far):
    # trajectories themselves drift apart by round-off, the steps must not.
    model, trainer, _, x, y = setup(update_off_path, nesterov=nesterov)
    ref_model, ref_trainer, *_ = setup(update_off_path, nesterov=nesterov)
    trainer.optimizer = sgd(list(model.parameters()), lr=LR, momentum=MOMENTUM, nesterov=nesterov, weight_decay=WD)
    assert trainer.optimizer.defaults["fused"]
    space = make_space("micro", num_nodes=3)
    gen = torch.Generator().manual_seed(1)
    partial = False
    for step in range(4):
        if step:
            state = copy.deepcopy(ref_trainer.optimizer.state_dict())  # as from a file: no tensors shared
            partial |= len(state["state"]) < len(list(model.parameters()))
            trainer.optimizer.load_state_dict(state)
            assert all(g["fused"] for g in trainer.optimizer.param_groups)  # not the writer's foreach
            model.load_state_dict(ref_model.state_dict())
        genotype = space.decode(space.random_actions(gen))
        trainer.train_step(x, y, genotype), ref_trainer.train_step(x, y, genotype)
        for p, q in zip(model.parameters(), ref_model.parameters()):
            assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)
    assert partial != update_off_path
    # And on its own state, without loading: 4 more steps (round-off drift only).
    for _ in range(4):
        genotype = space.decode(space.random_actions(gen))
        trainer.train_step(x, y, genotype), ref_trainer.train_step(x, y, genotype)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.allclose(p, q, rtol=1e-3, atol=1e-5)


def test_sgd_without_momentum_takes_the_multi_tensor_step():
    p = torch.nn.Parameter(torch.ones(3))
    opt = sgd([p], lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0)
    assert not opt.defaults.get("fused") and opt.defaults["foreach"]
    p.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(p, torch.full((3,), 0.9))
