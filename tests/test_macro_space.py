"""The ENAS macro space: MacroArch and its arc string, decisions, and the search and fixed networks."""
import json

import pytest
import torch
from torch import nn

from shared_model.macro import MacroNetwork, MacroSupernet, fixed_op, search_branch
from shared_model.macro_arch import MACRO_OPS, MacroArch, MacroArchError, pool_layers
from shared_model.spaces import get_space
from shared_model.zoo import ENAS_MACRO_ARC, get_genotype

SMALL = "1  3 1  4 0 1  5 1 1 0"  # 4 layers: sep 3x3; sep 5x5 + stem; avg pool + layer 0; max pool + stem, layer 0


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_arc_string_round_trips():
    arch = MacroArch.from_arc(SMALL)
    assert arch.ops == ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")
    assert arch.skips == ((), (1,), (0, 1), (1, 1, 0))
    assert arch.to_arc() == " ".join(SMALL.split()) and MacroArch.from_arc(arch.to_arc()) == arch
    assert arch.to_arc(per_line=True) == "1\n3 1\n4 0 1\n5 1 1 0"
    assert arch.skip_sources(3) == [0, 1] and arch.skip_count() == 4
    released = MacroArch.from_arc(ENAS_MACRO_ARC)  # newlines and repeated spaces are whitespace too
    assert MacroArch.from_arc(released.to_arc(per_line=True)) == released
    assert list(released.actions()) == [int(t) for t in ENAS_MACRO_ARC.split()]
    assert pool_layers(24) == (7, 15) and pool_layers(12) == (3, 7) and pool_layers(3) == (0, 1)
    assert pool_layers(2) == ()


def test_decode_encode_and_json_round_trips():
    space = get_space("macro", num_layers=6)
    assert space.num_layers == 6 and len(space.decisions) == 6 + 15
    kinds = [(d.node, d.slot, d.kind, d.num_choices) for d in space.decisions[:6]]
    assert kinds == [(0, 0, "op", 6), (1, 0, "op", 6), (1, 0, "skip", 2), (2, 0, "op", 6), (2, 0, "skip", 2),
                     (2, 1, "skip", 2)]
    for seed in range(10):
        actions = space.random_actions(gen(seed))
        arch = space.decode(actions)
        assert space.encode(arch) == actions == list(arch.actions())  # the actions are the arc
        assert MacroArch.from_arc(arch.to_arc()) == arch
        data = json.loads(arch.to_json())
        assert list(data) == ["ops", "skips"] and [len(r) for r in data["skips"]] == list(range(6))
        assert space.arch_from_json(data) == arch == MacroArch.from_json(arch.to_json())
    with pytest.raises(ValueError, match="has 24 layers; this macro space 6"):
        space.encode(get_genotype("ENAS_MACRO"))
    assert space.for_layers(6) is space and space.for_layers(24).num_layers == 24
    assert get_space("macro").num_layers == 12


