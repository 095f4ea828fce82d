"""The ``enas train`` presets against the official scripts, transcribed here independently.

ENAS: melodyguan/enas ``scripts/cifar10_micro_final.sh`` (flags), ``src/cifar10/main.py``
(values the script does not set) and ``src/cifar10/micro_child.py``. DARTS:
quark0/darts ``cnn/train.py`` defaults (REFERENCE Sec. 4).
"""
import math

import pytest

from enas.errors import UserError
from enas.config.train import TrainConfig, build_train_config

# scripts/cifar10_micro_final.sh
ENAS_MICRO_FINAL_SH = {
    "batch_size": 144, "num_epochs": 630, "child_use_aux_heads": True, "child_cutout_size": 16,
    "child_num_layers": 15, "child_out_filters": 36, "child_num_cells": 5, "child_keep_prob": 0.80,
    "child_drop_path_keep_prob": 0.60, "child_l2_reg": 2e-4, "child_lr_cosine": True, "child_lr_max": 0.05,
    "child_lr_min": 0.0001, "child_lr_T_0": 10, "child_lr_T_mul": 2,
}
# main.py / utils.py / micro_child.py: MomentumOptimizer(lr, 0.9, use_nesterov=True); train_loss =
# loss + 0.4 * aux_loss; clip_mode "norm" with child_grad_bound 5.0, whose loop keeps the raw
# gradient (clipped.append(g)), so nothing is clipped.
ENAS_CODE = {"momentum": 0.9, "nesterov": True, "aux_weight": 0.4, "effective_grad_clip": None}

# cnn/train.py argparse defaults; the README's command adds --auxiliary --cutout.
DARTS_TRAIN_PY = {
    "batch_size": 96, "learning_rate": 0.025, "momentum": 0.9, "weight_decay": 3e-4, "epochs": 600,
    "init_channels": 36, "layers": 20, "auxiliary": True, "auxiliary_weight": 0.4, "cutout": True,
    "cutout_length": 16, "drop_path_prob": 0.2, "grad_clip": 5.0,
}
# CosineAnnealingLR(optimizer, float(args.epochs)): eta_min 0; plain SGD momentum (no Nesterov).
DARTS_SCHEDULE = {"eta_min": 0.0, "nesterov": False}


def test_enas_preset_is_the_official_final_script():
    sh, code = ENAS_MICRO_FINAL_SH, ENAS_CODE
    cfg = build_train_config(None, {}, preset="enas")
    d, m, o = cfg.data, cfg.model, cfg.optim
    assert cfg.preset == "enas" and cfg.epochs == sh["num_epochs"] == 630
    assert d.batch_size == sh["batch_size"] and d.cutout == sh["child_cutout_size"]
    assert (d.pad, d.flip) == (4, True)  # models.py _pre_process: pad 4, random crop 32, flip
    assert m.channels == sh["child_out_filters"]
    assert m.layers == sh["child_num_layers"] + 2  # num_layers + 2 cells, the two reductions included
    assert m.auxiliary == sh["child_use_aux_heads"] and m.aux_weight == code["aux_weight"]
    assert math.isclose(m.dropout, 1 - sh["child_keep_prob"])
    assert math.isclose(m.drop_path_prob, 1 - sh["child_drop_path_keep_prob"])
    assert m.drop_path_schedule == "enas"  # scaled by (layer + 1) / (num_layers + 2) and by step progress
    assert sh["child_lr_cosine"] and o.schedule == "sgdr"
    assert (o.lr_max, o.lr_min) == (sh["child_lr_max"], sh["child_lr_min"])
    assert (o.sgdr_t0, o.sgdr_tmul) == (sh["child_lr_T_0"], sh["child_lr_T_mul"])
    assert (o.momentum, o.nesterov) == (code["momentum"], code["nesterov"])
    # loss += l2_reg * sum(w ** 2): gradient 2 * l2_reg * w, i.e. PyTorch weight_decay 2 * l2_reg.
    assert math.isclose(o.weight_decay, 2 * sh["child_l2_reg"])
    assert o.grad_clip is code["effective_grad_clip"]


