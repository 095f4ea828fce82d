"""Every registered search space honours the space contract (timm style, one case per space)."""
import json
import math

import pytest
import torch

from enas.runs.draw import graph_image_array, graph_to_dot
from shared_model.arch_params import ArchParameters
from shared_model.spaces import CellGraph, get_space, list_spaces, register_space, space_for_arch, space_for_json

SPACES = list_spaces()
# Toy sizes: 2-4 channels, 8 px images, the fewest layers each space takes.
TOY = dict(channels=4, num_classes=3, in_channels=3, image_size=8)


def toy_layers(space):
    return space.min_layers


def toy_space(name):
    """The space as a toy network searches it (the macro space's decisions depend on the depth)."""
    space = get_space(name)
    return space.for_layers(toy_layers(space))


def test_the_registry_lists_the_built_in_spaces():
    assert SPACES[:4] == ("micro", "darts", "nb201", "macro")
    with pytest.raises(ValueError, match="unknown search space 'bogus'; choose from micro, darts, nb201"):
        get_space("bogus")
    with pytest.raises(ValueError, match="the nb201 space takes no option"):
        get_space("nb201", num_nodes=3)
    with pytest.raises(ValueError, match="already registered"):
        register_space("micro")(lambda: None)


@pytest.mark.parametrize("name", SPACES)
def test_decode_encode_round_trip_on_random_actions(name):
    space = get_space(name)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        actions = space.random_actions(gen)
        assert len(actions) == len(space.decisions)
        assert all(0 <= a < d.num_choices for a, d in zip(actions, space.decisions))
        arch = space.decode(actions)
        assert isinstance(arch, space.arch_type) and space.contains(arch)
        assert space.decode(space.encode(arch)) == arch
        assert space_for_arch(arch).arch_type is space.arch_type


@pytest.mark.parametrize("name", SPACES)
def test_json_round_trip_and_malformed_json_is_one_line(name):
    space = get_space(name)
    arch = space.decode(space.random_actions(torch.Generator().manual_seed(1)))
    data = space.arch_to_json(arch)
    assert space.claims_json(data) and space_for_json(data).arch_type is space.arch_type
    assert space.arch_from_json(json.loads(json.dumps(data))) == arch
    assert space.parse_arch(json.dumps(data)) == arch
    for bad in ("{", "[]", '{"bogus": 1}', json.dumps({**data, "extra": 1})):
        with pytest.raises(ValueError) as info:
            space.parse_arch(bad)
        assert "\n" not in str(info.value) and str(info.value)


@pytest.mark.parametrize("name", SPACES)
def test_description_and_drawing(name):
    space = get_space(name)
    arch = space.decode(space.random_actions(torch.Generator().manual_seed(2)))
    lines = space.describe(arch)
    assert lines and all(isinstance(line, str) and "\n" not in line for line in lines)
    json.dumps(space.describe_json(arch))
    graphs = space.graphs(arch)
    assert graphs
    for graph in graphs.values():
        assert isinstance(graph, CellGraph) and len(graph.labels) == len(graph.kinds)
        assert "digraph" in graph_to_dot(graph)
        image = graph_image_array(graph)
        assert image.ndim == 3 and image.shape[2] == 3


@pytest.mark.parametrize("name", SPACES)
def test_supernet_forward_backward_with_an_arch_and_mixing_weights(name):
    space = toy_space(name)
    net = space.build_supernet(layers=toy_layers(space), **TOY)
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    arch = space.decode(space.random_actions(torch.Generator().manual_seed(3)))
    logits, _ = net(x, arch)
    assert logits.shape == (2, 3)
    torch.nn.functional.cross_entropy(logits, y).backward()
    assert any(p.grad is not None for p in net.parameters())
    if not space.supports_mixing:
        # No DARTS relaxation (macro): every mixing member and a DARTS search refuse in one line.
        for call in (space.mixing_shapes, space.mixing_edges, lambda: space.check_search(mixing=True),
                     lambda: ArchParameters.for_space(space)):
            with pytest.raises(ValueError, match="no DARTS relaxation") as info:
                call()
            assert "\n" not in str(info.value)
        return
    # DARTS: mixing weights of the space's shapes run every op; derive gives an architecture.
    alphas = ArchParameters.for_space(space, generator=torch.Generator().manual_seed(0))
    assert alphas.shapes == space.mixing_shapes()
    logits, _ = net(x, alphas.mixed())
    torch.nn.functional.cross_entropy(logits, y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in alphas.parameters())
    derived = alphas.derive(space)
    assert isinstance(derived, space.arch_type)
    rows = space.mixing_edges()
    assert len(rows) == next(iter(space.mixing_shapes().values()))[0]


@pytest.mark.parametrize("name", SPACES)
def test_child_build_forward_backward(name):
    space = toy_space(name)
    arch = space.decode(space.random_actions(torch.Generator().manual_seed(4)))
    net = space.build_child(arch, layers=toy_layers(space), **TOY)
    logits, aux = net(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 3) and aux is None
    logits.sum().backward()


