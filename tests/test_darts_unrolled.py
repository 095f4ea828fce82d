"""DARTS second order (enas/search/unrolled.py): the finite-difference Hessian-vector product,
the unrolled architecture gradient on per-tensor and flat SGD buffers, frozen weights, precision."""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from darts_helpers import Batches, _one_thread, make_strategy, train_one_weight_step  # noqa: F401 (autouse fixture)
from torch.func import functional_call

import enas.search.darts as darts_module
from enas.flat_sgd import FlatSGD
from enas.search.darts import finite_difference_hvp, weights_frozen


# -- second order ------------------------------------------------------------
def test_finite_difference_hvp_matches_autograd_on_an_mlp():
    torch.manual_seed(0)
    w1 = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.randint(3, (10,))

    def loss():
        h = torch.tanh((x * torch.softmax(alpha, 0)) @ w1.t())  # (10, 6)
        return F.cross_entropy(h @ w2.t(), y)

    v = [torch.randn_like(w1), torch.randn_like(w2)]
    before = [w1.detach().clone(), w2.detach().clone()]
    approx = finite_difference_hvp(loss, [w1, w2], [alpha], v, r=1e-3)[0]
    g = torch.autograd.grad(loss(), [w1, w2], create_graph=True)
    exact = torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, v)), alpha)[0]
    # The perturbation has norm r, so the product is of v / ||v||, rescaled by ||v||.
    assert torch.allclose(approx, exact, rtol=1e-4, atol=1e-8)
    assert torch.equal(w1, before[0]) and torch.equal(w2, before[1])
    zero = finite_difference_hvp(loss, [w1, w2], [alpha], [torch.zeros_like(w1), torch.zeros_like(w2)])
    assert torch.equal(zero[0], torch.zeros_like(alpha))


def test_finite_difference_hvp_matches_autograd_on_the_supernet():
    # float64 and a small r: ReLU and max-pool kinks make the gradient in alpha jump as w moves,
    # so on a network this tiny only a perturbation that crosses no kink matches autograd.
    s = make_strategy(dtype=torch.float64)
    params = list(s.model.parameters())
    alphas = list(s.arch.parameters())
    batches = Batches(1, 5, dtype=torch.float64)
    x, y = batches.x[0], batches.y[0]

    def loss():
        return F.cross_entropy(s.model(x, s.arch.mixed())[0], y)

    v = [torch.randn_like(p) * 0.1 for p in params]
    approx = finite_difference_hvp(loss, params, alphas, v, r=1e-6)
    g = torch.autograd.grad(loss(), params, create_graph=True, allow_unused=True)
    dot = sum((gi * vi).sum() for gi, vi in zip(g, v) if gi is not None)
    exact = torch.autograd.grad(dot, alphas)
    a, e = torch.cat([t.flatten() for t in approx]), torch.cat([t.flatten() for t in exact])
    assert (a - e).norm() < 1e-2 * e.norm()


def unrolled_val_loss(s, x, y, xv, yv, alphas=None):
    """L_val(w - eta (mom * buf + grad_w L_train + wd w), alpha) by exact autograd."""
    names, params = zip(*s.model.named_parameters())
    group = s.trainer.optimizer.param_groups[0]
    mixed = s.arch.mixed()
    loss_t = F.cross_entropy(s.model(x, mixed)[0], y)
    grads = torch.autograd.grad(loss_t, params, create_graph=True, allow_unused=True)
    new = {}
    for n, p, g in zip(names, params, grads):
        g = torch.zeros_like(p) if g is None else g
        buf = s.trainer.optimizer.state[p]["momentum_buffer"]
        new[n] = p - group["lr"] * (group["momentum"] * buf + g + group["weight_decay"] * p)
    return F.cross_entropy(functional_call(s.model, new, (xv, mixed))[0], yv)


@pytest.mark.parametrize("flat", [False, True])
def test_second_order_gradient_matches_exact_unrolled_gradient_and_restores_weights(flat):
    s = make_strategy(order=2, dtype=torch.float64, unrolled_r=1e-6, flat=flat)
    assert isinstance(s.trainer.optimizer, FlatSGD) == flat
    train_one_weight_step(s)
    x, y = s.train_loader.x[0], s.train_loader.y[0]
    xv, yv = s.valid_loader.x[0], s.valid_loader.y[0]
    weights = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    bufs = [s.trainer.optimizer.state[p]["momentum_buffer"].clone() for p in s.model.parameters()]
    grads, _, _ = s.arch_grads(x, y, xv, yv)
    for n, p in s.model.named_parameters():
        assert torch.equal(p, weights[n]), f"{n} not restored exactly"
    for p, b in zip(s.model.parameters(), bufs):
        assert torch.equal(s.trainer.optimizer.state[p]["momentum_buffer"], b)
    exact = torch.autograd.grad(unrolled_val_loss(s, x, y, xv, yv), list(s.arch.parameters()))
    a, e = torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in exact])
    assert F.cosine_similarity(a, e, dim=0) > 0.98
    # The second-order correction is not negligible here, so this also checks its sign.
    first = torch.cat([g.flatten() for g in torch.autograd.grad(
        F.cross_entropy(s.model(xv, s.arch.mixed())[0], yv), list(s.arch.parameters()))])
    assert (a - e).norm() < (first - e).norm()


