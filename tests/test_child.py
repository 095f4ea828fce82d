"""ChildNetwork: DARTS semantics, drop path, auxiliary head, odd datasets, profiling."""
import pytest
import torch
from torch import nn

from shared_model.child import Cell, ChildNetwork, drop_path, drop_path_schedule
from shared_model.genotype import Genotype
from shared_model.ops import FactorizedReduce, ReLUConvBN
from shared_model.profile import count_macs, count_parameters, measure_latency
from shared_model.zoo import ZOO


def _tiny(genotype=ZOO["DARTS_V2"], **kw):
    args = dict(C=4, layers=3, num_classes=5, image_size=8)
    args.update(kw)
    return ChildNetwork(genotype, **args)


def test_darts_v2_parameter_count_matches_paper_code():
    # quark0/darts NetworkCIFAR(36, 10, 20, auxiliary=True, DARTS_V2): 3.349342 M without the aux head.
    model = ChildNetwork(ZOO["DARTS_V2"], C=36, layers=20, num_classes=10, auxiliary=True)
    assert count_parameters(model) == 3_349_342
    assert count_parameters(model, exclude=()) > 3_349_342  # the aux head exists and is excluded


def test_structure_follows_darts():
    model = ChildNetwork(ZOO["DARTS_V2"], C=6, layers=8, num_classes=10)
    assert model.reduction_indices == (2, 5)
    reductions = [i for i, c in enumerate(model.cells) if c.reduction]
    assert reductions == [2, 5]
    # preprocess0 factorizes after a reduction cell, 1x1 ReLUConvBN otherwise.
    for i, cell in enumerate(model.cells):
        expected = FactorizedReduce if i - 1 in reductions else ReLUConvBN
        assert isinstance(cell.preprocess0, expected)
    assert model.stem[0].out_channels == 18  # stem_multiplier 3
    assert model.classifier.in_features == 4 * 6 * 4  # 4 concat nodes x C doubled twice
    # Only ops that read cell inputs 0/1 stride in a reduction cell.
    red = model.cells[2]
    for op, (_, inp) in zip(red._ops, ZOO["DARTS_V2"].reduce):
        strides = [m.stride for m in op.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
        if strides:
            s = strides[0] if isinstance(strides[0], int) else strides[0][0]
            assert s == (2 if inp < 2 else 1)


@pytest.mark.parametrize("name", sorted(n for n, g in ZOO.items() if isinstance(g, Genotype)))
def test_forward_backward_every_zoo_genotype(name):  # ENAS_MACRO: tests/test_macro_cli.py
    torch.manual_seed(0)
    model = _tiny(ZOO[name], auxiliary=True, drop_path_prob=0.2, dropout=0.1)
    model.train()
    logits, aux = model(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 5) and aux.shape == (2, 5)
    (logits.sum() + 0.4 * aux.sum()).backward()
    assert model.stem[0].weight.grad is not None
    assert all(p.grad is not None for p in model.classifier.parameters())


@pytest.mark.parametrize("in_channels,size", [(1, 9), (1, 28), (3, 15), (3, 16)])
def test_grayscale_and_odd_image_sizes(in_channels, size):
    model = _tiny(ZOO["ENAS_RELEASED"], in_channels=in_channels, image_size=size, auxiliary=True)
    logits, aux = model(torch.randn(2, in_channels, size, size))
    assert logits.shape == (2, 5) and aux.shape == (2, 5)
    assert model.feature_sizes[-1] == ((size + 1) // 2 + 1) // 2


def test_image_too_small_raises():
    with pytest.raises(ValueError, match="too small"):
        _tiny(image_size=2)  # 2 -> 1, then the second reduction cannot halve
    _tiny(image_size=3)  # 3 -> 2 -> 1 is fine


def test_cells_may_differ_in_node_count_and_concat():
    g = Genotype(normal=[("sep_conv_3x3", 0), ("skip_connect", 1), ("avg_pool_3x3", 2), ("max_pool_3x3", 0)],
                 normal_concat=[3],
                 reduce=[("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("skip_connect", 2), ("dil_conv_3x3", 0),
                         ("sep_conv_3x3", 3), ("avg_pool_3x3", 1)],
                 reduce_concat=[2, 4])
    model = _tiny(g, layers=4)  # cells: normal, reduce, reduce, normal
    assert [c.multiplier for c in model.cells] == [1, 2, 2, 1]
    assert model.classifier.in_features == 1 * 4 * 4
    logits, _ = model(torch.randn(2, 3, 8, 8))
    logits.sum().backward()


def test_aux_head_only_in_training_with_auxiliary():
    x = torch.randn(2, 3, 8, 8)
    model = _tiny(auxiliary=True)
    assert model(x)[1] is not None
    model.eval()
    assert model(x)[1] is None
    plain = _tiny(auxiliary=False)
    assert plain(x)[1] is None
    assert not any("auxiliary" in n for n, _ in plain.named_parameters())


def test_drop_path_zeroes_whole_samples_and_rescales():
    torch.manual_seed(0)
    out = drop_path(torch.ones(64, 2, 3, 3), 0.5)
    per_sample = out.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 2.0).all(1))
    assert 0 < int((per_sample == 0).all(1).sum()) < 64
    x = torch.ones(4, 1, 2, 2)
    assert drop_path(x, 0.0) is x


def test_cell_drop_path_skips_identity_only():
    torch.manual_seed(0)
    s0, s1 = torch.randn(32, 4, 6, 6), torch.randn(32, 4, 6, 6)
    conv_cell = Cell([("sep_conv_3x3", 0), ("sep_conv_3x3", 1)], [2], 4, 4, 4, False, False).train()
    out = conv_cell(s0, s1, 0.5)
    zeroed = (out.flatten(1) == 0).all(1)
    assert 0 < int(zeroed.sum()) < 32  # samples where both paths were dropped
    skip_cell = Cell([("skip_connect", 0), ("skip_connect", 1)], [2], 4, 4, 4, False, False).train()
    assert torch.equal(skip_cell(s0, s1, 0.9), skip_cell(s0, s1, 0.9))


def test_network_drop_path_train_random_eval_deterministic():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    model = _tiny(drop_path_prob=0.0).train()
    assert torch.equal(model(x)[0], model(x)[0])  # BN batch stats alone are deterministic
    model.drop_path_prob = 0.5  # settable per epoch
    assert not torch.equal(model(x)[0], model(x)[0])
    model.eval()
    a = model(x)[0]
    model.drop_path_prob = 0.0
    assert torch.equal(a, model(x)[0])


def test_drop_path_schedule_matches_enas():
    assert drop_path_schedule(0, 20, 0.0) == 0.0
    assert drop_path_schedule(19, 20, 1.0) == pytest.approx(0.4)
    assert drop_path_schedule(0, 20, 1.0) == pytest.approx(0.02)
    assert drop_path_schedule(9, 20, 2.0) == pytest.approx(0.2)  # progress clipped to 1
    with pytest.raises(ValueError):
        drop_path_schedule(20, 20, 0.5)
    model = _tiny(layers=5, drop_path_depth_scaled=True)
    model.drop_path_prob = drop_path_schedule(4, 5, 0.5)
    for i in range(5):
        assert model.cell_drop_prob(i) == pytest.approx(drop_path_schedule(i, 5, 0.5))


def test_count_macs_single_conv_and_linear():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
    assert count_macs(conv, (3, 10, 10)) == 8 * 10 * 10 * 3 * 9
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    assert count_macs(grouped, (4, 5, 5)) == 4 * 5 * 5 * 1 * 9
    net = nn.Sequential(nn.Conv2d(1, 2, 1, stride=2), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    net.train()
    assert count_macs(net, (1, 1, 8, 8)) == 2 * 4 * 4 * 1 + 32 * 3
    assert net.training  # mode restored


def test_count_macs_skips_aux_head():
    with_aux, without = _tiny(auxiliary=True), _tiny(auxiliary=False)
    without.load_state_dict(with_aux.state_dict(), strict=False)
    assert count_macs(with_aux, (3, 8, 8)) == count_macs(without, (3, 8, 8)) > 0


def test_measure_latency_reports_percentiles():
    model = _tiny()
    stats = measure_latency(model, (3, 8, 8), device="cpu", batch_size=2, warmup=1, repeats=3)
    assert 0 < stats["p10"] <= stats["median_ms"] <= stats["p90"]
    assert model.training
    with pytest.raises(ValueError):
        measure_latency(model, (3, 8, 8), repeats=0)
