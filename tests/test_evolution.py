"""Regularized evolution: mutation, tournament, aging and its exact state (controller/evolution.py)."""
from collections import Counter

import pytest
import torch

from controller.evolution import Mutator, RegularizedEvolution
from controller.proposer import diversity
from shared_model.spaces import Decision, get_space, list_spaces


@pytest.mark.parametrize("name", list_spaces())
def test_mutation_never_returns_the_parent_and_changes_one_decision(name):
    space = get_space(name)
    mutator = Mutator(space.decisions, distinct_inputs=space.distinct_inputs)
    g = torch.Generator().manual_seed(0)
    kinds = Counter()
    for _ in range(300):
        parent = space.random_actions(g) if not space.distinct_inputs else \
            RegularizedEvolution(space.decisions, distinct_inputs=True).propose(g)
        child, pos = mutator.mutate(parent, g)
        changed = [k for k, (a, b) in enumerate(zip(parent, child)) if a != b]
        assert changed == [pos], (parent, child)
        assert space.decode(child) != space.decode(parent)
        assert 0 <= child[pos] < space.decisions[pos].num_choices
        kinds[space.decisions[pos].kind] += 1
        if space.distinct_inputs:  # the node's inputs stay distinct
            d = space.decisions[pos]
            inputs = [child[k] for k, e in enumerate(space.decisions)
                      if e.kind == "input" and (e.cell, e.node) == (d.cell, d.node)]
            assert len(set(inputs)) == len(inputs)
    # Hidden-state and op mutations both occur where the space has both kinds of decision.
    assert set(kinds) == {d.kind for d in space.decisions}


def test_nb201_mutation_picks_a_node_then_an_edge_as_nas_bench_201_does():
    space = get_space("nb201")
    mutator = Mutator(space.decisions)
    g = torch.Generator().manual_seed(1)
    counts = Counter(mutator.mutate([0] * 6, g)[1] for _ in range(6000))
    # Edge 1<-0 is node 1's only edge (1/3); node 3's three edges share 1/3 (1/9 each).
    assert counts[0] / 6000 == pytest.approx(1 / 3, abs=0.03)
    assert counts[5] / 6000 == pytest.approx(1 / 9, abs=0.02)


def test_a_decision_that_cannot_change_is_never_picked():
    space = get_space("darts")  # node 0 reads inputs 0 and 1, distinct: its input decisions are fixed
    mutator = Mutator(space.decisions, distinct_inputs=True)
    fixed = [k for k, d in enumerate(space.decisions) if d.kind == "input" and d.node == 0]
    parent = RegularizedEvolution(space.decisions, distinct_inputs=True).propose(torch.Generator().manual_seed(2))
    assert all(mutator.allowed(parent, k) == [] for k in fixed)
    g = torch.Generator().manual_seed(3)
    assert all(mutator.mutate(parent, g)[1] not in fixed for _ in range(200))


def test_aging_removes_the_oldest_even_when_it_is_the_best():
    space = get_space("nb201")
    evo = RegularizedEvolution(space.decisions, population_size=3, sample_size=2)
    g = torch.Generator().manual_seed(0)
    rewards = [99.0, 1.0, 2.0, 3.0, 4.0]
    for r in rewards:
        evo.tell(evo.propose(g), r)
    assert [m.born for m in evo.population] == [2, 3, 4]  # the best (born 0, 99.0) died of age
    assert [m.reward for m in evo.population] == [2.0, 3.0, 4.0]
    assert evo.cycles == 5 and len(evo.population) == 3


def test_first_proposals_are_random_then_the_tournament_winner_is_mutated():
    space = get_space("nb201")
    evo = RegularizedEvolution(space.decisions, population_size=4, sample_size=4)
    g = torch.Generator().manual_seed(5)
    for k in range(4):
        evo.propose(g)  # random while the population fills
        assert evo.last_origin["parent_born"] == -1
        evo.tell([k, 0, 0, 0, 0, 0], float(k == 2))  # member 2 is the best
    parents = Counter()
    for _ in range(200):
        child = evo.propose(g)
        parents[evo.last_origin["parent_born"]] += 1
        assert sum(a != b for a, b in zip(child, evo.population[evo.last_origin["parent_born"]].actions)) == 1
    # Sample of 4 with replacement out of 4: the best is in it with probability 1 - (3/4)^4 = 0.68.
    assert parents[2] / 200 == pytest.approx(1 - 0.75 ** 4, abs=0.08)
    assert set(parents) <= {0, 1, 2, 3}


def test_nan_rewards_never_win_a_tournament():
    space = get_space("nb201")
    evo = RegularizedEvolution(space.decisions, population_size=2, sample_size=8)
    g = torch.Generator().manual_seed(0)
    evo.tell([0] * 6, float("nan"))
    evo.tell([1] * 6, 0.5)
    for _ in range(20):
        evo.propose(g)
        assert evo.last_origin["parent_born"] == 1


def test_population_state_survives_a_round_trip_bit_identically(tmp_path):
    space = get_space("micro")
    reward = lambda a: sum(a) / len(a) + 1e-3 * a[3]  # noqa: E731
    evo = RegularizedEvolution(space.decisions, population_size=6, sample_size=3)
    g = torch.Generator().manual_seed(11)
    for _ in range(15):
        evo.update(reward, g)
    torch.save({"evo": evo.state_dict(), "rng": g.get_state()}, tmp_path / "s.pt")
    expected = [evo.update(reward, g) for _ in range(20)]
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    again = RegularizedEvolution(space.decisions, population_size=6, sample_size=3)
    again.load_state_dict(state["evo"])
    g2 = torch.Generator()
    g2.set_state(state["rng"])
    got = [again.update(reward, g2) for _ in range(20)]
    assert got == expected
    assert again.state_dict() == evo.state_dict()


def test_diversity_is_the_mean_pairwise_hamming_fraction():
    assert diversity([[0, 0], [0, 0]]) == 0.0
    assert diversity([[0, 0], [1, 1]]) == 1.0
    assert diversity([[0, 0], [0, 1], [1, 1]]) == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert diversity([[3, 4]]) == 0.0


def test_bad_sizes_and_a_one_architecture_space_are_refused():
    space = get_space("nb201")
    with pytest.raises(ValueError, match="must be >= 1"):
        RegularizedEvolution(space.decisions, population_size=0)
    single = (Decision("cell", 0, 0, "op", 1),)
    with pytest.raises(ValueError, match="one architecture"):
        Mutator(single).mutate([0])
