"""The shared-weight supernet: sampled paths, weight sharing, mixed edges."""
import pytest
import torch

from shared_model.genotype import Genotype
from shared_model.spaces import make_space
from shared_model.supernet import MixedArch, Supernet


def tiny(space, aux=False, image=8, layers=3):
    torch.manual_seed(0)
    return Supernet(space.ops, space.num_nodes, 4, layers, 5, in_channels=1, image_size=image, auxiliary=aux)


def test_gradients_reach_exactly_the_sampled_path():
    space = make_space("micro")
    net = tiny(space)
    genotype = space.decode(space.random_actions(torch.Generator().manual_seed(3)))
    logits, _ = net(torch.randn(4, 1, 8, 8), genotype)
    logits.square().mean().backward()
    on_path = {id(m) for m in net.path_modules(genotype)}
    checked = 0
    for cell in net.cells:
        for bank in cell.edges:
            for op in bank:
                params = list(op.parameters())
                if not params:
                    continue
                checked += 1
                grads = [p.grad for p in params]
                if id(op) in on_path:
                    assert all(g is not None for g in grads)
                    assert any(g.abs().sum() > 0 for g in grads)
                else:
                    assert all(g is None for g in grads), "an op off the sampled path got a gradient"
    assert checked > 0


def test_same_edge_op_is_the_same_parameter_for_every_genotype():
    space = make_space("micro")
    net = tiny(space)
    gen = torch.Generator().manual_seed(0)
    before = {name: p for name, p in net.named_parameters()}
    seen = {}
    for _ in range(5):
        g = space.decode(space.random_actions(gen))
        for cell_i, cell in enumerate(net.cells):
            nodes, _ = cell.terms(g)
            for i, terms in enumerate(nodes, start=2):
                for j, k, _w in terms:
                    op = cell.edges[cell.edge_index[(i, j)]][k]
                    for p in op.parameters():
                        seen.setdefault((cell_i, i, j, k), set()).add(id(p))
        net(torch.randn(2, 1, 8, 8), g)
    assert {name: p for name, p in net.named_parameters()} == before
    # each (cell, node, input, op) maps to one fixed parameter set
    ids = {}
    for key, pids in seen.items():
        ids[key] = pids
    for key in ids:
        assert ids[key] == seen[key]
    all_ids = [pid for pids in seen.values() for pid in pids]
    assert len(all_ids) == len(set(all_ids)), "two edges share a parameter"


def test_reduction_halves_and_aux_only_in_training():
    space = make_space("micro")
    net = tiny(space, aux=True, image=16, layers=5)
    g = space.decode(space.random_actions())
    net.train()
    logits, aux = net(torch.randn(3, 1, 16, 16), g)
    assert logits.shape == (3, 5) and aux.shape == (3, 5)
    net.eval()
    logits, aux = net(torch.randn(3, 1, 16, 16), g)
    assert aux is None


def test_batch_statistics_in_eval_mode():
    space = make_space("micro")
    net = tiny(space).eval()
    g = space.decode(space.random_actions())
    x = torch.randn(6, 1, 8, 8)
    # With batch statistics the output of a sample depends on the rest of the batch.
    a = net(x, g)[0][:3]
    b = net(torch.cat([x[:3], 5 * x[3:]]), g)[0][:3]
    assert not torch.allclose(a, b)
    assert not any(hasattr(m, "running_mean") and m.running_mean is not None for m in net.modules())


def test_mixed_arch_equals_one_hot_genotype():
    space = make_space("darts")
    net = tiny(space).eval()
    g = space.decode(space.random_actions(torch.Generator().manual_seed(2)))
    edges = space.edges()
    weights = {}
    for cell in ("normal", "reduce"):
        w = torch.zeros(len(edges), len(space.ops))
        entries, _ = g.cell(cell)
        for k, (op, inp) in enumerate(entries):
            w[edges.index((k // 2 + 2, inp)), space.ops.index(op)] += 1.0
        weights[cell] = w
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(net(x, MixedArch(weights["normal"], weights["reduce"]))[0], net(x, g)[0],
                               rtol=1e-4, atol=1e-5)


def test_mixed_arch_gradients_reach_weights():
    space = make_space("darts")
    net = tiny(space)
    e = len(space.edges())
    alpha = torch.zeros(e, len(space.ops), requires_grad=True)
    w = torch.softmax(alpha, -1)
    net(torch.randn(2, 1, 8, 8), MixedArch(w, w))[0].sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0


def test_wrong_architecture_is_refused():
    micro, darts = make_space("micro"), make_space("darts")
    net = tiny(micro)
    with pytest.raises(ValueError, match="nodes"):
        net(torch.randn(2, 1, 8, 8), darts.decode(darts.random_actions()))
    bad = Genotype([("dil_conv_3x3", 0)] * 10, [2, 3, 4, 5, 6], [("skip_connect", 0)] * 10, [2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="op bank"):
        net(torch.randn(2, 1, 8, 8), bad)
    with pytest.raises(ValueError, match="too small"):
        Supernet(micro.ops, 5, 4, 3, 5, image_size=2)
