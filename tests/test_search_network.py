"""The search build picks each strategy's official network and data: cell output, loose
inputs, the frozen ENAS aux head, augmented DARTS architecture batches, and a clear error
for old checkpoints."""
import pytest
import torch

from enas.data.augment import DeviceLoader
from enas.runs.checkpoint import load_checkpoint, save_checkpoint
from enas.errors import UserError
from enas.search.build import build_search, load_search_data
from enas.search.driver import SearchDriver
from enas.config.search import build_search_config
from shared_model.genotype import Genotype
from shared_model.supernet import Supernet

TINY = {"epochs": 1, "data.batch_size": 16, "model.channels": 4, "model.layers": 3}


def tiny_config(strategy, **extra):
    flags = dict(TINY, **extra)
    if strategy == "darts":
        flags.update({"darts.train_portion": 0.05, "model.num_nodes": 2})
    return build_search_config(strategy, "quick", None, flags)


@pytest.mark.parametrize("strategy,preset,space,expected", [
    ("darts", "paper", None, "concat"), ("darts", "quick", None, "concat"),
    ("darts", "paper", "micro", "concat"),  # mixed architectures output every node
    ("enas", "paper", None, "conv"), ("enas", "quick", "darts", "conv"),
    ("random", "paper", "micro", "conv"), ("random", "paper", "darts", "concat"),
])
def test_cell_output_defaults_to_the_strategy_network(strategy, preset, space, expected):
    flags = {} if space is None else {"model.space": space}
    assert build_search_config(strategy, preset, None, flags).model.cell_output == expected
    flags["model.cell_output"] = "conv"
    assert build_search_config(strategy, preset, None, flags).model.cell_output == "conv"


def test_bad_cell_output_is_one_clear_line():
    with pytest.raises(UserError, match="^model.cell_output must be one of conv, concat$"):
        build_search_config("enas", "paper", None, {"model.cell_output": "sum"})
    # Refused with the config, before any run folder exists (the space's check_search).
    with pytest.raises(UserError, match="needs every node.*loose ends; use 'conv'") as err:
        tiny_config("enas", **{"model.cell_output": "concat"})
    assert "\n" not in str(err.value)


def test_build_wires_the_network_of_each_strategy():
    enas = build_search(tiny_config("enas"), torch.device("cpu")).model
    assert enas.cell_output == "conv" and enas.loose_inputs
    assert enas.cells[0].out_weight.shape[1] == enas.num_nodes + 2
    darts = build_search(tiny_config("darts"), torch.device("cpu")).model
    assert darts.cell_output == "concat" and not darts.loose_inputs
    assert darts.classifier.in_features == darts.num_nodes * darts.cells[-1].pre1[1].out_channels
    plain = build_search(tiny_config("enas", **{"model.space": "darts"}), torch.device("cpu")).model
    assert plain.cell_output == "conv" and not plain.loose_inputs  # DARTS concat rule: all nodes


def test_darts_architecture_batches_are_augmented_like_weight_batches():
    cfg = tiny_config("darts", **{"data.pad": 2, "data.cutout": 3})
    setup = build_search(cfg, torch.device("cpu"))
    arch_loader, train_loader = setup.strategy.valid_loader, setup.strategy.train_loader
    assert arch_loader.train and (arch_loader.pad, arch_loader.flip, arch_loader.cutout) == \
        (train_loader.pad, train_loader.flip, train_loader.cutout) == (2, cfg.data.flip, 3)
    # Its own saved generator: neither the weight batches' nor the reward loader's.
    assert arch_loader.generator is setup.generators["arch_augment"]
    assert sum(g is arch_loader.generator for g in setup.generators.values()) == 1
    assert train_loader.generator is not arch_loader.generator
    _, valid_data = load_search_data(cfg)
    plain = DeviceLoader(valid_data, cfg.data.batch_size, torch.device("cpu"), train=False, shuffle=True,
                         drop_last=True, seed=cfg.run.seed + 1)
    (xa, ya), (xp, yp) = next(arch_loader.epoch_batches(0)), next(plain.epoch_batches(0))
    assert torch.equal(ya, yp), "same images in the same order"
    assert xa.shape == xp.shape and not torch.equal(xa, xp), "architecture batches are not augmented"


def test_enas_reward_batches_stay_unaugmented():
    setup = build_search(tiny_config("enas"), torch.device("cpu"))
    assert not setup.strategy.valid_loader.train
    assert "arch_augment" not in setup.generators