def test_sizes():
    # ENAS micro, 5 nodes: per cell and slot the inputs give 2 * 3 * 4 * 5 * 6 = 720 and the ops
    # 5 ** 5; two slots per node, normal + reduce: (720 * 5 ** 5) ** 4 action sequences.
    assert get_space("micro").size() == (720 * 5 ** 5) ** 4
    assert get_space("nb201").size() == 15_625
    # ENAS macro, 12 layers: 6 ops per layer and one skip bit per pair of layers (Sec. 2.3).
    macro = get_space("macro")
    assert macro.size() == 6 ** 12 * 2 ** 66 == math.prod(d.num_choices for d in macro.decisions)
    assert f"{macro.size():.1e}" == "1.6e+29"
    assert get_space("macro", num_layers=24).size() == 6 ** 24 * 2 ** (24 * 23 // 2)


def test_nb201_decisions_and_darts_derive_keep_none():
    space = get_space("nb201")
    assert [(d.cell, d.node, d.slot, d.kind, d.num_choices) for d in space.decisions] == [
        ("cell", 0, 0, "op", 5), ("cell", 1, 0, "op", 5), ("cell", 1, 1, "op", 5),
        ("cell", 2, 0, "op", 5), ("cell", 2, 1, "op", 5), ("cell", 2, 2, "op", 5)]
    # Argmax over every op, none included (official TinyNetworkDarts.genotype); ties: the first op.
    table = [[0.9, 0.1, 0, 0, 0], [0.2, 0.2, 0.2, 0.2, 0.2], [0, 0, 0, 1, 0]] + [[0, 0, 0, 0, 1]] * 3
    arch = space.derive({"cell": table})
    assert arch.to_string() == ("|none~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|"
                                "avg_pool_3x3~2|")


def test_enas_op_bias_reads_op_metadata():
    bias, prior = get_space("darts").enas_op_bias()
    ops = get_space("darts").policy_ops
    assert [op for op, b in zip(ops, bias) if b == 10.0] == ["sep_conv_3x3", "sep_conv_5x5"]
    assert get_space("nb201").enas_op_bias()[0] == [0.0] * 5


@pytest.mark.parametrize("name", SPACES)
def test_every_policy_samples_every_space(name):
    # The LSTM controller groups decisions by cell and node; NB201's nodes have op decisions only.
    from controller import Controller, MacroController, UniformPolicy

    # The macro space (skip decisions) gets its own sampler; build.py chooses the same way.
    from enas.search.build import build_controller
    from enas.config.search import ControllerConfig

    space = toy_space(name)
    bias, prior = space.enas_op_bias()
    gen = torch.Generator().manual_seed(0)
    enas, _ = build_controller(space, ControllerConfig())
    if any(d.kind == "skip" for d in space.decisions):
        assert isinstance(enas, MacroController)
        with pytest.raises(ValueError, match="skip decisions need"):
            Controller(space.decisions, len(space.policy_ops))
    else:
        assert isinstance(enas, Controller)
        enas = Controller(space.decisions, len(space.policy_ops), op_bias_init=bias, normal_op_prior=prior)
    for policy in (enas, UniformPolicy(space.decisions, distinct_inputs=space.distinct_inputs)):
        sample = policy.sample(generator=gen)
        assert space.contains(space.decode(sample.actions))
        log_prob, _ = policy.log_prob(sample.actions)
        assert torch.isfinite(log_prob)


def test_builders_keep_the_reference_parameter_counts():
    from shared_model.profile import count_parameters
    from shared_model.zoo import get_genotype

    darts = get_space("darts")
    with torch.device("meta"):
        # DARTS search network at C 16, 8 layers (official 1,930,618) and DARTS_V2 at C 36, 20 cells.
        assert count_parameters(darts.build_supernet(16, 8, 10, cell_output="concat")) == 1_930_618
        assert count_parameters(darts.build_child(get_genotype("DARTS_V2"), 36, 20, 10)) == 3_349_342
        enas = dict(aux_position="after_reduction", final_relu=True, drop_path_exempt="skip", base_conv=True,
                    classifier_bias=False, aux_same_padding=True, bn_eps=1e-3, loose_inputs=True)
        net = get_space("micro").build_child(get_genotype("ENAS_RELEASED"), 36, 17, 10, **enas)
        assert count_parameters(net) == 3_894_372
        # NAS-Bench-201 at C 16, N 5, 10 classes: all-none smallest, all-nor_conv_3x3 largest.
        nb201 = get_space("nb201")
        small = nb201.build_child(nb201.decode([0] * 6), 16, 5, 10)
        large = nb201.build_child(nb201.decode([3] * 6), 16, 5, 10)
        assert (count_parameters(small), count_parameters(large)) == (73_306, 1_531_546)
        # ENAS macro: the released 24-layer arc at C 96 as the official _fixed_layer builds it (separable
        # ops as full convs) has 42,559,392 parameters, counted variable by variable like its
        # count_model_params (README "The macro space"); depthwise-separable ops give 30,947,424, C 128
        # (the wide row) 75,636,608. The search network at C 36, 12 layers has 697,860.
        macro, released = get_space("macro"), get_genotype("ENAS_MACRO")
        official = dict(sep_as_conv=True, bn_eps=1e-3, classifier_bias=False)
        assert count_parameters(macro.build_child(released, 96, 24, 10, **official)) == 42_559_392
        assert count_parameters(macro.build_child(released, 96, 24, 10, sep_as_conv=False)) == 30_947_424
        assert count_parameters(macro.build_child(released, 128, 24, 10, **official)) == 75_636_608
        assert count_parameters(macro.build_supernet(36, 12, 10)) == 697_860
