"""FlatSGD: torch.optim.SGD's steps over views of flat buffers, checkpoints either way, fallbacks."""
import copy

import pytest
import torch
from torch import nn

from enas.flat_sgd import FlatSGD, flattenable
from enas.runtime import sgd
from enas.search.trainer import ChildTrainer
from shared_model.spaces import make_space
from shared_model.supernet import Supernet

OPTIONS = dict(lr=0.1, momentum=0.9, weight_decay=0.05)


def net(seed=0, channels_last=True):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.Conv2d(5, 4, 1), nn.Flatten(), nn.Linear(4 * 4, 3))
    return m.to(memory_format=torch.channels_last) if channels_last else m


def random_grads(model, gen, skip=()):
    # In each parameter's layout, as autograd makes them (torch's fused step assumes that).
    return [None if i in skip else torch.empty_like(p).copy_(torch.randn(p.shape, generator=gen))
            for i, p in enumerate(model.parameters())]


def step_both(model, opt, ref, ref_opt, grads):
    """The same gradients into both models, one step of each optimizer; the parameters then agree
    up to the last bit (the fused kernel rounds its vector body and its scalar tail differently)."""
    set_grads(model, grads), set_grads(ref, grads)
    opt.step(), ref_opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def set_grads(model, grads):
    for p, g in zip(model.parameters(), grads):
        if g is None:
            p.grad = None
        elif p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)  # into the flat buffer's view, as autograd accumulates


@pytest.mark.parametrize("nesterov", [False, True])
def test_steps_equal_torch_sgd(nesterov):
    model, ref = net(), net()
    opt = FlatSGD(list(model.parameters()), nesterov=nesterov, **OPTIONS)
    ref_opt = torch.optim.SGD(ref.parameters(), nesterov=nesterov, fused=True, **OPTIONS)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        step_both(model, opt, ref, ref_opt, random_grads(model, gen))
        assert opt.flat_grad() is not None  # the flat path held: its single fused update ran
    assert all(p.stride() == q.stride() for p, q in zip(model.parameters(), ref.parameters()))


def test_parameters_gradients_and_buffers_are_views_of_three_buffers():
    model = net()
    params = list(model.parameters())
    opt = FlatSGD(params, **OPTIONS)
    total = sum(p.numel() for p in params)
    flats = {}
    for name, get in (("param", lambda p: p), ("grad", lambda p: p.grad),
                      ("momentum", lambda p: opt.state[p]["momentum_buffer"])):
        storages = {get(p).untyped_storage().data_ptr() for p in params}
        assert len(storages) == 1
        flats[name] = storages.pop()
        assert all(get(p).is_contiguous(memory_format=torch.channels_last) for p in params if p.dim() == 4)
    assert len(set(flats.values())) == 3
    assert params[0].untyped_storage().nbytes() == 4 * total
    assert params[0].is_contiguous(memory_format=torch.channels_last)  # the layout survives


def test_checkpoint_round_trip_and_size(tmp_path):
    model = net()
    opt = FlatSGD(list(model.parameters()), nesterov=True, **OPTIONS)
    gen = torch.Generator().manual_seed(2)
    for _ in range(2):
        set_grads(model, random_grads(model, gen))
        opt.step()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
    numel = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    # Shared storage is written once: parameters + BN buffers + momentum, not one copy per view.
    assert path.stat().st_size < 4 * (2 * numel) + 20_000
    state = torch.load(path, weights_only=True)
    other = net(seed=5)
    other_opt = FlatSGD(list(other.parameters()), nesterov=True, **OPTIONS)
    other.load_state_dict(state["model"])
    other_opt.load_state_dict(state["optimizer"])
    assert other_opt.flat_grad() is not None  # loading kept every view
    for _ in range(2):
        grads = random_grads(model, gen)
        set_grads(model, grads), set_grads(other, grads)
        opt.step(), other_opt.step()
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)


def test_loads_a_per_tensor_checkpoint_with_missing_buffers():
    # A checkpoint written by torch.optim.SGD over separate tensors, where one parameter never had a
    # gradient (no buffer): its buffer starts at zero, the others are copied into the flat buffer.
    ref = net()
    ref_opt = torch.optim.SGD(ref.parameters(), foreach=True, **OPTIONS)
    gen = torch.Generator().manual_seed(3)
    set_grads(ref, random_grads(ref, gen, skip={1}))
    ref_opt.step()
    state = copy.deepcopy(ref_opt.state_dict())
    model = net(seed=7)
    model.load_state_dict(ref.state_dict())
    opt = FlatSGD(list(model.parameters()), **OPTIONS)
    opt.load_state_dict(state)
    ref_opt.state[list(ref.parameters())[1]]["momentum_buffer"] = torch.zeros_like(list(ref.parameters())[1])
    step_both(model, opt, ref, ref_opt, random_grads(model, gen))


