"""Config resolution: defaults -> preset -> file -> flags; errors name the key."""
import json

import pytest

from enas.config.lib import parse_set_option, read_config_file, to_dict
from enas.errors import UserError
from enas.config.search import SearchConfig, build_search_config


def test_paper_defaults_are_the_official_enas_values():
    cfg = build_search_config("enas", "paper", None, {})
    assert (cfg.epochs, cfg.data.batch_size, cfg.model.channels, cfg.model.layers) == (150, 160, 20, 8)
    assert (cfg.optim.lr_max, cfg.optim.lr_min, cfg.optim.sgdr_t0, cfg.optim.sgdr_tmul) == (0.05, 5e-4, 10, 2)
    assert cfg.optim.nesterov and cfg.optim.weight_decay == 2e-4 and cfg.model.aux_weight == 0.4
    c = cfg.controller
    assert (c.hidden, c.tanh_constant, c.op_tanh_reduce, c.lr, c.beta1, c.eps) == (64, 1.1, 2.5, 0.0035, 0.0, 1e-3)
    assert (c.baseline_decay, c.entropy_weight, c.samples_per_update, c.updates_per_epoch) == (0.99, 1e-4, 10, 30)
    assert cfg.model.space == "micro" and cfg.data.dataset == "cifar10"


def test_darts_paper_preset():
    cfg = build_search_config("enas", "paper", None, {"strategy": "darts"})
    assert (cfg.epochs, cfg.data.batch_size, cfg.model.channels, cfg.model.layers) == (50, 64, 16, 8)
    assert (cfg.optim.schedule, cfg.optim.lr_max, cfg.optim.lr_min, cfg.optim.weight_decay) == (
        "cosine", 0.025, 0.001, 3e-4)
    d = cfg.darts
    assert (d.arch_lr, d.arch_beta1, d.arch_beta2, d.arch_weight_decay, d.train_portion) == (
        3e-4, 0.5, 0.999, 1e-3, 0.5)
    assert cfg.model.space == "darts"


def test_precedence_file_over_preset_and_flags_over_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('epochs = 7\n[controller]\nlr = 0.01\n[data]\ndataset = "digits"\n')
    cfg = build_search_config("enas", "quick", read_config_file(f), {"epochs": 3})
    assert cfg.epochs == 3 and cfg.controller.lr == 0.01 and cfg.data.dataset == "digits"
    assert cfg.preset == "quick" and cfg.model.channels == 8
    j = tmp_path / "c.json"
    j.write_text(json.dumps(to_dict(cfg)))
    again = build_search_config("enas", "paper", read_config_file(j), {})
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize("data, message", [
    ({"epochz": 3}, "unknown config key 'epochz'"),
    ({"controller": {"lrr": 1}}, "unknown config key 'controller.lrr'"),
    ({"epochs": "ten"}, "'epochs': expected an integer"),
    ({"data": {"flip": 1}}, "'data.flip': expected true or false"),
    ({"data": 3}, "config section data must be a table"),
    ({"model": {"layers": 2}}, "model.layers must be >= 3"),
    ({"darts": {"order": 3}}, "darts.order must be 1 or 2"),
    ({"strategy": "amoeba"}, "unknown strategy"),
])
def test_bad_config_values_are_named(data, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        build_search_config("enas", "paper", data, {})


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_config_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(UserError, match="malformed"):
        read_config_file(bad)
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(UserError, match="top level"):
        read_config_file(arr)


def test_set_option_parsing():
    assert parse_set_option("controller.lr=0.001") == ("controller.lr", 0.001)
    assert parse_set_option("data.dataset=digits") == ("data.dataset", "digits")
    assert parse_set_option("model.ops=[\"sep_conv_3x3\"]") == ("model.ops", ["sep_conv_3x3"])
    with pytest.raises(UserError):
        parse_set_option("noequals")
    assert SearchConfig().strategy == "enas"


def test_random_paper_preset_is_li_and_talwalkar():
    cfg = build_search_config("random", "paper", None, {})
    # liamcli/randomNAS_release scripts/run_experiment.sh and the DARTS wrapper's defaults.
    assert cfg.model.space == "darts"
    assert (cfg.epochs, cfg.data.batch_size, cfg.model.channels, cfg.model.layers) == (150, 64, 24, 8)
    o = cfg.optim
    assert (o.schedule, o.lr_max, o.lr_min, o.momentum, o.nesterov, o.weight_decay, o.grad_clip) == (
        "cosine", 0.025, 0.001, 0.9, False, 3e-4, 1.0)
    assert not cfg.model.auxiliary and cfg.darts.train_portion == 0.5 and cfg.data.cutout == 0
    d = cfg.derive
    assert (d.samples, d.eval_batches, d.top_k, d.rounds) == (1000, 10, 10, None)
    # Li & Talwalkar leave off-path weights alone (grads set to None, only sampled ops run).
    assert cfg.optim.update_off_path is False


def test_off_path_updates_and_clipping_resolve_per_strategy():
    enas = build_search_config("enas", "paper", None, {})
    darts = build_search_config("darts", "paper", None, {})
    # Official ENAS: l2 over all variables (off-path weights decay); its "norm" clip is a no-op.
    assert enas.optim.update_off_path is True and enas.optim.grad_clip is None
    assert darts.optim.update_off_path is True and darts.optim.grad_clip == 5.0
    cheap = build_search_config("enas", "quick", None, {})
    assert cheap.optim.update_off_path is True
    off = build_search_config("enas", "paper", {"optim": {"update_off_path": False}}, {})
    assert off.optim.update_off_path is False
    with pytest.raises(UserError, match="update_off_path"):
        build_search_config("enas", "paper", {"optim": {"update_off_path": "yes"}}, {})
    with pytest.raises(UserError, match="derive.top_k"):
        build_search_config("random", "paper", {"derive": {"top_k": 2000}}, {})
