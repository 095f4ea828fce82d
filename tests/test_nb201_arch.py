"""NB201Arch contract: official string, actions, JSON, validation messages."""
import json

import pytest

from shared_model.nb201_arch import (EDGES, NB201_OPS, NUM_ARCHS, NB201Arch, NB201ArchError,
                                     all_archs)

# The best CIFAR-10 cell in the NAS-Bench-201 paper's notation (Dong & Yang 2020, Fig. 1 style).
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def test_constants():
    assert NB201_OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert EDGES == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    assert NUM_ARCHS == 15_625


def test_string_round_trip_is_byte_exact():
    arch = NB201Arch.from_string(BEST)
    assert arch.to_string() == BEST and str(arch) == BEST
    assert arch.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3",
                        "skip_connect", "nor_conv_3x3", "skip_connect")
    assert arch.op(2, 1) == "avg_pool_3x3" and arch.op(3, 2) == "skip_connect"
    assert NB201Arch.from_string(ALL_SKIP).ops == ("skip_connect",) * 6


def test_actions_index_nb201_ops_and_none_is_zero():
    arch = NB201Arch.from_string(BEST)
    assert arch.actions() == (3, 3, 4, 1, 3, 1)
    assert NB201Arch.from_actions(arch.actions()) == arch
    assert NB201Arch.from_actions([0] * 6).ops == ("none",) * 6
    assert NB201Arch.from_ops(list(arch.ops)) == arch


def test_json_round_trip_and_frozen():
    arch = NB201Arch.from_string(BEST)
    assert arch.to_dict() == {"arch": BEST}
    assert json.loads(arch.to_json()) == {"arch": BEST}
    assert NB201Arch.from_json(arch.to_json()) == arch
    assert NB201Arch.from_dict({"arch": BEST}) == arch
    assert hash(NB201Arch.from_json(arch.to_json())) == hash(arch)
    with pytest.raises(Exception):
        arch.ops = ()


def test_every_arch_enumerates_and_round_trips():
    archs = list(all_archs())
    assert len(archs) == len(set(archs)) == NUM_ARCHS
    strings = set()
    for arch in archs:
        s = arch.to_string()
        assert NB201Arch.from_string(s) == arch
        assert NB201Arch.from_actions(arch.actions()) == arch
        strings.add(s)
    assert len(strings) == NUM_ARCHS


def test_describe():
    assert NB201Arch.from_string(BEST).describe() == [
        "node 1 = nor_conv_3x3(node 0)",
        "node 2 = nor_conv_3x3(node 0) + avg_pool_3x3(node 1)",
        "node 3 = skip_connect(node 0) + nor_conv_3x3(node 1) + skip_connect(node 2)",
    ]
    none = NB201Arch.from_actions([0, 1, 0, 0, 0, 0]).describe()
    assert none[0] == "node 1 = zero (every input is none)" and none[1] == "node 2 = skip_connect(node 0)"


BAD_STRINGS = {
    "wrong op": (BEST.replace("avg_pool_3x3", "max_pool_3x3"), "unknown op 'max_pool_3x3'"),
    "wrong source": (BEST.replace("avg_pool_3x3~1", "avg_pool_3x3~0"), "must read node 1"),
    "source out of range": (BEST.replace("skip_connect~2", "skip_connect~3"), "must read node 2"),
    "padded source": (BEST.replace("~1|+", "~01|+"), "got source '01'"),
    "missing node group": ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "3 '+'-separated node groups"),
    "extra node group": (BEST + "+|none~0|", "3 '+'-separated node groups"),
    "missing edge": ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|none~1|none~2|", "needs 2 edge(s)"),
    "extra text": (BEST + " ", "group must look like"),
    "leading text": ("arch=" + BEST, "group must look like"),
    "no tilde": (BEST.replace("nor_conv_3x3~0", "nor_conv_3x3", 1), "edge must be op~source"),
    "empty": ("", "3 '+'-separated node groups"),
    "newline": (BEST.replace("|+", "|\n+", 1), "group must look like"),
    "over-long": ("|" + "x" * 5000 + "|", "characters long"),
}


@pytest.mark.parametrize("name", sorted(BAD_STRINGS))
def test_malformed_strings_raise_one_line(name):
    text, fragment = BAD_STRINGS[name]
    with pytest.raises(NB201ArchError) as info:
        NB201Arch.from_string(text)
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg and len(msg) < 300


BAD_OTHER = {
    "string not str": (lambda: NB201Arch.from_string(b"|none~0|"), "expected a str, got bytes"),
    "ops wrong type": (lambda: NB201Arch.from_ops("none"), "expected a list of 6 op names"),
    "ops wrong length": (lambda: NB201Arch(("none",) * 5), "got 5"),
    "ops unknown": (lambda: NB201Arch(("none",) * 5 + ("conv",)), "ops[5] (edge 2->3): unknown op 'conv'"),
    "ops non-str": (lambda: NB201Arch(("none",) * 5 + (3,)), "unknown op 3"),
    "actions out of range": (lambda: NB201Arch.from_actions([0, 0, 0, 0, 0, 5]), "out of range 0..4"),
    "actions negative": (lambda: NB201Arch.from_actions([-1, 0, 0, 0, 0, 0]), "out of range 0..4"),
    "actions bool": (lambda: NB201Arch.from_actions([True, 0, 0, 0, 0, 0]), "expected an integer"),
    "actions float": (lambda: NB201Arch.from_actions([0.0] * 6), "expected an integer"),
    "actions length": (lambda: NB201Arch.from_actions([0] * 7), "got 7"),
    "actions huge int": (lambda: NB201Arch.from_actions([10 ** 5000] + [0] * 5), "<int>"),
    "dict not dict": (lambda: NB201Arch.from_dict([BEST]), "must be a JSON object, got list"),
    "dict missing": (lambda: NB201Arch.from_dict({}), "missing field: arch"),
    "dict extra": (lambda: NB201Arch.from_dict({"arch": BEST, "acc": 94.0}), "unknown field(s): acc"),
    "dict arch not str": (lambda: NB201Arch.from_dict({"arch": [1, 2]}), "expected a str, got list"),
    "json invalid": (lambda: NB201Arch.from_json("{arch:"), "not valid JSON"),
    "json not str": (lambda: NB201Arch.from_json(None), "expected a str, got NoneType"),
    "json deeply nested": (lambda: NB201Arch.from_json("[" * 5000 + "]" * 5000), "not valid JSON"),
    "json over-long": (lambda: NB201Arch.from_json(json.dumps({"arch": "x" * 20000})), "characters long"),
    "json huge int": (lambda: NB201Arch.from_json('{"arch": ' + "9" * 5000 + "}"), "not valid JSON"),
    "json bad string": (lambda: NB201Arch.from_json(json.dumps({"arch": BEST[:-1]})), "group must look like"),
    "no such edge": (lambda: NB201Arch.from_string(BEST).op(1, 2), "no edge 2->1"),
}


@pytest.mark.parametrize("name", sorted(BAD_OTHER))
def test_malformed_inputs_raise_one_line(name):
    call, fragment = BAD_OTHER[name]
    with pytest.raises(NB201ArchError) as info:
        call()
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg and len(msg) < 300


def test_error_is_a_value_error():
    assert issubclass(NB201ArchError, ValueError)
