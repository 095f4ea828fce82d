"""Unread cell inputs as loose ends of the ENAS fixed network (``ChildNetwork(loose_inputs=True)``).

Official: melodyguan/enas ``src/cifar10/micro_child.py`` ``_fixed_layer`` counts ``used``
over all ``num_cells + 2`` states and ``_fixed_combine`` ("final_combine") concatenates
every state with ``used == 0``, the two calibrated inputs included, halving one that
is larger than the output with ``_factorized_reduction`` (which has no leading ReLU).
"""
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from enas.runs.checkpoint import save_checkpoint
from enas.cli import cli
from enas.config.lib import to_dict
from enas.config.train import build_train_config
from enas.retrain.trained import make_child, network_from_checkpoint
from shared_model.child import Cell, ChildNetwork
from shared_model.genotype import Genotype
from shared_model.profile import count_parameters
from shared_model.zoo import ZOO

ENAS_OPTIONS = dict(aux_position="after_reduction", final_relu=True, drop_path_exempt="skip", base_conv=True,
                    classifier_bias=False, aux_same_padding=True, bn_eps=1e-3, aux_trainable=False)

# Input 0 is read by no node of either cell; node 2 is read by node 3, so the concat is [3].
NORMAL = [("skip_connect", 1), ("avg_pool_3x3", 1), ("max_pool_3x3", 2), ("skip_connect", 2)]
REDUCE = [("skip_connect", 1), ("max_pool_3x3", 1), ("avg_pool_3x3", 2), ("skip_connect", 2)]
UNREAD_0 = Genotype(NORMAL, [3], REDUCE, [3])


