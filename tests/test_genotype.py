"""Genotype contract: JSON form, validation messages, official arc strings."""
import json

import pytest

from shared_model.genotype import Genotype, GenotypeError, loose_ends

RELEASED_ARC = ("0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 "
                "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1")

DARTS_V2 = {
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
               ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
               ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
    "reduce_concat": [2, 3, 4, 5],
}


def test_json_round_trip_is_exactly_the_darts_fields():
    g = Genotype.from_dict(DARTS_V2)
    assert json.loads(g.to_json()) == DARTS_V2
    assert list(json.loads(g.to_json())) == ["normal", "normal_concat", "reduce", "reduce_concat"]
    assert Genotype.from_json(g.to_json()) == g
    assert hash(g) == hash(Genotype.from_json(g.to_json()))


def test_genotype_is_frozen():
    g = Genotype.from_dict(DARTS_V2)
    with pytest.raises(Exception):
        g.normal = ()


def test_released_arc_round_trip_and_loose_ends():
    g = Genotype.from_arc(RELEASED_ARC)
    assert g.to_arc() == RELEASED_ARC
    assert g.normal[0] == ("avg_pool_3x3", 0) and g.normal[1] == ("sep_conv_3x3", 0)
    assert g.normal_concat == (2, 3, 4, 5, 6)
    assert g.reduce_concat == (2, 4, 5, 6)  # node 3 feeds node 4
    labelled = "normal: " + RELEASED_ARC[:39] + " / reduce: " + RELEASED_ARC[40:]
    assert Genotype.from_arc(labelled) == g


def test_loose_ends_never_empty():
    assert loose_ends([("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 2), ("skip_connect", 2)]) == (3,)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["normal"].__setitem__(0, ["conv_9x9", 0]), "unknown op 'conv_9x9'"),
    (lambda d: d["normal"].__setitem__(2, ["sep_conv_3x3", 3]), "input 3 out of range for node 3"),
    (lambda d: d["normal"].pop(), "two [op, input] entries per node"),
    (lambda d: d.__setitem__("normal_concat", [2, 9]), "normal_concat: 9 is not a computed node"),
    (lambda d: d.__setitem__("reduce_concat", [3, 2]), "increasing and unique"),
    (lambda d: d.__setitem__("reduce_concat", []), "non-empty"),
    (lambda d: d.pop("reduce"), "missing field(s): reduce"),
    (lambda d: d.__setitem__("extra", 1), "unknown field(s): extra"),
    (lambda d: d["normal"].__setitem__(0, ["sep_conv_3x3", "0"]), "input must be an integer"),
    (lambda d: d["normal"].__setitem__(0, ["sep_conv_3x3", True]), "input must be an integer"),
    (lambda d: d["normal"].__setitem__(0, "sep_conv_3x3"), "expected [op, input]"),
])
def test_validation_names_the_problem(mutate, message):
    data = json.loads(json.dumps(DARTS_V2))
    mutate(data)
    with pytest.raises(GenotypeError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        Genotype.from_dict(data)


@pytest.mark.parametrize("arc, message", [
    ("1 2 3", "multiple of 8"),
    ("0 9 0 0 0 0 0 0", "op index 9"),
    ("0 x", "integers"),
    ("2 0 0 0 0 0 0 0", "input 2 out of range"),
])
def test_bad_arcs(arc, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_arc(arc)


def test_to_arc_refuses_inexpressible_genotypes():
    with pytest.raises(GenotypeError, match="loose ends"):
        Genotype.from_dict(DARTS_V2).to_arc()  # concat 2..5 although 2 feeds node 5
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.from_json("{not json")
