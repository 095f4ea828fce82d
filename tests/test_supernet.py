"""The shared-weight supernet: sampled paths, weight sharing, mixed edges."""
import pytest
import torch

from shared_model.genotype import Genotype, loose_ends
from shared_model.kernels import reference_kernels
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
    all_ids = [pid for pids in seen.values() for pid in pids]
    assert len(all_ids) == len(set(all_ids)), "two edges share a parameter"


def _record_bank_calls(net):
    """Forward hooks on every op-bank module; returns (set of ids that ran, handles)."""
    ran, handles = set(), []
    for cell in net.cells:
        for bank in cell.edges:
            for op in bank:
                handles.append(op.register_forward_hook(lambda m, i, o: ran.add(id(m))))
    return ran, handles


@pytest.mark.parametrize("name", ["micro", "darts"])
def test_forward_runs_exactly_the_path_modules(name):
    space = make_space(name)
    net = tiny(space)
    reduce_at = {net.layers // 3, 2 * net.layers // 3}
    ran, handles = _record_bank_calls(net)
    gen = torch.Generator().manual_seed(5)
    for _ in range(4):
        g = space.decode(space.random_actions(gen))
        # Expected modules straight from the genotype entries: node k // 2 + 2 reads ``inp``
        # through ``op``; edges are numbered node-major, inputs ascending (DARTS order).
        expected, with_params = set(), set()
        for ci, cell in enumerate(net.cells):
            entries = g.reduce if ci in reduce_at else g.normal
            for k, (op, inp) in enumerate(entries):
                node = k // 2 + 2
                edge = sum(range(2, node)) + inp
                module = cell.edges[edge][space.ops.index(op)]
                expected.add(id(module))
                if any(True for _ in module.parameters()):
                    with_params.add(id(module))
        x = torch.randn(2, 1, 8, 8)
        ran.clear()
        with reference_kernels():
            net(x, g)
        assert ran == expected
        # Fast path: a stateless op (pool, identity) on a state runs once for all its edges.
        ran.clear()
        net(x, g)
        assert with_params <= ran <= expected
        assert {id(m) for m in net.path_modules(g)} == expected
    for h in handles:
        h.remove()


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


# -- cell output: DARTS concat vs ENAS conv, unread inputs -------------------------------
def _edge_params(ops, c, stride):
    """Parameters of one op bank, counted from the DARTS op definitions (non-affine BN)."""
    per_op = {"none": 0, "max_pool_3x3": 0, "avg_pool_3x3": 0,
              "skip_connect": c * c if stride == 2 else 0,  # FactorizedReduce: two C x C/2 1x1 convs
              "sep_conv_3x3": 2 * (9 * c + c * c), "sep_conv_5x5": 2 * (25 * c + c * c),  # 2 x (dw + pw)
              "dil_conv_3x3": 9 * c + c * c, "dil_conv_5x5": 25 * c + c * c}
    return sum(per_op[op] for op in ops)


def expected_params(ops, num_nodes, c, layers, classes, output, loose=False, in_ch=3, stem=3):
    """Independent count following DARTS ``model_search.Network`` / the ENAS final conv."""
    total = in_ch * stem * c * 9 + 2 * stem * c  # stem 3x3 conv + affine BN
    c_pp = c_p = stem * c
    for i in range(layers):
        red = i in (layers // 3, 2 * layers // 3)
        c = 2 * c if red else c
        total += c_pp * c + c_p * c  # preprocess: 1x1 ReLUConvBN or FactorizedReduce, both c_in * c
        total += sum(_edge_params(ops, c, 2 if red and j < 2 else 1)
                     for node in range(num_nodes) for j in range(node + 2))
        if output == "conv":
            total += c * c * (num_nodes + (2 if loose else 0))  # one 1x1 slice per output state
            total += 2 * c * c if loose and red else 0  # factorized reduce of unread inputs
        c_pp, c_p = c_p, c if output == "conv" else num_nodes * c
    return total + c_p * classes + classes  # classifier


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_darts_search_network_matches_the_official_parameter_count():
    space = make_space("darts")
    # quark0/darts train_search.py: Network(16, 10, 8) with steps = multiplier = 4.
    official = expected_params(space.ops, 4, 16, 8, 10, "concat")
    assert official == 1_930_618
    assert n_params(Supernet(space.ops, 4, 16, 8, 10, cell_output="concat")) == official


@pytest.mark.parametrize("output,loose", [("concat", False), ("conv", False), ("conv", True)])
@pytest.mark.parametrize("name", ["darts", "micro"])
def test_cell_output_shapes_and_parameter_counts(name, output, loose):
    space = make_space(name)
    net = Supernet(space.ops, space.num_nodes, 4, 5, 7, in_channels=1, image_size=8,
                   cell_output=output, loose_inputs=loose)
    assert n_params(net) == expected_params(space.ops, space.num_nodes, 4, 5, 7, output, loose, in_ch=1)
    shapes = []
    for cell in net.cells:
        cell.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    w = torch.softmax(torch.randn(len(space.edges()), len(space.ops)), -1)
    # A concat output needs every node: mixed architectures (also DARTS on the micro space).
    arch = MixedArch(w, w) if output == "concat" else space.decode(space.random_actions())
    logits, _ = net(torch.randn(2, 1, 8, 8), arch)
    assert logits.shape == (2, 7)
    mult = space.num_nodes if output == "concat" else 1
    # layers 5: reductions at 1 and 3; channels 4 -> 8 -> 16, size 8 -> 4 -> 2.
    assert shapes == [(2, 4 * mult, 8, 8), (2, 8 * mult, 4, 4), (2, 8 * mult, 4, 4),
                      (2, 16 * mult, 2, 2), (2, 16 * mult, 2, 2)]


def test_concat_output_needs_every_node():
    micro = make_space("micro")
    net = Supernet(micro.ops, 5, 4, 3, 5, in_channels=1, image_size=8, cell_output="concat")
    g = Genotype([("sep_conv_3x3", 0), ("sep_conv_3x3", 1)] + [("skip_connect", 2)] * 8, [3, 4, 5, 6],
                 [("skip_connect", 0)] * 10, [2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="every node"):
        net(torch.randn(2, 1, 8, 8), g)
    with pytest.raises(ValueError, match="loose_inputs"):
        Supernet(micro.ops, 5, 4, 3, 5, cell_output="concat", loose_inputs=True)


# Nodes read input 1 and the previous node only: input 0 is unread, node 6 the only loose end.
_NO_INPUT0 = [("sep_conv_3x3", 1), ("skip_connect", 1), ("sep_conv_3x3", 2), ("avg_pool_3x3", 1),
              ("sep_conv_5x5", 3), ("max_pool_3x3", 1), ("skip_connect", 4), ("sep_conv_3x3", 1),
              ("sep_conv_3x3", 5), ("skip_connect", 1)]


def test_unread_cell_input_joins_the_conv_output():
    micro = make_space("micro")
    g = Genotype(_NO_INPUT0, loose_ends(_NO_INPUT0), _NO_INPUT0, loose_ends(_NO_INPUT0))
    assert list(g.normal_concat) == [6]
    torch.manual_seed(0)
    net = Supernet(micro.ops, 5, 4, 3, 5, in_channels=1, image_size=8, loose_inputs=True)
    assert [cell.terms(g)[1] for cell in net.cells] == [[0, 6]] * 3
    reducers = [m for cell in net.cells if cell.reduction for m in cell.input_reduce]
    ran = set()
    for m in reducers:
        m.register_forward_hook(lambda mod, i, o: ran.add(id(mod)))
    x = torch.randn(4, 1, 8, 8)
    logits, _ = net(x, g)
    logits.square().sum().backward()
    for cell in net.cells:
        grad = cell.out_weight.grad  # (C, num_nodes + 2, C): slice s belongs to state s
        assert cell.out_weight.shape[1] == 7
        assert grad[:, 0].abs().sum() > 0 and grad[:, 6].abs().sum() > 0
        assert torch.all(grad[:, 1:6] == 0), "a read input or an inner node reached the output"
    # The unread input 0 is halved in each reduction cell before joining; input 1 never is.
    assert ran == {id(cell.input_reduce[0]) for cell in net.cells if cell.reduction}
    with torch.no_grad():
        for cell in net.cells:
            cell.out_weight[:, 1:6] = 0  # unused slices: nothing changes
        torch.testing.assert_close(net(x, g)[0], logits.detach())
        net.cells[0].out_weight[:, 0] = 0  # input 0's slice of the first cell: the output changes
        assert not torch.allclose(net(x, g)[0], logits.detach())


def test_without_loose_inputs_only_the_concat_list_is_output():
    micro = make_space("micro")
    g = Genotype(_NO_INPUT0, loose_ends(_NO_INPUT0), _NO_INPUT0, loose_ends(_NO_INPUT0))
    net = Supernet(micro.ops, 5, 4, 3, 5, in_channels=1, image_size=8)
    assert [cell.terms(g)[1] for cell in net.cells] == [[6]] * 3
    assert all(cell.out_weight.shape[1] == 5 and not hasattr(cell, "input_reduce") for cell in net.cells)
    # A genotype that reads both inputs outputs its loose ends only, with or without the flag.
    both = make_space("micro").decode([0, 0, 1, 0] * 5 * 2)
    loose = Supernet(micro.ops, 5, 4, 3, 5, in_channels=1, image_size=8, loose_inputs=True)
    assert [c.terms(both)[1] for c in loose.cells] == [list(both.normal_concat)] * 3