@pytest.mark.parametrize("strategy", ["enas", "darts"])
def test_old_search_checkpoint_gives_one_clear_line(tmp_path, strategy):
    cfg = tiny_config(strategy)
    setup = build_search(cfg, torch.device("cpu"))
    driver = SearchDriver(cfg, setup, tmp_path)
    driver.checkpoint()
    path = tmp_path / "checkpoints" / "last.pt"
    driver.restore()  # a current checkpoint loads
    # The supernet of earlier versions: 1x1 conv output over computed nodes only.
    m = setup.model
    old = Supernet(m.ops, m.num_nodes, cfg.model.channels, cfg.model.layers, setup.num_classes,
                   in_channels=m.stem[0].in_channels, image_size=8)
    state = load_checkpoint(path, kind="search")
    state["model"] = old.state_dict()
    save_checkpoint(path, "search", {k: v for k, v in state.items() if k not in ("format", "version", "kind")})
    with pytest.raises(UserError, match="does not fit this search network.*start a new search") as err:
        SearchDriver(cfg, build_search(cfg, torch.device("cpu")), tmp_path).restore()
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


@pytest.mark.parametrize("strategy,space,expected", [
    ("enas", None, False), ("enas", "darts", False),  # micro_child._build_train skips "aux_head" variables
    ("random", "micro", False), ("random", None, True), ("darts", None, True), ("darts", "micro", True),
])
def test_aux_trainable_defaults_to_the_official_optimizer(strategy, space, expected):
    flags = {} if space is None else {"model.space": space}
    assert build_search_config(strategy, "paper", None, flags).model.aux_trainable is expected
    flags["model.aux_trainable"] = not expected
    assert build_search_config(strategy, "paper", None, flags).model.aux_trainable is (not expected)
    with pytest.raises(UserError, match="model.aux_trainable"):
        build_search_config(strategy, "paper", {"model": {"aux_trainable": "no"}}, {})


# A 4-node micro genotype (the quick space) whose nodes read both inputs.
MICRO_4 = Genotype([("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 2), ("sep_conv_5x5", 1),
                    ("skip_connect", 3), ("sep_conv_3x3", 2), ("max_pool_3x3", 4), ("sep_conv_3x3", 0)], [5],
                   [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_3x3", 2), ("skip_connect", 1),
                    ("sep_conv_3x3", 3), ("avg_pool_3x3", 0), ("skip_connect", 4), ("sep_conv_3x3", 2)], [5])


def test_enas_search_step_leaves_the_aux_head_alone_but_its_loss_trains_the_cells():
    torch.manual_seed(0)
    setup = build_search(tiny_config("enas", **{"model.auxiliary": True}), torch.device("cpu"))
    model, trainer = setup.model, setup.trainer
    head = {n: p.detach().clone() for n, p in model.aux_head.named_parameters()}
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert head and not any(id(p) in in_optimizer for p in model.aux_head.parameters())
    assert not any(p.requires_grad for p in model.aux_head.parameters())
    cell0 = model.cells[0].pre1[1].weight
    before = cell0.detach().clone()
    x, y = next(iter(setup.strategy.train_loader.epoch_batches(0)))
    for _ in range(2):  # the second step also has momentum and weight decay to apply
        assert trainer.train_step(x, y, MICRO_4)["skipped"] == 0.0
    assert all(torch.equal(p, head[n]) for n, p in model.aux_head.named_parameters())
    assert not torch.equal(cell0, before)
    # The aux term alone reaches the cells below the head (aux_index: the last cell here).
    assert model.aux_index == len(model.cells) - 1
    model.zero_grad(set_to_none=True)
    model.train()
    _, aux = model(x, MICRO_4)
    torch.nn.functional.cross_entropy(aux, y).backward()
    assert cell0.grad is not None and cell0.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.aux_head.parameters())
    # The DARTS search network trains a head it is given.
    darts = build_search(tiny_config("darts", **{"model.auxiliary": True}), torch.device("cpu"))
    in_darts = {id(p) for g in darts.trainer.optimizer.param_groups for p in g["params"]}
    assert all(p.requires_grad and id(p) in in_darts for p in darts.model.aux_head.parameters())


def test_search_checkpoint_without_aux_trainable_resumes_with_a_trained_head(tmp_path):
    from enas.search.run import load_run as _load_run

    cfg = tiny_config("enas", **{"model.auxiliary": True, "model.aux_trainable": True})
    setup = build_search(cfg, torch.device("cpu"))
    SearchDriver(cfg, setup, tmp_path).checkpoint()
    path = tmp_path / "checkpoints" / "last.pt"
    state = load_checkpoint(path, kind="search")
    del state["config"]["model"]["aux_trainable"]  # a run saved before the key existed
    save_checkpoint(path, "search", {k: v for k, v in state.items() if k not in ("format", "version", "kind")})
    cfg2, _ = _load_run(tmp_path)
    assert cfg2.model.aux_trainable is True
    SearchDriver(cfg2, build_search(cfg2, torch.device("cpu")), tmp_path).restore()  # the optimizer fits
