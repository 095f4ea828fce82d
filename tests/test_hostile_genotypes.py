"""Hostile input: malformed genotypes, arcs and `enas show` inputs are refused cleanly.

The contract (README "Genotypes", "Config"; enas/cli.py): library calls either
succeed or raise their documented error (:class:`GenotypeError`,
:class:`UserError`); through the CLI a refusal is exit status 2 with exactly
one ``error:`` line, never a traceback or exit 1, and it leaves no partial
outputs. Property-based (hypothesis) where the check is cheap; the few cases
that actually train are a fixed list. Shared parts: ``hostile_helpers.py``.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hostile_helpers import (
    CHEAP,
    FEW,
    HUGE_INTS,
    JSON_VALUES,
    assert_ok_or_refused,
    assert_refused,
    check_genotype_value,
    genotype_dicts,
    invoke,
    mutated_genotypes,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from enas.cli import cli
from shared_model.genotype import Genotype, GenotypeError
from shared_model.ops import ENAS_MICRO_OPS

# -------------------------------------------------------------------------------- genotypes

@CHEAP
@given(JSON_VALUES)
def test_arbitrary_json_is_a_genotype_or_a_genotype_error(value):
    check_genotype_value(value)
    try:
        Genotype.from_json(json.dumps(value))
    except GenotypeError:
        pass


@CHEAP
@given(genotype_dicts())
def test_valid_genotypes_round_trip_exactly(data):
    g = check_genotype_value(data)
    assert g is not None
    assert Genotype.from_json(json.dumps(data, indent=3)) == g


@settings(max_examples=60, deadline=None)
@given(mutated_genotypes())
def test_mutated_genotypes_are_refused_or_round_trip(case):
    data, surely_invalid = case
    check_genotype_value(data, surely_invalid)


@pytest.mark.parametrize("text", [
    "", " ", "null", "[]", "{}", "NaN", "Infinity", "-Infinity", "1" * 5000, '{"normal": ' + "9" * 5000 + "}",
    "[" * 100000, "{" + '"a":{' * 50000, '"\\ud800"', "\ufeff{}", "{'normal': []}", '{"normal": [], }',
], ids=lambda t: repr(t[:12]))
def test_from_json_refuses_any_text_with_a_genotype_error(text):
    with pytest.raises(GenotypeError):
        Genotype.from_json(text)


def _show(path: Path):
    return invoke("show", str(path), "--json", "--channels", "2", "--layers", "3", "--image-size", "8")


def _check_show(path: Path, expected=None):
    result = _show(path)
    if assert_ok_or_refused(result):
        shown = json.loads(result.stdout)
        assert Genotype.from_dict(shown["genotype"])
        if expected is not None:
            assert shown["genotype"] == expected
        return shown["genotype"]
    assert str(path) in result.stderr
    return None


@FEW
@given(JSON_VALUES | mutated_genotypes().map(lambda case: case[0]) | genotype_dicts())
def test_show_json_file_is_shown_or_refused_in_one_line(value):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.json"
        path.write_text(json.dumps(value), encoding="utf-8")
        shown = _check_show(path)
        valid = True
        try:
            Genotype.from_dict(value["genotype"] if isinstance(value, dict) and "genotype" in value
                               and "normal" not in value else value)
        except GenotypeError:
            valid = False
        assert (shown is not None) == valid


@FEW
@given(st.binary(max_size=64) | st.text(max_size=64).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_show_garbage_file_is_refused_in_one_line(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.json"
        path.write_bytes(raw)
        _check_show(path)


@pytest.mark.parametrize("content", [
    b"1" * 5000, b"[" * 100000, b"{" + b'"a":{' * 50000, b"\xff\xfe{}", b"\x00" * 10, b"\xef\xbb\xbf{}",
    b'{"genotype": ' + b"[" * 100000 + b"}",
], ids=lambda t: repr(t[:12]))
def test_show_pathological_files_are_refused_in_one_line(tmp_path, content):
    path = tmp_path / "g.json"
    path.write_bytes(content)
    assert _check_show(path) is None


def test_show_refuses_folders_and_missing_files(tmp_path):
    assert_refused(_show(tmp_path), str(tmp_path))
    assert_refused(_show(tmp_path / "missing.json"), "not found")
    (tmp_path / "genotype.json").mkdir()
    assert_refused(_show(tmp_path))


SIZE_OPTION = st.integers(-2, 40) | st.sampled_from([2**31, 2**40, 2**63 - 1, 2**64, 10**30])


@FEW
@given(SIZE_OPTION, st.integers(-2, 12), SIZE_OPTION, SIZE_OPTION, SIZE_OPTION)
def test_show_sizes_are_described_or_refused_in_one_line(channels, layers, classes, image_size, in_channels):
    result = invoke("show", "ENAS", "--json", "--channels", channels, "--layers", layers, "--classes", classes,
                    "--image-size", image_size, "--in-channels", in_channels)
    if assert_ok_or_refused(result):
        shown = json.loads(result.stdout)
        assert shown["params"] > 0 and shown["multiply_adds"] > 0


@pytest.mark.parametrize("command", ["search", "train"])
def test_a_network_too_large_to_allocate_is_one_error_line(tmp_path, command):
    args = (["search", "--preset", "quick", "--set", f"model.channels={2**40}"] if command == "search"
            else ["train", "DARTS_V2", "--preset", "quick", "--channels", 2**40])
    result = CliRunner().invoke(cli, [str(a) for a in args] + ["--out", str(tmp_path / "run")])
    assert_refused(result, "memory")


# -------------------------------------------------------------------------------- arcs

@CHEAP
@given(st.text(max_size=80) | st.lists(st.integers(-3, 7).map(str) | st.sampled_from(
    ["normal:", "reduce:", "/", "x", "1.0", "٣", "0x1", "+1", "-0", "1_0", "9" * 30]), max_size=50).map(" ".join))
def test_arbitrary_arc_text_is_a_genotype_or_a_genotype_error(arc):
    try:
        g = Genotype.from_arc(arc)
    except GenotypeError as exc:
        assert "\n" not in str(exc)
        return
    assert Genotype.from_arc(g.to_arc()) == g


@CHEAP
@given(st.lists(st.integers(-3, 7) | HUGE_INTS, max_size=48)
       | st.lists(st.integers(0, 4) | st.booleans() | st.floats() | st.text(max_size=3) | st.none(), max_size=24))
def test_arbitrary_arc_lists_are_a_genotype_or_a_genotype_error(arc):
    try:
        g = Genotype.from_arc(arc)
    except GenotypeError:
        return
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in arc), arc
    assert [int(t) for t in g.to_arc().split()] == arc


@st.composite
def arcs(draw):
    n = draw(st.integers(1, 6))
    ints = []
    for _ in range(2):
        for node in range(n):
            for _slot in range(2):
                ints += [draw(st.integers(0, node + 1)), draw(st.integers(0, len(ENAS_MICRO_OPS) - 1))]
    return ints


@CHEAP
@given(arcs())
def test_valid_arcs_round_trip(ints):
    text = " ".join(map(str, ints))
    g = Genotype.from_arc(text)
    assert g.to_arc() == text and Genotype.from_arc(ints) == g


def test_arc_refuses_non_integer_items():
    for bad in ([0, 0, 0, 0, 0.0, 1, 1, 1], [0, True, 0, 0, 0, 0, 0, 0], ["0"] * 8, [None] * 8):
        with pytest.raises(GenotypeError):
            Genotype.from_arc(bad)


