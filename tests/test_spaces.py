"""Search-space descriptions: decisions, decode/encode, validity of random actions."""
import pytest
import torch

from shared_model.genotype import Genotype, GenotypeError
from shared_model.ops import DARTS_OPS, ENAS_MICRO_OPS
from shared_model.spaces import SearchSpace, enas_op_bias, make_space


@pytest.mark.parametrize("space", [make_space("micro"), make_space("darts"),
                                   make_space("micro", num_nodes=3, ops=["sep_conv_3x3", "skip_connect"]),
                                   SearchSpace("custom", 2, ("none", "max_pool_3x3", "dil_conv_3x3"), "all")])
def test_random_actions_always_decode_to_valid_genotypes(space):
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        actions = space.random_actions(gen)
        g = space.decode(actions)
        assert isinstance(g, Genotype)
        assert g.num_nodes() == space.num_nodes
        assert "none" not in g.ops()
        assert space.encode(g) == actions


def test_micro_decisions_follow_the_official_order():
    space = make_space("micro")
    d = space.decisions
    assert len(d) == 40 and space.ops == ENAS_MICRO_OPS
    assert [(x.kind, x.num_choices) for x in d[:4]] == [("input", 2), ("op", 5), ("input", 2), ("op", 5)]
    assert d[4].num_choices == 3 and d[20].cell == "reduce" and d[20].node == 0
    # (5 x 5 x 2 x 3 x ... ) squared: every decision is independent
    assert space.size() == (5 ** 10 * (2 * 3 * 4 * 5 * 6) ** 2) ** 2


def test_darts_space_concat_and_ops():
    space = make_space("darts")
    assert space.ops == DARTS_OPS and "none" not in space.sample_ops
    g = space.decode(space.random_actions(torch.Generator().manual_seed(1)))
    assert g.normal_concat == (2, 3, 4, 5)
    assert len(space.edges()) == 14


def test_encode_rejects_genotypes_outside_the_space():
    micro = make_space("micro")
    darts_g = make_space("darts").decode([0] * 32)
    with pytest.raises(GenotypeError, match="nodes"):
        micro.encode(darts_g)
    assert not micro.contains(darts_g)


def test_bad_spaces():
    with pytest.raises(ValueError, match="unknown search space"):
        make_space("bogus")
    with pytest.raises(ValueError, match="unknown op"):
        make_space("micro", ops=["conv_3x3_magic"])
    with pytest.raises(ValueError, match="other than 'none'"):
        SearchSpace("x", 2, ("none",))


def test_official_op_bias():
    bias, prior = enas_op_bias(ENAS_MICRO_OPS)
    assert bias == [10.0, 10.0, 0.0, 0.0, 0.0]
    assert prior == [0.25, 0.25, -0.25, -0.25, -0.25]
