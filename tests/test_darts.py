"""DARTS on the shared supernet: derive, checkpoint state, Hessian-vector product, arch steps."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import enas.search.darts as darts_module
from enas.flat_sgd import FlatSGD
from enas.search.darts import DartsStrategy, build_darts_strategy, finite_difference_hvp, weights_frozen
from enas.search.heatmap import render_heatmap
from enas.search.trainer import ChildTrainer
from shared_model.arch_params import ArchParameters
from shared_model.genotype import loose_ends
from shared_model.spaces import make_space
from shared_model.supernet import MixedArch, Supernet

# A cut-down DARTS space (2 nodes, 4 ops with ``none``) keeps the numeric tests fast.
SMALL_OPS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny convolutions: a second thread only adds contention on a busy 2-core machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Batches:
    """Fixed batches with the ``DeviceLoader`` iteration interface."""

    def __init__(self, n: int, seed: int, batch: int = 8, classes: int = 5, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, batch, 1, 8, 8, generator=g).to(dtype)  # (n, B, 1, 8, 8)
        self.y = torch.randint(classes, (n, batch), generator=g)

    def __len__(self):
        return len(self.x)

    def epoch_batches(self, epoch, start=0):
        for i in range(start, len(self)):
            yield self.x[i], self.y[i]


def make_strategy(order=1, arch_optimizer=None, seed=0, dtype=torch.float32, unrolled_r=0.01, flat=False):
    space = make_space("darts", num_nodes=2, ops=SMALL_OPS)
    torch.manual_seed(seed)
    model = Supernet(space.ops, space.num_nodes, 4, 3, 5, in_channels=1, image_size=8).to(dtype)
    options = dict(lr=0.05, momentum=0.9, weight_decay=3e-4)
    # flat: the weight optimizer enas search builds (its buffers take the virtual step)
    opt = FlatSGD(list(model.parameters()), **options) if flat else torch.optim.SGD(model.parameters(), **options)
    trainer = ChildTrainer(model, opt, torch.device("cpu"), grad_clip=5.0)
    arch = ArchParameters.for_space(space, generator=torch.Generator().manual_seed(seed)).to(dtype)
    train, valid = Batches(3, 1, dtype=dtype), Batches(2, 2, dtype=dtype)
    if arch_optimizer is None:
        return build_darts_strategy(space, model, arch, trainer, train, valid, order=order,
                                    unrolled_r=unrolled_r)
    return DartsStrategy(space, model, arch, trainer, train, valid, arch_optimizer(arch.parameters()),
                         order=order, unrolled_r=unrolled_r)


def set_alpha(arch, cell, rows):
    with torch.no_grad():
        arch.alpha(cell).copy_(torch.tensor(rows, dtype=torch.float32))


# -- derive -----------------------------------------------------------------
def test_derive_picks_strongest_non_none_edges_and_ops():
    space = make_space("darts")  # none, max, avg, skip, sep3, sep5, dil3, dil5
    arch = ArchParameters.for_space(space)
    rows = torch.zeros(14, 8)
    # node 2: edges (2,0) (2,1); node 3: (3,0) (3,1) (3,2); ... rows node-major.
    rows[0, 4] = 3.0      # 2<-0 sep_conv_3x3
    rows[1, 0] = 9.0      # 2<-1 none is huge: still kept (only 2 inputs), op must not be none
    rows[1, 6] = 1.0      # ... and dil_conv_3x3 is its best real op
    rows[2, 0] = 20.0     # 3<-0 none dominates, but its non-none weights are tiny
    rows[3, 5] = 2.0      # 3<-1 sep_conv_5x5 (weaker)
    rows[4, 3] = 4.0      # 3<-2 skip_connect (strongest, listed first)
    rows[5:9, 1] = 0.5    # node 4: equal strengths everywhere: inputs 0 and 1 win, max_pool
    rows[9 + 4, 7] = 6.0  # 5<-4 dil_conv_5x5: strongest, listed first
    rows[9 + 2, 2] = 5.0  # 5<-2 avg_pool_3x3
    set_alpha(arch, "normal", rows.tolist())
    g = arch.derive(space)
    assert g.normal == (("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
                        ("skip_connect", 2), ("sep_conv_5x5", 1),
                        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
                        ("dil_conv_5x5", 4), ("avg_pool_3x3", 2))
    assert g.normal_concat == (2, 3, 4, 5)
    assert "none" not in g.ops()


def test_derive_never_picks_none_and_breaks_ties_by_op_order():
    space = make_space("darts")
    arch = ArchParameters.for_space(space)
    set_alpha(arch, "normal", [[10.0] + [0.0] * 7] * 14)  # none always largest
    set_alpha(arch, "reduce", [[0.0] * 8] * 14)  # all tied
    g = arch.derive(space)
    for cell in ("normal", "reduce"):
        entries, _ = g.cell(cell)
        # DARTS tie rules: first non-none op, lowest inputs in order.
        assert entries == (("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 4


def test_derive_micro_space_uses_loose_ends():
    space = make_space("micro")  # 5 nodes, no none
    arch = ArchParameters.for_space(space)
    assert arch.alpha_normal.shape == (20, 5)
    rows = torch.zeros(20, 5)
    start = 0
    for node in range(2, 7):
        # every node reads nodes 0 and 1 strongly except node 6 which reads 2 and 3
        picks = (2, 3) if node == 6 else (0, 1)
        for j in picks:
            rows[start + j, (node + j) % 5] = 3.0
        start += node
    set_alpha(arch, "normal", rows.tolist())
    g = arch.derive(space)
    assert g.normal[-2:] == ((space.ops[(6 + 2) % 5], 2), (space.ops[(6 + 3) % 5], 3))
    assert g.normal_concat == loose_ends(g.normal) == (4, 5, 6)
    assert space.contains(g)


def test_mixed_is_a_softmax_per_edge_and_detach_cuts_the_graph():
    arch = ArchParameters(5, 4)
    m = arch.mixed()
    assert isinstance(m, MixedArch)
    assert torch.allclose(m.normal.sum(-1), torch.ones(5))
    m.normal[0, 1].backward()
    assert arch.alpha_normal.grad is not None and arch.alpha_reduce.grad is None
    assert not arch.mixed(detach=True).reduce.requires_grad
    with pytest.raises(ValueError):
        arch.derive(make_space("darts"))  # 5 x 4 does not fit 14 x 8


# -- checkpoint state ------------------------------------------------------
def test_state_round_trips_through_weights_only_load():
    s = make_strategy()
    assert {"alpha_normal", "alpha_reduce"} <= set(s.arch.state_dict())
    for unit in s.phases(0)[0].run(0):
        break  # one unit: Adam has state now
    s.derive_details = s._details()
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    t = make_strategy(seed=1)
    assert not torch.equal(t.arch.alpha_normal, s.arch.alpha_normal)
    t.load_state_dict(state)
    assert torch.equal(t.arch.alpha_normal, s.arch.alpha_normal)
    assert torch.equal(t.arch.alpha_reduce, s.arch.alpha_reduce)
    exp_t = t.arch_optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(exp_t, s.arch_optimizer.state_dict()["state"][0]["exp_avg"])
    assert t.derive_result()[0] == s.derive_result()[0]


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


def train_one_weight_step(s):
    x, y = s.train_loader.x[2], s.train_loader.y[2]
    s.trainer.train_step(x, y, s.arch.mixed(detach=True))  # fills the momentum buffers


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


def test_weight_step_leaves_alpha_alone_and_non_finite_arch_steps_are_skipped():
    s = make_strategy(arch_optimizer=lambda ps: torch.optim.Adam(ps, lr=0.0))
    alphas = [a.detach().clone() for a in s.arch.parameters()]
    w0 = s.model.classifier.weight.detach().clone()
    metrics = next(iter(s.phases(0)[0].run(0)))
    assert {"loss", "acc", "valid_loss", "valid_acc"} <= set(metrics)
    assert all(torch.equal(a, b) for a, b in zip(s.arch.parameters(), alphas))
    assert all(a.grad is None for a in s.arch.parameters())
    assert not torch.equal(s.model.classifier.weight, w0)

    s = make_strategy()
    alphas = [a.detach().clone() for a in s.arch.parameters()]
    s.valid_loader.x[1] = float("nan")
    units = list(s.phases(0)[0].run(1))  # units 1, 2: valid batches 1 (NaN), then 0
    assert [u["arch_skipped"] for u in units] == [1.0, 0.0]
    assert s.trainer.nonfinite_total == 1 and s.trainer.nonfinite_in_row == 0
    assert all(torch.isfinite(a).all() for a in s.arch.parameters())
    assert not torch.equal(s.arch.alpha_normal, alphas[0])


def test_validation_batches_run_in_lockstep_and_resume():
    s = make_strategy()  # 3 train batches, 2 valid batches: the valid loader wraps
    full = [y for _, y in zip(range(7), s.valid_batches(1, 0))]
    tail = [y for _, y in zip(range(4), s.valid_batches(1, 3))]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(full[3:], tail))
    assert torch.equal(full[0][1], s.valid_loader.y[0]) and torch.equal(full[2][1], s.valid_loader.y[0])


# -- logging and derive -----------------------------------------------------
def test_epoch_result_images_and_derive_details():
    s = make_strategy()
    genotype, summary = s.epoch_result()
    assert genotype == s.arch.derive(s.space)
    assert summary["alpha_entropy_normal"] == pytest.approx(np.log(len(SMALL_OPS)), abs=1e-3)
    images = s.epoch_images()
    assert set(images) == {"darts/alpha_normal", "darts/alpha_reduce"}
    for img in images.values():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    phase = s.derive_phase(100)
    assert phase.length == 1 and len(list(phase.run(0))) == 1
    g, details = s.derive_result()
    json.dumps(details)
    assert g == genotype and details["strategy"] == "darts" and details["order"] == 1
    assert np.allclose(np.array(details["alphas"]["normal"]).sum(1), 1.0)
    assert [(c["op"], c["input"]) for c in details["chosen"]["normal"]] == list(g.normal)


def test_heatmap_colours_follow_the_values():
    table = np.array([[0.0, 1.0], [0.5, 0.25]])
    img = render_heatmap(table, ["2<-0", "2<-1"], ["a", "b"], title="t")
    assert img.dtype == np.uint8 and img.shape[2] == 3
    with pytest.raises(ValueError):
        render_heatmap(table, ["only one"], ["a", "b"])


# -- through the driver -------------------------------------------------------
def _digits_run(run_dir, order, stop_after=None, resume=False):
    from enas.config.search import build_search_config
    from enas.search.build import build_search
    from enas.search.driver import SearchDriver

    flags = {"epochs": 1, "data.batch_size": 16, "darts.train_portion": 0.03, "darts.order": order,
             "model.channels": 4, "model.layers": 3, "model.num_nodes": 2, "run.checkpoint_every_steps": 1}
    cfg = build_search_config("darts", "quick", None, flags)
    torch.manual_seed(cfg.run.seed)
    setup = build_search(cfg, torch.device("cpu"))
    assert len(setup.strategy.train_loader) == 2
    run_dir.mkdir(exist_ok=True)
    driver = SearchDriver(cfg, setup, run_dir, stop_after=stop_after)
    try:
        driver.run(resume=resume, tensorboard=False)
    except KeyboardInterrupt:
        pass
    return setup


@pytest.mark.parametrize("order", [1, 2])
def test_search_driver_runs_darts_and_resumes_exactly(tmp_path, order):
    from enas.runs.checkpoint import load_checkpoint

    full = _digits_run(tmp_path / "full", order)
    genotype = (tmp_path / "full" / "genotype.json").read_text()
    details = json.loads((tmp_path / "full" / "derive.json").read_text())
    assert details["strategy"] == "darts" and details["order"] == order
    assert (tmp_path / "full" / "genotypes" / "epoch_001.json").is_file()
    state = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt", kind="search")
    assert torch.equal(state["strategy"]["arch"]["alpha_normal"], full.strategy.arch.alpha_normal)

    _digits_run(tmp_path / "cut", order, stop_after=2)  # killed during the second unit's bookkeeping
    assert not (tmp_path / "cut" / "genotype.json").exists()
    resumed = _digits_run(tmp_path / "cut", order, resume=True)
    assert (tmp_path / "cut" / "genotype.json").read_text() == genotype
    for a, b in zip(resumed.strategy.arch.parameters(), full.strategy.arch.parameters()):
        assert torch.equal(a, b)


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
