"""The ENAS final network options of ChildNetwork against the official fixed network.

Official: melodyguan/enas ``src/cifar10/micro_child.py`` (``_model``,
``_fixed_layer``) with ``scripts/cifar10_micro_final.sh``. The DARTS defaults
are pinned in test_child.py (DARTS_V2: 3,349,342 parameters).
"""
import pytest
import torch
from torch import nn

from enas.config.lib import to_dict
from enas.config.train import AUX_POSITIONS, DROP_PATH_EXEMPT, build_train_config
from enas.retrain.trained import make_child, network_from_checkpoint
from shared_model import child as child_module
from shared_model.child import Cell, ChildNetwork
from shared_model.heads import AuxiliaryHead
from shared_model.ops import FactorizedReduce
from shared_model.profile import count_parameters
from shared_model.zoo import ZOO

# The options as the enas train preset sets them (pinned in test_train_presets.py).
ENAS_OPTIONS = dict(aux_position="after_reduction", final_relu=True, drop_path_exempt="skip", base_conv=True,
                    classifier_bias=False, aux_same_padding=True, bn_eps=1e-3, aux_trainable=False,
                    loose_inputs=True)  # the released cells read both inputs: no effect on them
NEW_KEYS = tuple(ENAS_OPTIONS)  # the model config keys of the same names


def _enas_released(**kw):
    return ChildNetwork(ZOO["ENAS_RELEASED"], C=36, layers=17, num_classes=10, auxiliary=True, **kw)


def test_enas_released_parameter_count_is_the_official_count():
    # Counted by hand over the official fixed network's trainable variables for the
    # released arc at child_out_filters 36, child_num_layers 15 (count_model_params
    # over the variables whose name lacks "aux_head"): 3,894,372; its aux head
    # (1x1 conv 720->128 + BN, 2x2 conv 128->768 + BN, bias-free fc 768->10) adds 494,848.
    model = _enas_released(**ENAS_OPTIONS)
    assert count_parameters(model) == 3_894_372
    assert count_parameters(model, exclude=()) == 3_894_372 + 494_848
    # The DARTS-style network of the same cells: no layer_base convs (-164,952 =
    # sum over cells of C_cell^2 + 2 C_cell) and a classifier bias (+10).
    darts_style = _enas_released()
    assert count_parameters(darts_style) == 3_729_430
    layer_base = sum(c * c + 2 * c for c in [36] * 5 + [72] * 6 + [144] * 6)
    assert count_parameters(darts_style) - 10 + layer_base == count_parameters(model)
    # The paper's 4.6 M is not reached by the released code even with the aux head.
    assert count_parameters(model, exclude=()) < 4.5e6


def test_darts_v2_unchanged_by_the_new_defaults():
    model = ChildNetwork(ZOO["DARTS_V2"], C=36, layers=20, num_classes=10, auxiliary=True)
    assert count_parameters(model) == 3_349_342
    assert model.aux_index == 13 and not model.final_relu
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.classifier.bias is not None and model.auxiliary_head.classifier.bias is not None
    assert not any("base1" in name for name, _ in model.named_parameters())


def test_aux_head_position_official_indices():
    # ENAS: pool_distance = num_layers // 3, pool_layers = [pool_distance, 2 * pool_distance + 1],
    # aux_head_indices = [pool_layers[-1] + 1]; cells are 0..num_layers + 1.
    num_layers = 15
    pool_distance = num_layers // 3
    pool_layers = [pool_distance, 2 * pool_distance + 1]
    assert pool_layers == [5, 11]
    model = _enas_released(**ENAS_OPTIONS)
    assert list(model.reduction_indices) == pool_layers
    assert model.aux_index == pool_layers[-1] + 1 == 12
    assert not model.cells[12].reduction
    # It reads the 8x8 normal cell: 5 loose ends x 144 channels.
    assert model.auxiliary_head.features[2].in_channels == 5 * 144
    assert _enas_released().aux_index == 11  # DARTS: the reduction cell itself


def test_after_reduction_needs_a_cell_after_the_last_reduction():
    with pytest.raises(ValueError, match="after the last reduction"):
        ChildNetwork(ZOO["DARTS_V2"], C=4, layers=3, num_classes=5, image_size=8, auxiliary=True,
                     aux_position="after_reduction")
    # Without the head the option is irrelevant.
    ChildNetwork(ZOO["DARTS_V2"], C=4, layers=3, num_classes=5, image_size=8, aux_position="after_reduction")
    with pytest.raises(ValueError, match="aux_position"):
        ChildNetwork(ZOO["DARTS_V2"], C=4, layers=4, num_classes=5, image_size=8, aux_position="late")


def test_final_relu_feeds_nonnegative_features_to_the_classifier():
    torch.manual_seed(0)
    seen = {}
    for final_relu in (False, True):
        model = ChildNetwork(ZOO["DARTS_V2"], C=4, layers=4, num_classes=5, image_size=8,
                             final_relu=final_relu).eval()
        model.classifier.register_forward_hook(lambda m, inp, out, k=final_relu: seen.__setitem__(k, inp[0]))
        model(torch.randn(3, 3, 8, 8))
    assert (seen[True] >= 0).all() and (seen[False] < 0).any()


