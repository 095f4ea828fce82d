"""Cost blocks, the MAC counter, the reward formulas, the budget helpers and the DARTS cost term."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from controller import UniformPolicy
from controller.constraints import (BudgetedPolicy, BudgetInfeasible, CostReward, expected_cost,
                                    propose_within_budget)
from shared_model.cost_blocks import NetSpec, block_macs, block_params, total
from shared_model.profile import count_macs, count_parameters
from shared_model.spaces import get_space, list_spaces
from shared_model.zoo import get_genotype

SPECS = {"micro": NetSpec.make(4, 4, 7, 1, 12), "darts": NetSpec.make(4, 3, 10, 3, 8),
         "nb201": NetSpec.make(4, 1, 10, 3, 8), "macro": NetSpec.make(4, 6, 10, 3, 8, final_relu=True)}


def _sized(name, spec):
    space = get_space(name)
    return space.for_layers(spec.layers) if hasattr(space, "for_layers") else space


@pytest.mark.parametrize("name", [n for n in list_spaces() if get_space(n).exact_cost_blocks])
def test_blocks_add_up_to_the_child_network_and_the_vocabulary_covers_it(name):
    spec = SPECS.get(name, NetSpec.make(4, 3, 10, 3, 8))
    space = _sized(name, spec)
    vocabulary = {b.key for b in space.cost_vocabulary(spec)}
    gen = torch.Generator().manual_seed(1)
    archs = list(space.cost_cover(spec))[:2] + [space.decode(space.random_actions(gen)) for _ in range(4)]
    for arch in archs:
        with torch.device("meta"):
            net = space.build_child(arch, spec.channels, spec.layers, spec.num_classes, spec.in_channels,
                                    spec.image_size, **dict(spec.options))
        blocks = space.cost_blocks(arch, spec)
        assert total(blocks, block_macs) == count_macs(net, (spec.in_channels, spec.image_size, spec.image_size))
        assert total(blocks, block_params) == count_parameters(net)
        assert {b.key for b in blocks} <= vocabulary


def test_cell_blocks_follow_the_enas_network_options():
    space = get_space("micro")
    spec = NetSpec.make(4, 5, 10, 3, 10, stem_multiplier=2, base_conv=True, loose_inputs=True, final_relu=True,
                        classifier_bias=False)
    arch = get_genotype("ENAS")
    with torch.device("meta"):
        net = space.build_child(arch, 4, 5, 10, 3, 10, **dict(spec.options))
    blocks = space.cost_blocks(arch, spec)
    assert total(blocks, block_macs) == count_macs(net, (3, 10, 10))
    assert total(blocks, block_params) == count_parameters(net)


def test_mixing_blocks_are_the_op_blocks_of_each_choice():
    space = get_space("darts")
    spec = SPECS["darts"]
    table = space.mixing_cost_blocks(spec)
    arch = get_genotype("DARTS_V2")
    ops = [b.key for b in space.cost_blocks(arch, spec) if b.is_op]
    chosen = []
    for cell in ("normal", "reduce"):
        for node, (op, inp) in zip([2, 2, 3, 3, 4, 4, 5, 5], arch.cell(cell)[0]):
            e = space.mixing_edges().index((node, inp))
            chosen += [b.key for b in table[cell][e][space.mixing_ops.index(op)]]
    assert sorted(chosen) == sorted(ops)
    assert table["normal"][0][space.mixing_ops.index("none")] == []


def test_count_macs_sees_functional_convolutions():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 3, 3, 3))

        def forward(self, x):
            return F.conv2d(x, self.w, padding=1)

    assert count_macs(Functional(), (3, 5, 5)) == 6 * 5 * 5 * 3 * 9


def test_mnasnet_and_proxyless_rewards_against_hand_values():
    soft = CostReward(2.0)  # MnasNet alpha = beta = -0.07
    assert soft(0.9, 1.0) == pytest.approx(0.9 * 2 ** 0.07)  # under the target: rewarded
    assert soft(0.9, 4.0) == pytest.approx(0.9 * 2 ** -0.07)  # over: penalised
    assert soft(0.9, 2.0) == pytest.approx(0.9)
    hard_ish = CostReward(2.0, alpha=0.0, beta=-1.0)  # MnasNet's hard variant
    assert hard_ish(0.8, 1.0) == pytest.approx(0.8)
    assert hard_ish(0.8, 4.0) == pytest.approx(0.4)
    proxyless = CostReward(2.0, form="proxyless")
    assert proxyless(0.9, 4.0) == pytest.approx(0.9 * 0.5 ** 0.1)
    assert proxyless(0.9, 1.0) == pytest.approx(0.9 * 2 ** 0.1)
    with pytest.raises(ValueError):
        CostReward(0.0)
    with pytest.raises(ValueError):
        soft(0.9, 0.0)


def _macs_of_actions(space, spec):
    return lambda actions: total(space.cost_blocks(space.decode(actions), spec), block_macs)


def test_budgeted_policy_never_returns_an_architecture_over_budget():
    space, spec = get_space("darts"), SPECS["darts"]
    cost = _macs_of_actions(space, spec)
    policy = UniformPolicy(space.decisions, distinct_inputs=space.distinct_inputs)
    gen = torch.Generator().manual_seed(0)
    costs = sorted(cost(policy.sample(gen).actions) for _ in range(40))
    budget = costs[10]  # about a quarter of the uniform draws fit
    budgeted = BudgetedPolicy(policy, cost, budget, max_tries=500)
    drawn = [budgeted.sample(gen) for _ in range(30)] + budgeted.sample_batch(30, gen)
    assert all(cost(s.actions) <= budget for s in drawn)
    assert budgeted.rejected > 0
    assert budgeted.num_decisions == policy.num_decisions  # everything else is the policy's
    with pytest.raises(BudgetInfeasible, match="no architecture within the budget"):
        BudgetedPolicy(policy, cost, costs[0] / 10, max_tries=20).sample(gen)


def test_propose_within_budget_counts_tries_and_reports_the_cheapest():
    values = iter([5.0, 4.0, 1.0])
    assert propose_within_budget(lambda: next(values), float, 2.0, 5) == (1.0, 1.0, 3)
    with pytest.raises(BudgetInfeasible, match="cheapest cost 3"):
        propose_within_budget(lambda: 3.0, float, 2.0, 4)


def test_expected_cost_gradient_matches_the_analytic_form_and_finite_differences():
    gen = torch.Generator().manual_seed(0)
    alphas = {c: torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True) for c in ("a", "b")}
    costs = {c: torch.rand(4, 3, generator=gen, dtype=torch.float64) * 10 for c in ("a", "b")}

    def value(a):
        return expected_cost({c: F.softmax(a[c], -1) for c in a}, costs)

    grads = torch.autograd.grad(value(alphas), [alphas["a"], alphas["b"]])
    for (c, alpha), grad in zip(alphas.items(), grads):
        p = F.softmax(alpha.detach(), -1)
        analytic = p * (costs[c] - (p * costs[c]).sum(-1, keepdim=True))  # p_k (c_k - E[c])
        assert torch.allclose(grad, analytic, atol=1e-12)
        h = 1e-6
        for e, k in ((0, 0), (3, 2)):
            plus = {n: a.detach().clone() for n, a in alphas.items()}
            minus = {n: a.detach().clone() for n, a in alphas.items()}
            plus[c][e, k] += h
            minus[c][e, k] -= h
            fd = (value(plus) - value(minus)) / (2 * h)
            assert math.isclose(float(fd), float(grad[e, k]), rel_tol=1e-6, abs_tol=1e-9)


def test_traced_blocks_price_a_space_without_its_own(tmp_path):
    """The Space defaults (leaf modules traced from build_child) give any space a latency table."""
    from enas.cost.measure import measure_table
    from enas.cost.models import build_cost_model
    from enas.errors import UserError
    from shared_model.spaces import Space
    from shared_model.spaces.nb201 import NB201Space

    class Plain(NB201Space):  # a space that declares no cost blocks of its own
        cost_blocks = Space.cost_blocks
        cost_cover = Space.cost_cover
        mixing_cost_blocks = Space.mixing_cost_blocks

    space, spec = Plain(), SPECS["nb201"]
    assert not space.exact_cost_blocks and get_space("nb201").exact_cost_blocks
    arch = space.decode(space.random_actions(torch.Generator().manual_seed(3)))
    blocks = space.cost_blocks(arch, spec)
    assert {b.kind for b in blocks} == {"module"}
    with torch.device("meta"):
        net = space.build_child(arch, spec.channels, spec.layers, spec.num_classes, spec.in_channels, 8)
    assert total(blocks, block_params) == count_parameters(net)  # every parameter sits in a leaf module
    table = measure_table(space, spec, 1, torch.device("cpu"), warmup=0, repeats=1, rounds=1, calibrate=1)
    assert table.predict(blocks)["total_ms"] > 0
    latency = build_cost_model("latency", space, spec, table=table)
    assert latency(arch) == pytest.approx(table.predict(blocks)["total_ms"])
    params = build_cost_model("params", space, spec)
    assert params(arch) == count_parameters(net)
    with pytest.raises(UserError, match="DARTS cost term"):
        params.edge_costs()


def test_onnxruntime_table_prices_blocks_net_of_the_session_call():
    pytest.importorskip("onnxruntime")
    from enas.cost.measure import measure_table

    space, spec = get_space("nb201"), SPECS["nb201"]
    table = measure_table(space, spec, 1, torch.device("cpu"), runtime="onnxruntime", warmup=0, repeats=1,
                          rounds=1, calibrate=1)
    assert table.runtime == "onnxruntime" and "onnxruntime" in table.meta["versions"]
    assert table.meta["measurement"]["per_run_ms_removed"] > 0
    arch = space.decode(space.random_actions(torch.Generator().manual_seed(0)))
    assert table.predict(space.cost_blocks(arch, spec))["total_ms"] > 0