def expected_params(C, layers, classes, loose, in_channels=3, stem=3):
    """Parameters of UNREAD_0 with the ENAS options, no aux head, counted op by op."""
    total = 3 * 3 * in_channels * stem * C + 2 * stem * C  # stem conv + BN
    reductions = {layers // 3, 2 * layers // 3}
    c_pp = c_p = stem * C
    c = C
    for i in range(layers):
        red = i in reductions
        c = 2 * c if red else c
        # Input 0: a 1x1 ReLUConvBN, or after a reduction a factorized reduce (two
        # 1x1 convs to c / 2 each): c_pp * c weights either way, plus BN.
        total += c_pp * c + 2 * c
        total += c_p * c + 2 * c  # input 1: 1x1 ReLUConvBN
        total += c * c + 2 * c  # layer_base on input 1
        if red:
            total += c * c + 2 * c  # the stride-2 skip_connect on input 1 is a factorized reduce
            if loose:
                total += c * c + 2 * c  # unread input 0 halved before the concat
        # Pools and the stride-1 skips have no parameters.
        c_pp, c_p = c_p, (2 if loose else 1) * c  # output: [input 0,] node 3
    return total + c_p * classes  # bias-free classifier


@pytest.mark.parametrize("loose", [False, True])
def test_parameter_count_follows_the_wider_outputs(loose):
    with torch.device("meta"):
        model = ChildNetwork(UNREAD_0, C=36, layers=17, num_classes=10, loose_inputs=loose, **ENAS_OPTIONS)
    assert count_parameters(model) == expected_params(36, 17, 10, loose)
    small = ChildNetwork(UNREAD_0, C=4, layers=5, num_classes=5, image_size=8, loose_inputs=loose, **ENAS_OPTIONS)
    assert count_parameters(small) == expected_params(4, 5, 5, loose)


def test_released_and_darts_cells_read_both_inputs_so_nothing_changes():
    with torch.device("meta"):
        released = ChildNetwork(ZOO["ENAS_RELEASED"], C=36, layers=17, num_classes=10, loose_inputs=True,
                                **ENAS_OPTIONS)
        darts = ChildNetwork(ZOO["DARTS_V2"], C=36, layers=20, num_classes=10, auxiliary=True, loose_inputs=True)
    assert count_parameters(released) == 3_894_372
    assert count_parameters(darts) == 3_349_342
    assert all(cell.loose_reduce is None and cell.multiplier == len(cell._concat) for cell in released.cells)


def test_shapes_aux_head_and_classifier_read_the_wider_output():
    torch.manual_seed(0)
    model = ChildNetwork(UNREAD_0, C=4, layers=5, num_classes=5, image_size=8, auxiliary=True, loose_inputs=True,
                         **ENAS_OPTIONS).train()
    assert model.reduction_indices == (1, 3) and model.aux_index == 4
    c = 4
    for i, cell in enumerate(model.cells):
        c = 2 * c if i in model.reduction_indices else c
        assert cell.multiplier == 2
        assert (cell.loose_reduce is not None) == (i in model.reduction_indices)
        if i + 1 < len(model.cells):
            assert model.cells[i + 1].preprocess1[1].in_channels == 2 * c
    assert model.auxiliary_head.features[2].in_channels == 2 * 16
    assert model.classifier.in_features == 2 * 16
    seen = []
    for cell in model.cells:
        cell.register_forward_hook(lambda m, inp, out: seen.append(tuple(out.shape)))
    logits, aux = model(torch.randn(3, 3, 8, 8))
    assert logits.shape == aux.shape == (3, 5)
    assert seen == [(3, 8, 8, 8), (3, 16, 4, 4), (3, 16, 4, 4), (3, 32, 2, 2), (3, 32, 2, 2)]


def _cells(reduction, size=6):
    torch.manual_seed(0)
    entries = REDUCE if reduction else NORMAL
    loose = Cell(entries, [3], 6, 6, 4, reduction, False, base_conv=True, loose_inputs=True).eval()
    plain = Cell(entries, [3], 6, 6, 4, reduction, False, base_conv=True).eval()
    missing, unexpected = plain.load_state_dict(loose.state_dict(), strict=False)
    assert not missing and all(k.startswith("loose_reduce.") for k in unexpected)
    s0, s1 = torch.randn(2, 6, size, size), torch.randn(2, 6, size, size)
    return loose, plain, s0, s1


def test_normal_cell_concatenates_the_preprocessed_unread_input():
    loose, plain, s0, s1 = _cells(reduction=False)
    out = loose(s0, s1)  # (2, 8, 6, 6): [input 0, node 3]
    assert out.shape == (2, 8, 6, 6)
    assert torch.equal(out[:, :4], loose.preprocess0(s0))
    assert torch.equal(out[:, 4:], plain(s0, s1))
    # The output depends on input 0 only through the concat.
    other = loose(torch.randn_like(s0), s1)
    assert not torch.equal(other[:, :4], out[:, :4]) and torch.equal(other[:, 4:], out[:, 4:])
    assert torch.equal(plain(torch.randn_like(s0), s1), plain(s0, s1))


@pytest.mark.parametrize("size", [6, 5])
def test_reduction_cell_halves_the_unread_input_without_a_relu(size):
    loose, plain, s0, s1 = _cells(reduction=True, size=size)
    half = (size + 1) // 2
    out = loose(s0, s1)
    assert out.shape == (2, 8, half, half)
    assert torch.equal(out[:, 4:], plain(s0, s1))
    # By hand: _factorized_reduction on the calibrated input, no ReLU: two 1x1 convs on
    # the even grid and on the grid shifted by one pixel (zero-padded), concat, BN.
    h = loose.preprocess0(s0)  # (2, 4, size, size), BN output: has negative values
    assert (h < 0).any()
    fr = loose.loose_reduce["0"]
    a = F.conv2d(h[:, :, ::2, ::2], fr.conv_1.weight)
    b = F.conv2d(F.pad(h[:, :, 1::2, 1::2], (0, size % 2, 0, size % 2)), fr.conv_2.weight)
    expected = fr.bn(torch.cat([a, b], 1))
    torch.testing.assert_close(out[:, :4], expected)
    with_relu = fr.bn(torch.cat([F.conv2d(h.relu()[:, :, ::2, ::2], fr.conv_1.weight),
                                 F.conv2d(F.pad(h.relu()[:, :, 1::2, 1::2], (0, size % 2, 0, size % 2)),
                                          fr.conv_2.weight)], 1))
    assert not torch.allclose(out[:, :4], with_relu)


def test_unread_input_is_trained_only_with_loose_inputs():
    # Without loose inputs, input 0's preprocessing feeds nothing (dead weights).
    x = torch.randn(2, 3, 8, 8)
    for loose in (False, True):
        torch.manual_seed(0)
        model = ChildNetwork(UNREAD_0, C=4, layers=5, num_classes=5, image_size=8, loose_inputs=loose,
                             **ENAS_OPTIONS).train()
        model(x)[0].sum().backward()
        # Cell 0's input 0 is the stem output, which it also reads as input 1.
        grads = [next(cell.preprocess0.parameters()).grad for cell in model.cells[1:]]
        if loose:
            assert all(g is not None and g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads)


INFO = {"dataset": "digits", "num_classes": 5, "in_channels": 1, "image_size": 8, "classes": list("abcde"),
        "mean": [0.5], "std": [0.25]}


def _checkpoint(tmp_path, saved, model):
    path = tmp_path / "last.pt"
    save_checkpoint(path, "train", {"config": saved, "genotype": UNREAD_0.to_dict(), "data_info": INFO,
                                    "model": model.state_dict()})
    return path


def test_preset_key_saved_and_old_checkpoints_rebuild_without_it(tmp_path):
    cfg = build_train_config(None, {"model.channels": 4, "model.layers": 5}, preset="enas")
    assert cfg.model.loose_inputs and not build_train_config(None, {}).model.loose_inputs
    saved = to_dict(cfg)
    assert saved["model"]["loose_inputs"] is True
    trained = make_child(UNREAD_0, cfg, INFO)
    model, _, _, _ = network_from_checkpoint({"kind": "train", "config": saved, "genotype": UNREAD_0.to_dict(),
                                              "data_info": INFO, "model": trained.state_dict()})
    assert model.classifier.in_features == 2 * 16
    # A run saved before the key existed was built without loose inputs.
    del saved["model"]["loose_inputs"]
    old_cfg = build_train_config(None, {"model.channels": 4, "model.layers": 5, "model.loose_inputs": False},
                                 preset="enas")
    old = make_child(UNREAD_0, old_cfg, INFO)
    model, cfg2, _, _ = network_from_checkpoint({"kind": "train", "config": saved, "genotype": UNREAD_0.to_dict(),
                                                 "data_info": INFO, "model": old.state_dict()})
    assert not cfg2.model.loose_inputs and model.classifier.in_features == 16


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_of_a_network_with_loose_inputs(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    cfg = build_train_config(None, {"model.channels": 4, "model.layers": 5}, preset="enas")
    torch.manual_seed(0)
    model = make_child(UNREAD_0, cfg, INFO)
    with torch.no_grad():  # non-trivial running statistics, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    path = _checkpoint(tmp_path, to_dict(cfg), model)
    out = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    result = CliRunner().invoke(cli, ["export", str(path), "--format", fmt, "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "verified with" in result.output and out.is_file()