def _reduce_skip_cell(exempt):
    # Both ops are stride-2 skips (FactorizedReduce) in a reduction cell.
    return Cell([("skip_connect", 0), ("skip_connect", 1)], [2], 4, 4, 4, True, False,
                drop_path_exempt=exempt).train()


def test_drop_path_exempt_skip_keeps_the_stride_2_skip():
    torch.manual_seed(0)
    s0, s1 = torch.randn(32, 4, 6, 6), torch.randn(32, 4, 6, 6)
    darts = _reduce_skip_cell("identity")
    assert all(isinstance(op, FactorizedReduce) for op in darts._ops)
    dropped = (darts(s0, s1, 0.9).flatten(1) == 0).all(1)
    assert int(dropped.sum()) > 0  # DARTS drops the FactorizedReduce skip
    enas = _reduce_skip_cell("skip")
    enas.load_state_dict(darts.state_dict())
    out = enas(s0, s1, 0.9)
    assert torch.equal(out, enas(s0, s1, 0.9)) and not (out.flatten(1) == 0).all(1).any()
    # Pools are still dropped (ENAS drops ops 0-3).
    pools = Cell([("avg_pool_3x3", 0), ("max_pool_3x3", 1)], [2], 4, 4, 4, False, False,
                 drop_path_exempt="skip").train()
    assert int((pools(s0, s1, 0.9).flatten(1) == 0).all(1).sum()) > 0
    with pytest.raises(ValueError, match="drop_path_exempt"):
        _reduce_skip_cell("none")


def test_base_conv_is_a_second_relu_conv_bn_on_input_1():
    cell = Cell([("skip_connect", 1), ("skip_connect", 1)], [2], 4, 8, 4, False, False, base_conv=True).eval()
    s0, s1 = torch.randn(2, 4, 5, 5), torch.randn(2, 8, 5, 5)
    expected = 2 * cell.base1(cell.preprocess1(s1))
    assert torch.allclose(cell(s0, s1), expected)
    assert cell.base1[1].weight.shape == (4, 4, 1, 1)


def test_aux_same_padding_matches_tensorflow_same_then_global_pool():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    head = AuxiliaryHead(16, 5, spatial=8, same_padding=True, bias=False).eval()
    assert head.classifier.bias is None
    feats = head.features(x)
    assert feats.shape == (2, 768, 2, 2)  # TF "SAME", stride 1: the 2x2 map stays 2x2
    # By hand: TF pads the even kernel's extra row/column after the input.
    f = head.features
    h = f[4](f[3](f[2](f[1](torch.relu(x)))))  # (2, 128, 2, 2)
    h = nn.functional.conv2d(nn.functional.pad(h, (0, 1, 0, 1)), f[6].weight)
    h = torch.relu(f[7](h))
    assert torch.allclose(head(x), head.classifier(h.mean((2, 3))), atol=1e-6)
    # DARTS keeps its module indices (checkpoint keys) and a 1x1 output.
    darts = AuxiliaryHead(16, 5, spatial=8)
    assert [type(m).__name__ for m in darts.features][5] == "Conv2d"
    assert darts.features(x).shape == (2, 768, 1, 1)


def test_aux_head_leaves_its_input_unchanged():
    x = torch.randn(2, 16, 8, 8)
    before = x.clone()
    AuxiliaryHead(16, 5, spatial=8)(x)
    assert torch.equal(x, before)


def test_aux_head_does_not_change_what_the_classifier_sees():
    # With 3 layers the head reads the last cell, whose output is also pooled for the
    # classifier: an in-place ReLU in the head made the training logits relu-ed.
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    model = ChildNetwork(ZOO["DARTS_V2"], C=4, layers=3, num_classes=5, image_size=8, auxiliary=True).train()
    assert model.aux_index == len(model.cells) - 1
    with_aux, aux = model(x)
    assert aux is not None
    model._auxiliary = False  # same training-mode forward without the head (BN uses batch stats)
    without_aux, _ = model(x)
    assert torch.equal(with_aux, without_aux)


