"""DARTS on the shared supernet: derive, checkpoint state, arch and weight steps, the search driver.

Second order (Hessian-vector product, unrolled gradient): test_darts_unrolled.py."""
import io
import json

import numpy as np
import pytest
import torch
from darts_helpers import SMALL_OPS, Batches, _one_thread, make_strategy  # noqa: F401 (autouse fixture)

from enas.search.heatmap import render_heatmap
from shared_model.arch_params import ArchParameters
from shared_model.genotype import loose_ends
from shared_model.spaces import make_space
from shared_model.supernet import MixedArch


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