def test_enas_preset_builds_the_official_fixed_network():
    m = build_train_config(None, {}, preset="enas").model
    assert m.aux_position == "after_reduction"  # aux_head_indices = [pool_layers[-1] + 1]
    assert m.final_relu  # x = relu(x) before global_avg_pool
    assert m.drop_path_exempt == "skip"  # _apply_drop_path only for x_op in [0, 1, 2, 3]
    assert m.base_conv  # the "layer_base" 1x1 conv on layers[1]
    assert not m.classifier_bias  # "fc" and aux "fc": a weight, no bias
    assert m.aux_same_padding  # aux "avg_pool" conv: hw x hw, padding "SAME"
    assert m.bn_eps == 1e-3  # image_ops.batch_norm epsilon
    assert not m.aux_trainable  # _build_train: tf_variables exclude "aux_head"
    assert m.loose_inputs  # _fixed_combine: every state with used == 0, the two inputs included
    assert m.stem_multiplier == 3  # stem_conv: out_filters * 3


def test_darts_preset_is_the_official_evaluation_protocol():
    py, sched = DARTS_TRAIN_PY, DARTS_SCHEDULE
    for cfg in (TrainConfig(), build_train_config(None, {}, preset="darts"), build_train_config(None, {})):
        d, m, o = cfg.data, cfg.model, cfg.optim
        assert cfg.preset == "darts" and cfg.epochs == py["epochs"]
        assert d.batch_size == py["batch_size"] and d.cutout == py["cutout_length"] and py["cutout"]
        assert (m.channels, m.layers) == (py["init_channels"], py["layers"])
        assert m.auxiliary == py["auxiliary"] and m.aux_weight == py["auxiliary_weight"]
        assert m.drop_path_prob == py["drop_path_prob"] and m.drop_path_schedule == "linear"
        assert m.dropout == 0.0 and m.stem_multiplier == 3
        assert (o.schedule, o.lr_max, o.lr_min) == ("cosine", py["learning_rate"], sched["eta_min"])
        assert (o.momentum, o.nesterov) == (py["momentum"], sched["nesterov"])
        assert o.weight_decay == py["weight_decay"] and o.grad_clip == py["grad_clip"]
        # NetworkCIFAR as released: aux head on the reduction cell, no final ReLU, every
        # non-Identity op dropped, nn.Linear with bias, a valid 2x2 aux conv, BN eps 1e-5.
        assert (m.aux_position, m.final_relu, m.drop_path_exempt) == ("reduction", False, "identity")
        assert (m.base_conv, m.classifier_bias, m.aux_same_padding, m.bn_eps) == (False, True, False, 1e-5)
        assert m.aux_trainable and not m.loose_inputs  # Cell concatenates the concat nodes only


@pytest.mark.parametrize("key, value, message", [
    ("model.aux_position", "late", "model.aux_position must be one of"),
    ("model.drop_path_exempt", "all", "model.drop_path_exempt must be one of"),
    ("model.bn_eps", 0.0, "model.bn_eps must be in"),
    ("model.bn_eps", 1.0, "model.bn_eps must be in"),
    ("model.loose_inputs", 1, "'model.loose_inputs': expected true or false"),
    ("model.final_relu", "yes", "'model.final_relu': expected true or false"),
])
def test_bad_network_options_are_named(key, value, message):
    with pytest.raises(UserError, match=message):
        build_train_config(None, {key: value}, preset="enas")


def test_after_reduction_head_needs_four_layers():
    with pytest.raises(UserError, match="layers >= 4"):
        build_train_config(None, {"model.layers": 3}, preset="enas")
    build_train_config(None, {"model.layers": 3, "model.auxiliary": False}, preset="enas")
    build_train_config(None, {"model.layers": 3}, preset="darts")  # the reduction cell itself