@pytest.mark.parametrize("text, match", [
    ("", "L \\(L \\+ 1\\) / 2 integers"), ("0 3", "got 2"), ("0 3 0 1", "got 4"),
    ("0 6 0", "op index 6 out of range 0..5"), ("0 3 2", "skip bit 0 must be 0 or 1, got 2"),
    ("0 3 -1", "non-negative integers, got '-1'"), ("0 3 x", "got 'x'"), ("0 3 1.0", "got '1.0'"),
    ("0 3 ١", "got '١'"), ("1" * 100_001, "at most 100000"),
])
def test_malformed_arc_strings_are_one_line(text, match):
    with pytest.raises(MacroArchError, match=match) as info:
        MacroArch.from_arc(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("data, match", [
    ([], "JSON object"), ({"ops": ["conv_3x3"]}, "missing field: skips"),
    ({"ops": ["conv_3x3"], "skips": [[]], "arc": "0"}, "unknown field\\(s\\): arc"),
    ({"ops": [], "skips": []}, "non-empty list"), ({"ops": "conv_3x3", "skips": [[]]}, "non-empty list"),
    ({"ops": ["conv_7x7"], "skips": [[]]}, "layer 0: unknown op 'conv_7x7'"),
    ({"ops": ["conv_3x3", "conv_3x3"], "skips": [[]]}, "one list of bits per layer"),
    ({"ops": ["conv_3x3", "conv_3x3"], "skips": [[], [1, 0]]}, "layer 1: needs 1 skip bit"),
    ({"ops": ["conv_3x3", "conv_3x3"], "skips": [[], [True]]}, "must be 0 or 1, got True"),
    ({"ops": ["conv_3x3", "conv_3x3"], "skips": [[], "1"]}, "layer 1: needs 1 skip bit"),
])
def test_malformed_json_is_one_line(data, match):
    with pytest.raises(MacroArchError, match=match) as info:
        MacroArch.from_json(json.dumps(data))
    assert "\n" not in str(info.value)
    with pytest.raises(MacroArchError):
        MacroArch.from_actions([0, 3, True])


def _calls(net):
    """Counts forward calls per module name (to see which branches run)."""
    counts = {}
    for name, m in net.named_modules():
        m.register_forward_hook(lambda mod, inp, out, name=name: counts.__setitem__(name, counts.get(name, 0) + 1))
    return counts


def test_search_network_runs_only_the_sampled_branches_and_sums_the_skips():
    arch = MacroArch.from_arc(SMALL)
    torch.manual_seed(0)
    net = MacroSupernet(channels=4, num_layers=4, num_classes=3, in_channels=1, image_size=8)
    # Official branch order: 1x1 conv-BN-ReLU, then k x k conv (separable: depthwise + pointwise)-BN-ReLU.
    assert [type(m).__name__ for m in net.layers[0].branches[1]] == \
        ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "Conv2d", "BatchNorm2d", "ReLU"]
    assert net.layers[0].branches[1][3].groups == 4 and net.layers[0].bn is None
    assert isinstance(net.layers[0].branches[4][-1], nn.AvgPool2d) and net.layers[0].branches[4][-1].count_include_pad is False
    # Channels stay C through both reductions (after layers 0 and 1), which halve every state.
    assert net.out_channels == 4 and sorted(net.reduce) == ["0", "1"] and len(net.reduce["1"]) == 3
    assert all(m.eps == 1e-3 and m.running_mean is None for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    counts = _calls(net)
    x = torch.randn(2, 1, 8, 8)
    net.eval()  # batch statistics even in eval: no running stats exist
    logits, aux = net(x, arch)
    assert logits.shape == (2, 3) and aux is None
    ran = {n for n in counts if ".branches." in n and n.count(".") == 3}
    assert ran == {"layers.0.branches.1", "layers.1.branches.3", "layers.2.branches.4", "layers.3.branches.5"}
    # Layer 3 = BN(max_pool branch(state 3) + state 0 + state 1), states halved twice.
    states = {}
    net.layers[3].register_forward_hook(lambda m, inp, out: states.update(inp=list(inp[0]), out=out))
    net(x, arch)
    prev = states["inp"]
    expected = net.layers[3].bn(net.layers[3].branches[5](prev[-1]) + prev[0] + prev[1])
    assert torch.allclose(states["out"], expected, atol=1e-6)
    with pytest.raises(ValueError, match="has 2 layers, the network 4"):
        net(x, MacroArch.from_arc("0 0 1"))


def test_fixed_network_concatenates_skips_and_doubles_channels():
    arch = MacroArch.from_arc(SMALL)
    torch.manual_seed(0)
    net = MacroNetwork(arch, channels=4, num_classes=3, in_channels=1, image_size=8, dropout=0.5, sep_as_conv=False)
    assert net.layer_channels == [4, 8, 16, 16] and net.out_channels == 16
    # Official fixed order: ReLU-1x1 conv-BN-ReLU-k x k conv-BN; skips concatenated, then ReLU-1x1 conv-BN.
    assert [type(m).__name__ for m in fixed_op("conv_5x5", 4, 4, False)] == \
        ["ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]
    assert net.layers[0].combine is None and net.layers[1].combine[1].in_channels == 2 * 8
    assert net.layers[3].combine[1].in_channels == 3 * 16 and net.classifier.bias is None
    states = {}
    net.layers[3].register_forward_hook(lambda m, inp, out: states.update(inp=list(inp[0]), out=out))
    net.eval()
    logits, aux = net(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 3) and aux is None
    prev = states["inp"]
    expected = net.layers[3].combine(torch.cat([prev[0], prev[1], net.layers[3].op(prev[-1])], dim=1))
    assert torch.allclose(states["out"], expected, atol=1e-6)
    # The official fixed layer builds the separable ops as full convs: more weights, no groups.
    full = MacroNetwork(arch, channels=4, num_classes=3, in_channels=1, image_size=8, sep_as_conv=True)
    assert full.layers[0].op[4].groups == 1 and net.layers[0].op[4].groups == 4
    assert sum(p.numel() for p in full.parameters()) > sum(p.numel() for p in net.parameters())


def test_space_builders_check_depth_and_options():
    space = get_space("macro")
    arch = space.decode(space.random_actions(gen(0)))
    with pytest.raises(ValueError, match="has 12 layers but model.layers is 24"):
        space.build_child(arch, 4, 24, 10)
    with pytest.raises(ValueError, match="no auxiliary head"):
        space.build_child(arch, 4, 12, 10, auxiliary=True)
    with pytest.raises(ValueError, match="takes no option 'bogus'"):
        space.build_supernet(4, 12, 10, bogus=1)
    with pytest.raises(ValueError, match="designs 12 layers, not 6"):
        space.build_supernet(4, 6, 10)
    with pytest.raises(ValueError, match="even channel count"):
        space.build_supernet(5, 12, 10)
    with pytest.raises(ValueError, match="no DARTS relaxation; search it with --strategy enas or random"):
        space.check_search(mixing=True)
    # The options every child builder receives from `enas train` are accepted (cell-only ones ignored).
    net = space.build_child(arch, 4, 12, 10, image_size=8, stem_multiplier=3, dropout=0.5, base_conv=True,
                            drop_path_depth_scaled=True, loose_inputs=True, bn_eps=1e-5, final_relu=True)
    assert net.final_relu and all(m.eps == 1e-5 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert space.arch_overrides(arch) == {"model.layers": 12}
    assert space.claims_string(ENAS_MACRO_ARC) and not space.claims_string("DARTS_V2")
    assert not space.claims_string("  ") and not space.claims_string("|nor_conv_3x3~0|")


def test_search_branches_cover_every_op():
    for op in MACRO_OPS:
        branch = search_branch(op, 4, 4)
        assert branch(torch.randn(2, 4, 6, 6)).shape == (2, 4, 6, 6)
