"""NAS-Bench-201 supernet and fixed network: paths, mixing, batch-stats BN, parameter counts."""
import pytest
import torch
from torch import nn

from shared_model.nb201 import NB201Network, NB201SearchCell, NB201Supernet, ResNetBasicBlock
from shared_model.nb201_arch import NB201_OPS, NB201Arch
from shared_model.ops import make_op
from shared_model.supernet import MixedArch

# The example cell of the brief / test_nb201_arch (not claimed to be the benchmark optimum).
BEST = NB201Arch.from_string(
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
TINY = dict(channels=4, cells_per_stage=1, num_classes=3, image_size=8)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _batch(seed: int = 0, size: int = 8) -> torch.Tensor:
    return torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_nb201_ops_are_relu_conv_bn_and_avg_pool_excludes_padding():
    for name, k in (("nor_conv_1x1", 1), ("nor_conv_3x3", 3)):
        op = make_op(name, 4, 1)
        assert isinstance(op[0], nn.ReLU) and isinstance(op[1], nn.Conv2d) and isinstance(op[2], nn.BatchNorm2d)
        conv = op[1]
        assert conv.kernel_size == (k, k) and conv.padding == (k // 2, k // 2) and conv.bias is None
        assert op(torch.randn(2, 4, 5, 5)).shape == (2, 4, 5, 5)
    assert make_op("avg_pool_3x3", 4, 1).count_include_pad is False  # official POOLING


def test_resnet_block_halves_and_doubles():
    block = ResNetBasicBlock(4, 8)
    assert block(torch.randn(2, 4, 8, 8)).shape == (2, 8, 4, 4)
    assert block(torch.randn(2, 4, 7, 7)).shape == (2, 8, 4, 4)  # odd sizes: ceil like the conv
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.downsample)


def test_supernet_exposes_what_darts_needs():
    net = NB201Supernet(**TINY)
    assert (net.num_edges, net.num_ops, net.ops) == (6, 5, NB201_OPS)
    cells = [m for m in net.cells if isinstance(m, NB201SearchCell)]
    assert len(cells) == 3 and all(len(c.edges) == 6 and len(c.edges[0]) == 5 for c in cells)
    assert all(not m.affine for c in cells for m in c.modules() if isinstance(m, nn.BatchNorm2d))


def test_supernet_arch_forward_backward_touches_only_the_chosen_ops():
    torch.manual_seed(0)
    net = NB201Supernet(**TINY)
    logits, aux = net(_batch(), BEST)
    assert logits.shape == (4, 3) and aux is None
    logits.sum().backward()
    chosen = {id(p) for m in net.path_modules(BEST) for p in m.parameters()}
    assert chosen  # the 3x3 convs of every cell
    for cell in (m for m in net.cells if isinstance(m, NB201SearchCell)):
        for p in cell.parameters():
            assert (p.grad is not None) == (id(p) in chosen)
    assert all(p.grad is not None for p in net.stem.parameters())
    assert all(p.grad is not None for p in net.classifier.parameters())


def test_none_edges_are_never_run():
    net = NB201Supernet(**TINY)
    calls = []
    for cell in (m for m in net.cells if isinstance(m, NB201SearchCell)):
        for bank in cell.edges:
            for k, op in enumerate(bank):
                op.register_forward_hook(lambda m, i, o, k=k: calls.append(NB201_OPS[k]))
    arch = NB201Arch(("none", "nor_conv_1x1", "none", "none", "skip_connect", "none"))
    net(_batch(), arch)
    assert sorted(calls) == sorted(["nor_conv_1x1", "skip_connect"] * 3)
    calls.clear()
    logits, _ = net(_batch(), NB201Arch.from_actions([0] * 6))  # every cell outputs zero
    assert calls == [] and torch.isfinite(logits).all()


def test_supernet_mixing_weights_forward_backward():
    torch.manual_seed(0)
    net = NB201Supernet(**TINY)
    alpha = torch.zeros(6, 5, requires_grad=True)
    logits, _ = net(_batch(), torch.softmax(alpha, dim=-1))
    logits.square().sum().backward()
    assert alpha.grad is not None and alpha.grad[:, 1:].abs().sum() > 0
    cell = net.cells[0]
    for bank in cell.edges:  # every parameterised op gets a gradient
        assert all(p.grad is not None for p in bank.parameters())
    with pytest.raises(ValueError, match=r"mixing weights must be \(6, 5\)"):
        net(_batch(), torch.zeros(6, 4))
    with pytest.raises(TypeError, match="NB201Arch or mixing weights"):
        net(_batch(), "|none~0|")


def test_one_hot_mixing_equals_the_discrete_arch():
    torch.manual_seed(0)
    net = NB201Supernet(**TINY)
    one_hot = torch.nn.functional.one_hot(torch.tensor(BEST.actions()), 5).float()
    x = _batch()
    a, _ = net(x, BEST)
    b, _ = net(x, one_hot)
    c, _ = net(x, MixedArch(normal=one_hot, reduce=torch.zeros(1)))  # only the normal weights apply
    assert torch.allclose(a, b, atol=1e-6) and torch.equal(b, c)


def test_supernet_bn_uses_batch_stats_in_train_and_eval():
    torch.manual_seed(0)
    net = NB201Supernet(**TINY)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.running_mean is None and not m.track_running_stats for m in bns)
    assert not any("running" in k for k in net.state_dict())
    x = _batch()
    train_out, _ = net.train()(x, BEST)
    with torch.no_grad():
        eval_out, _ = net.eval()(x, BEST)
    assert torch.allclose(train_out, eval_out, atol=1e-6)