def test_falls_back_to_torch_sgd_when_the_views_break():
    model, ref = net(), net()
    opt = FlatSGD(list(model.parameters()), **OPTIONS)
    ref_opt = torch.optim.SGD(ref.parameters(), fused=True, **OPTIONS)
    for p in ref.parameters():
        ref_opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    gen = torch.Generator().manual_seed(4)
    # Gradients set to None and recreated by autograd (optim.update_off_path off): some None.
    opt.zero_grad(set_to_none=True)
    step_both(model, opt, ref, ref_opt, random_grads(model, gen, skip={0, 3}))
    assert opt.flat_grad() is None  # that step was torch's per-tensor one
    # Data moved out of the buffer (a memory-format change after the optimizer was built).
    model.to(memory_format=torch.contiguous_format), ref.to(memory_format=torch.contiguous_format)
    assert not opt.is_flat() and not opt.attach_grads()
    step_both(model, opt, ref, ref_opt, random_grads(model, gen))


def test_sgd_builds_it_only_where_it_applies():
    assert isinstance(sgd(list(net().parameters()), nesterov=False, **OPTIONS), FlatSGD)
    assert not isinstance(sgd(list(net().parameters()), nesterov=False, flat=False, **OPTIONS), FlatSGD)
    mixed = [nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2, dtype=torch.float64))]
    assert not flattenable(mixed) and not isinstance(sgd(mixed, nesterov=False, **OPTIONS), FlatSGD)
    strided = nn.Parameter(torch.ones(4, 6)[:, ::2])
    assert not flattenable([strided]) and not flattenable([nn.Parameter(torch.ones(2), requires_grad=False)])


def test_a_parameter_frozen_later_is_left_alone():
    model = net()
    opt = FlatSGD(list(model.parameters()), **OPTIONS)
    frozen = list(model.parameters())[0]
    others = list(model.parameters())[1:]
    frozen.requires_grad_(False)
    assert opt.flat_grad() is None  # its gradient is still a zero view: weight decay would move it
    opt.zero_grad(set_to_none=False)
    assert frozen.grad is None and all(p.grad is not None for p in others)
    before, moved = frozen.detach().clone(), [p.detach().clone() for p in others]
    opt.step()
    # The others decay (those that are not all zero, as a fresh BN bias is).
    assert torch.equal(frozen, before) and all(not torch.equal(p, b) for p, b in zip(others, moved) if b.any())


def trainer_pair(update_off_path, grad_clip):
    out = []
    for flat in (True, False):
        torch.manual_seed(0)
        space = make_space("micro", num_nodes=3)
        model = Supernet(space.ops, space.num_nodes, 4, 3, 10, image_size=8)
        opt = sgd(list(model.parameters()), nesterov=True, flat=flat, **OPTIONS)
        assert isinstance(opt, FlatSGD) == flat
        out.append((model, ChildTrainer(model, opt, torch.device("cpu"), grad_clip=grad_clip, amp="off",
                                        update_off_path=update_off_path)))
    return space, out


@pytest.mark.parametrize("update_off_path", [True, False])
def test_trainer_steps_match_the_per_tensor_optimizer(update_off_path):
    # Clipping active (norm > 0.05): the flat norm and scaling equal clip_grad_norm_'s.
    space, ((model, trainer), (ref, ref_trainer)) = trainer_pair(update_off_path, grad_clip=0.05)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    for _ in range(3):
        genotype = space.decode(space.random_actions(gen))
        a, b = trainer.train_step(x, y, genotype), ref_trainer.train_step(x, y, genotype)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5) and a["grad_norm"] > 0.05
        assert (trainer.optimizer.flat_grad() is not None) == update_off_path
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_trainer_returns_to_the_flat_path_after_a_skipped_step():
    space, ((model, trainer), _) = trainer_pair(True, grad_clip=None)
    genotype = space.decode(space.random_actions(torch.Generator().manual_seed(2)))
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    assert trainer.train_step(torch.full_like(x, float("nan")), y, genotype)["skipped"] == 1.0
    assert all(p.grad is None for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train_step(x, y, genotype)
    assert trainer.optimizer.flat_grad() is not None
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
