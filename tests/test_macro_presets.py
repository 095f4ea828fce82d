"""The macro search and train presets against the official scripts, transcribed here independently.

melodyguan/enas ``scripts/cifar10_macro_search.sh`` and ``scripts/cifar10_macro_final.sh`` (flags),
``src/cifar10/main.py`` (lstm_size 64, one LSTM layer, controller_bl_dec 0.99) and ``src/utils.py``
(Adam beta1 0, epsilon 1e-3; momentum 0.9 Nesterov; loss += l2_reg * sum(w ** 2)).
"""
import math

import pytest

from enas.errors import UserError
from enas.config.search import build_search_config
from enas.config.train import build_train_config
from shared_model.spaces import get_space
from shared_model.zoo import get_genotype

MACRO_SEARCH_SH = {
    "batch_size": 128, "num_epochs": 310, "child_num_layers": 12, "child_out_filters": 36,
    "child_l2_reg": 0.00025, "child_num_branches": 6, "child_keep_prob": 0.90, "child_lr_max": 0.05,
    "child_lr_min": 0.0005, "child_lr_T_0": 10, "child_lr_T_mul": 2, "controller_entropy_weight": 0.0001,
    "controller_num_aggregate": 20, "controller_train_steps": 50, "controller_lr": 0.001,
    "controller_tanh_constant": 1.5, "controller_skip_target": 0.4, "controller_skip_weight": 0.8,
}
MACRO_FINAL_SH = {
    "batch_size": 100, "num_epochs": 310, "child_num_layers": 24, "child_out_filters": 96, "child_l2_reg": 2e-4,
    "child_keep_prob": 0.50, "child_lr_max": 0.05, "child_lr_min": 0.001, "child_lr_T_0": 10, "child_lr_T_mul": 2,
}


def test_macro_search_is_the_official_macro_search_script():
    sh = MACRO_SEARCH_SH
    cfg = build_search_config("enas", "paper", None, {"model.space": "macro"})
    m, o, c = cfg.model, cfg.optim, cfg.controller
    assert (cfg.epochs, cfg.data.batch_size) == (sh["num_epochs"], sh["batch_size"])
    assert (m.layers, m.channels, m.auxiliary) == (sh["child_num_layers"], sh["child_out_filters"], False)
    assert len(get_space("macro").policy_ops) == sh["child_num_branches"]
    assert math.isclose(m.dropout, 1 - sh["child_keep_prob"])
    assert (o.schedule, o.lr_max, o.lr_min, o.sgdr_t0, o.sgdr_tmul) == (
        "sgdr", sh["child_lr_max"], sh["child_lr_min"], sh["child_lr_T_0"], sh["child_lr_T_mul"])
    assert math.isclose(o.weight_decay, 2 * sh["child_l2_reg"]) and o.nesterov and o.grad_clip is None
    assert (c.lr, c.tanh_constant, c.temperature, c.entropy_weight) == (
        sh["controller_lr"], sh["controller_tanh_constant"], None, sh["controller_entropy_weight"])
    assert (c.samples_per_update, c.updates_per_epoch) == (sh["controller_num_aggregate"],
                                                          sh["controller_train_steps"])
    assert (c.skip_target, c.skip_weight) == (sh["controller_skip_target"], sh["controller_skip_weight"])
    assert (c.hidden, c.beta1, c.eps, c.baseline_decay) == (64, 0.0, 1e-3, 0.99)
    # Random search on the macro space trains the same network the same way; its own procedure stays.
    rnd = build_search_config("enas", "paper", None, {"model.space": "macro", "strategy": "random"})
    assert (rnd.epochs, rnd.model.channels, rnd.model.layers, rnd.optim.lr_max) == (310, 36, 12, 0.05)
    assert rnd.derive.samples == 1000 and rnd.optim.update_off_path is False
    quick = build_search_config("enas", "quick", None, {"model.space": "macro"})
    assert (quick.model.layers, quick.model.channels, quick.model.num_nodes, quick.data.dataset) == (6, 8, None,
                                                                                                   "digits")


def test_enas_macro_preset_is_the_official_macro_final_script():
    sh = MACRO_FINAL_SH
    arch = get_genotype("ENAS_MACRO")
    cfg = build_train_config(None, {}, arch_space=get_space("macro"), arch=arch)
    d, m, o = cfg.data, cfg.model, cfg.optim
    assert cfg.preset == "enas_macro" and cfg.epochs == sh["num_epochs"] and d.batch_size == sh["batch_size"]
    assert (d.pad, d.flip, d.cutout) == (4, True, 0)  # no --child_cutout_size
    assert (m.space, m.layers, m.channels) == ("macro", sh["child_num_layers"], sh["child_out_filters"])
    assert math.isclose(m.dropout, 1 - sh["child_keep_prob"])
    assert (m.auxiliary, m.drop_path_prob, m.bn_eps, m.classifier_bias, m.final_relu, m.sep_as_conv) == (
        False, 0.0, 1e-3, False, False, True)
    assert (o.schedule, o.lr_max, o.lr_min, o.sgdr_t0, o.sgdr_tmul) == (
        "sgdr", sh["child_lr_max"], sh["child_lr_min"], sh["child_lr_T_0"], sh["child_lr_T_mul"])
    assert math.isclose(o.weight_decay, 2 * sh["child_l2_reg"]) and o.nesterov and o.grad_clip is None
    # Another preset keeps the macro fixed network (C 96, dropout 0.5); quick keeps its own sizes.
    darts = build_train_config(None, {}, preset="darts", arch_space=get_space("macro"), arch=arch)
    assert (darts.model.channels, darts.model.layers, darts.model.dropout, darts.model.auxiliary) == (
        96, 24, 0.5, False)
    quick = build_train_config(None, {}, preset="quick", arch_space=get_space("macro"), arch=arch)
    assert (quick.model.channels, quick.model.layers, quick.data.dataset) == (8, 24, "digits")
    with pytest.raises(UserError, match="model.layers is 24 for this macro architecture, not 12"):
        build_train_config(None, {"model.layers": 12}, arch_space=get_space("macro"), arch=arch)