def test_bn_eps_reaches_every_batchnorm():
    model = _enas_released(**ENAS_OPTIONS)
    eps = {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert eps == {1e-3}
    with pytest.raises(ValueError, match="bn_eps"):
        ChildNetwork(ZOO["DARTS_V2"], C=4, layers=3, num_classes=5, image_size=8, bn_eps=0.0)


def test_enas_options_train_forward_backward_with_a_frozen_aux_head():
    torch.manual_seed(0)
    model = ChildNetwork(ZOO["ENAS_RELEASED"], C=4, layers=5, num_classes=5, image_size=8, auxiliary=True,
                         drop_path_prob=0.4, drop_path_depth_scaled=True, dropout=0.2, **ENAS_OPTIONS).train()
    head = {n: p.detach().clone() for n, p in model.auxiliary_head.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-4)
    logits, aux = model(torch.randn(4, 3, 8, 8))
    (logits.sum() + 0.4 * aux.sum()).backward()
    trunk = [p for n, p in model.named_parameters() if not n.startswith("auxiliary_head.")]
    assert all(p.grad is not None for p in trunk)
    assert all(p.grad is None for p in model.auxiliary_head.parameters())
    # Only the aux loss reaches the cells before the head's input.
    model.zero_grad()
    model(torch.randn(4, 3, 8, 8))[1].sum().backward()
    assert model.cells[0].preprocess1[1].weight.grad.abs().sum() > 0
    opt.step()
    assert all(torch.equal(p, head[n]) for n, p in model.auxiliary_head.named_parameters())
    # DARTS trains its head.
    darts = ChildNetwork(ZOO["DARTS_V2"], C=4, layers=4, num_classes=5, image_size=8, auxiliary=True)
    assert all(p.requires_grad for p in darts.auxiliary_head.parameters())


def test_config_lists_match_the_model_module():
    assert AUX_POSITIONS == child_module.AUX_POSITIONS
    assert DROP_PATH_EXEMPT == child_module.DROP_PATH_EXEMPT


INFO = {"dataset": "digits", "num_classes": 5, "in_channels": 3, "image_size": 8, "classes": list("abcde"),
        "mean": [0.5] * 3, "std": [0.25] * 3}


def _state(cfg_dict, model):
    return {"kind": "train", "config": cfg_dict, "genotype": ZOO["ENAS_RELEASED"].to_dict(), "data_info": INFO,
            "model": model.state_dict()}


def test_saved_config_rebuilds_the_enas_network():
    cfg = build_train_config(None, {"model.channels": 4, "model.layers": 5}, preset="enas")
    saved = to_dict(cfg)
    assert {k: saved["model"][k] for k in NEW_KEYS} == ENAS_OPTIONS
    trained = make_child(ZOO["ENAS_RELEASED"], cfg, INFO)
    model, cfg2, _, _ = network_from_checkpoint(_state(saved, trained), inference=True)
    assert model.aux_index == 4 and model.final_relu and model.cells[0].base1 is not None
    resumed = make_child(ZOO["ENAS_RELEASED"], cfg2, INFO)  # as `enas train --resume` rebuilds it
    assert not any(p.requires_grad for p in resumed.auxiliary_head.parameters())
    assert model.classifier.bias is None
    x = torch.randn(2, 3, 8, 8)
    model.eval(), trained.eval()
    assert torch.equal(model(x)[0], trained(x)[0])


def test_checkpoint_without_the_new_keys_rebuilds_the_old_network():
    # A run saved before these keys existed was built with the DARTS behaviour.
    cfg = build_train_config(None, {"model.channels": 4, "model.layers": 5}, preset="enas")
    saved = to_dict(cfg)
    for key in NEW_KEYS:
        del saved["model"][key]
    m = cfg.model
    old = ChildNetwork(ZOO["ENAS_RELEASED"], C=4, layers=5, num_classes=5, auxiliary=True, image_size=8,
                       dropout=m.dropout, drop_path_depth_scaled=True)  # the old make_child call
    model, cfg2, _, _ = network_from_checkpoint(_state(saved, old), inference=True)
    assert cfg2.model.aux_position == "reduction" and not cfg2.model.base_conv
    assert model.aux_index == 2 * 5 // 3 and not model.final_relu and model.cells[0].base1 is None
    x = torch.randn(2, 3, 8, 8)
    model.eval(), old.eval()
    assert torch.equal(model(x)[0], old(x)[0])
    # And training resumes with the head where it was.
    assert make_child(ZOO["ENAS_RELEASED"], cfg2, INFO).load_state_dict(old.state_dict()) is not None


def test_retrain_step_leaves_the_frozen_aux_head_alone():
    # The trainer gives every optimizer parameter a zero gradient (off-path updates), so
    # the head must not be in the optimizer at all, or weight decay would shrink it.
    from enas.retrain.setup import build_retrain

    cfg = build_train_config(None, {"data.dataset": "digits", "model.channels": 4, "model.layers": 5,
                                    "data.batch_size": 16, "data.cutout": 0}, preset="enas")
    setup = build_retrain(cfg, ZOO["ENAS_RELEASED"], torch.device("cpu"))
    head = {n: p.detach().clone() for n, p in setup.model.auxiliary_head.named_parameters()}
    cells = setup.model.cells[0].preprocess1[1].weight.detach().clone()
    x, y = next(iter(setup.train_loader.epoch_batches(0)))
    for _ in range(2):
        setup.trainer.train_step(x, y, None)
    assert all(torch.equal(p, head[n]) for n, p in setup.model.auxiliary_head.named_parameters())
    assert not torch.equal(setup.model.cells[0].preprocess1[1].weight, cells)
