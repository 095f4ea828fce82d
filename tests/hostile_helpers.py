"""Shared parts of the hostile-input tests (test_hostile_*.py): CLI invocation, the one-line
refusal check, hypothesis settings and strategies, the config schemas and config-dict strategy."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing

from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from enas.cli import cli
from enas.config.search import SearchConfig
from enas.config.train import TrainConfig
from shared_model.genotype import Genotype, GenotypeError
from shared_model.ops import OPS

FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
CHEAP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -------------------------------------------------------------------------------- helpers


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_refused(result, *expected):
    """Exit 2, exactly one ``error:`` line (the last line of stderr), no traceback, no stdout."""
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert result.stdout == "", result.stdout
    for text in expected:
        assert text in errors[0], (text, errors[0])
    return errors[0]


def assert_ok_or_refused(result):
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    if result.exit_code == 2:
        assert_refused(result)
    return result.exit_code == 0


# -------------------------------------------------------------------------------- strategies

HUGE_INTS = st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64, -2**63 - 1, 10**30, -(10**40)])
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-5, 12) | HUGE_INTS
                | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=12) | st.sampled_from(sorted(OPS) + list(FIELDS)))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda kids: st.lists(kids, max_size=5)
    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), kids, max_size=5),
    max_leaves=25)


@st.composite
def genotype_dicts(draw, max_nodes: int = 6):
    """Valid genotype JSON objects of any node count and any known op."""
    data = {}
    for cell in ("normal", "reduce"):
        n = draw(st.integers(1, max_nodes))
        entries = [[draw(st.sampled_from(sorted(OPS))), draw(st.integers(0, k // 2 + 1))] for k in range(2 * n)]
        concat = sorted(draw(st.sets(st.integers(2, n + 1), min_size=1)))
        data[cell], data[cell + "_concat"] = entries, concat
    return {f: data[f] for f in FIELDS}


LOOKALIKE_OPS = ["sep_conv_3x3 ", "Sep_conv_3x3", "sep_conv_3×3", "sep_conv_3x3\u200b", "ｓｅｐ_conv_3x3",
                 "sep-conv-3x3", "", "none\x00", "skip_connect\n"]


@st.composite
def mutated_genotypes(draw):
    """A valid genotype with 1-3 mutations; returns ``(data, surely_invalid)``."""
    data = copy.deepcopy(draw(genotype_dicts()))
    invalid = False
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from([
            "op", "input_range", "input_type", "drop_entry", "entry_shape", "concat", "concat_type",
            "extra_field", "missing_field", "field_type", "any_value"]))
        cell = draw(st.sampled_from(("normal", "reduce")))
        entries = data.get(cell)
        has_entries = isinstance(entries, list) and entries and all(isinstance(e, list) for e in entries)
        if kind == "op" and has_entries:
            k = draw(st.integers(0, len(entries) - 1))
            if len(entries[k]) == 2:
                entries[k][0] = draw(st.sampled_from(LOOKALIKE_OPS) | st.text(max_size=8).filter(
                    lambda s: s not in OPS) | st.integers() | st.none() | st.lists(st.text(), max_size=2))
                invalid = True
        elif kind == "input_range" and has_entries:
            k = draw(st.integers(0, len(entries) - 1))
            if len(entries[k]) == 2:
                entries[k][1] = draw(st.integers(k // 2 + 2, k // 2 + 5) | st.integers(max_value=-1) | HUGE_INTS)
                invalid = True
        elif kind == "input_type" and has_entries:
            k = draw(st.integers(0, len(entries) - 1))
            if len(entries[k]) == 2:
                entries[k][1] = draw(st.sampled_from([True, False, 0.0, 1.0, "0", "1", None, [0], {"i": 0}]))
                invalid = True
        elif kind == "drop_entry" and has_entries:
            del entries[draw(st.integers(0, len(entries) - 1))]
            invalid = True
        elif kind == "entry_shape" and has_entries:
            k = draw(st.integers(0, len(entries) - 1))
            entries[k] = draw(st.sampled_from([entries[k] + [0], entries[k][:1], [], "sep_conv_3x3",
                                               {"op": "sep_conv_3x3", "input": 0}, None]))
            invalid = True
        elif kind == "concat" and isinstance(data.get(cell + "_concat"), list):
            n = len(entries) // 2 if isinstance(entries, list) else 1
            data[cell + "_concat"] = draw(st.sampled_from([
                [], [0], [1], [n + 2], [2, 2], list(range(n + 1, 1, -1)) if n > 1 else [2, 2], [-1], [2 ** 64]]))
            invalid = True
        elif kind == "concat_type":
            data[cell + "_concat"] = draw(st.sampled_from([[2.0], [True], ["2"], "2", 2, None, {"2": 2}, [[2]]]))
            invalid = True
        elif kind == "extra_field":
            data[draw(st.text(max_size=10).filter(lambda s: s not in FIELDS))] = draw(JSON_SCALARS)
            invalid = True
        elif kind == "missing_field" and data:
            data.pop(draw(st.sampled_from(sorted(data))))
            invalid = True
        elif kind == "field_type":
            data[draw(st.sampled_from(FIELDS))] = draw(JSON_SCALARS)
            invalid = True
        elif kind == "any_value":
            data[draw(st.sampled_from(FIELDS))] = draw(JSON_VALUES)
    return data, invalid


def check_genotype_value(value, surely_invalid: bool = False):
    """``from_dict`` succeeds and round-trips exactly, or raises GenotypeError; nothing else."""
    try:
        g = Genotype.from_dict(value)
    except GenotypeError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert not surely_invalid, value
    assert g.to_dict() == value
    assert Genotype.from_json(g.to_json()) == g
    assert Genotype.from_dict(json.loads(json.dumps(value))) == g
    return g


# -------------------------------------------------------------------------------- config schemas

def _schema(cfg) -> dict:
    """``{section or "": {key: type}}`` of a config dataclass."""
    out: dict = {"": {}}
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            sub = typing.get_type_hints(type(value))
            out[f.name] = {g.name: sub[g.name] for g in dataclasses.fields(value)}
        else:
            out[""][f.name] = hints[f.name]
    return out


SEARCH_SCHEMA = _schema(SearchConfig())
TRAIN_SCHEMA = _schema(TrainConfig())
PLAUSIBLE = st.sampled_from([
    0, 1, 2, 3, 8, -1, 0.0, 0.5, 1.0, 1e-3, 0.999, 1.5, -0.5, 1e30, -1e30, 2**62, 2**64, 10**400,
    math.nan, math.inf, -math.inf, True, False, None, "", "auto", "cpu", "cuda:9", "sgdr", "cosine", "micro",
    "darts", "enas", "random", "quick", "paper", "digits", "linear", "off", "on", "bf16", [], [1], ["sep_conv_3x3"],
    {}, {"a": 1}])
VALUES = PLAUSIBLE | st.integers(-3, 300) | st.floats(-2, 3) | JSON_VALUES


@st.composite
def config_dicts(draw, schema):
    """Config-file objects: mostly known keys with plausible or wrong values, some junk."""
    data: dict = {}
    for _ in range(draw(st.integers(0, 6))):
        choice = draw(st.integers(0, 11))
        sections = sorted(s for s in schema if s)
        if choice == 0:
            data[draw(st.text(max_size=8))] = draw(JSON_VALUES)  # junk top-level key
        elif choice == 1:
            section = draw(st.sampled_from(sections))
            data.setdefault(section, {}) if isinstance(data.get(section), dict) else None
            if isinstance(data.get(section), dict):
                data[section][draw(st.text(max_size=8))] = draw(JSON_SCALARS)  # junk key in a section
        elif choice == 2:
            data[draw(st.sampled_from(sections))] = draw(JSON_SCALARS | st.lists(JSON_SCALARS, max_size=2))
        elif choice == 3:
            data[draw(st.sampled_from(sorted(schema[""])))] = draw(VALUES)
        else:
            section = draw(st.sampled_from(sections))
            if not isinstance(data.get(section), dict):
                data[section] = {}
            data[section][draw(st.sampled_from(sorted(schema[section])))] = draw(VALUES)
    return data


SEARCH_KEYS = sorted(f"{s}.{k}" if s else k for s, keys in SEARCH_SCHEMA.items() for k in keys)
TRAIN_KEYS = sorted(f"{s}.{k}" if s else k for s, keys in TRAIN_SCHEMA.items() for k in keys)