def test_child_network_forward_backward_eval():
    torch.manual_seed(0)
    net = NB201Network(BEST, **TINY)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.affine and m.running_mean is not None for m in bns)
    logits, aux = net(_batch())
    assert logits.shape == (4, 3) and aux is None
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    with torch.no_grad():
        out1, _ = net(_batch(1))
        out2, _ = net(_batch(1)[:1])  # running stats: per-sample output independent of the batch
    assert torch.allclose(out1[:1], out2, atol=1e-5)


def test_child_network_keeps_supernet_parameter_names_up_to_the_op_index():
    child = {k for k in NB201Network(BEST, **TINY).state_dict() if k.startswith("cells.0.")}
    arch_keys = {k.replace(f"edges.{e}.", f"edges.{e}.{a}.")
                 for k in child for e, a in enumerate(BEST.actions()) if k.startswith(f"cells.0.edges.{e}.")}
    supernet = NB201Supernet(**TINY).state_dict()
    convs = {k for k in arch_keys if k.endswith(".1.weight")}  # the child's BNs are affine, the supernet's not
    assert len(convs) == 3 and convs <= set(supernet)


def test_parameter_counts_match_the_benchmark_table():
    # NAS-Bench-201 CIFAR-10 params: min 0.073306 MB (all none), max 1.531546 MB (all 3x3 conv).
    smallest = NB201Network(NB201Arch.from_actions([0] * 6))
    largest = NB201Network(NB201Arch.from_actions([3] * 6))
    assert _count(smallest) == 73_306 and _count(largest) == 1_531_546
    assert _count(NB201Network(BEST)) == 73_306 + 1_458_240 // 2  # half the edges are 3x3 convs
    assert _count(NB201Network(NB201Arch.from_actions([3] * 6), num_classes=100)) == 1_537_396
    assert _count(NB201Supernet()) == 1_686_106


def test_bad_sizes_and_arch_types():
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        NB201Supernet(channels=0)
    with pytest.raises(ValueError, match="too small"):
        NB201Network(BEST, image_size=3)
    with pytest.raises(TypeError, match="must be an NB201Arch"):
        NB201Network("|none~0|")
    assert NB201Network(BEST, channels=4, cells_per_stage=1, num_classes=3, image_size=7)(
        torch.randn(2, 3, 7, 7))[0].shape == (2, 3)