def test_second_order_on_flat_buffers_equals_the_per_tensor_path():
    # Same weights, momentum and batches: the flat virtual step and finite differences give the
    # per-tensor path's architecture gradient (round-off apart) and restore the same weights.
    out = []
    for flat in (False, True):
        s = make_strategy(order=2, dtype=torch.float64, flat=flat)
        train_one_weight_step(s)
        x, y, xv, yv = s.train_loader.x[0], s.train_loader.y[0], s.valid_loader.x[0], s.valid_loader.y[0]
        grads, loss_v, _ = s.arch_grads(x, y, xv, yv)
        if flat:
            assert s.trainer.optimizer.covers([p for p, _ in s._weight_params()])
        out.append((torch.cat([g.flatten() for g in grads]), loss_v.detach(),
                    [p.detach().clone() for p in s.model.parameters()]))
    (g0, l0, w0), (g1, l1, w1) = out
    # eps = r / |v| takes |v| in float32: one norm of the flat vector against a norm of per-tensor
    # norms differ in the last float32 bits, and the central difference moves with eps (1e-7).
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l1, l0, rtol=1e-12, atol=0.0)
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-15) for a, b in zip(w0, w1))


@pytest.mark.parametrize("order", [1, 2])
def test_frozen_weights_give_the_same_architecture_gradient(order, monkeypatch):
    # The alpha-only passes run with the weights' requires_grad off (no weight-gradient work).
    train, valid = Batches(1, 3, dtype=torch.float64), Batches(1, 4, dtype=torch.float64)
    x, y, xv, yv = train.x[0], train.y[0], valid.x[0], valid.y[0]
    grads = []
    for frozen in (True, False):
        s = make_strategy(order=order, dtype=torch.float64)
        if not frozen:
            monkeypatch.setattr(darts_module, "weights_frozen", lambda params: contextlib.nullcontext())
        grads.append(torch.cat([g.flatten() for g in s.arch_grads(x, y, xv, yv)[0]]))
        assert all(p.requires_grad for p in s.model.parameters())
    assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def test_weights_frozen_restores_the_flags_also_on_error():
    params = [torch.zeros(2, requires_grad=True), torch.zeros(2)]
    with pytest.raises(RuntimeError, match="inside"):
        with weights_frozen(params):
            assert not any(p.requires_grad for p in params)
            raise RuntimeError("inside")
    assert [p.requires_grad for p in params] == [True, False]


@pytest.mark.parametrize("order", [1, 2])
def test_architecture_step_decreases_the_validation_objective(order):
    s = make_strategy(order=order, arch_optimizer=lambda ps: torch.optim.SGD(ps, lr=1.0),
                      dtype=torch.float64, unrolled_r=1e-6)
    train_one_weight_step(s)
    x, y = s.train_loader.x[0], s.train_loader.y[0]
    xv, yv = s.valid_loader.x[0], s.valid_loader.y[0]

    def objective():
        if order == 2:
            return float(unrolled_val_loss(s, x, y, xv, yv).detach())
        return float(F.cross_entropy(s.model(xv, s.arch.mixed())[0], yv).detach())

    before_alpha = s.arch.alpha_normal.detach().clone()
    before = objective()
    stats = s.arch_step(x, y, xv, yv)
    assert stats["arch_skipped"] == 0.0
    assert not torch.equal(s.arch.alpha_normal, before_alpha)
    assert objective() < before


def test_exact_fp32_restores_the_precision_flags():
    from enas.search.darts import exact_fp32

    conv = torch.backends.cudnn.conv
    before = getattr(conv, "fp32_precision", None)
    with exact_fp32(torch.device("cpu")):
        assert getattr(conv, "fp32_precision", None) == before
    with exact_fp32(torch.device("cuda")):  # only flips flags: runs without a GPU
        if before is not None:
            assert conv.fp32_precision == "ieee"
    assert getattr(conv, "fp32_precision", None) == before
