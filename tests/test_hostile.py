"""Hostile input: every malformed genotype, arc, config, option or dataset is refused cleanly.

The contract (README "Genotypes", "Config"; enas/cli.py): library calls either
succeed or raise their documented error (:class:`GenotypeError`,
:class:`UserError`); through the CLI a refusal is exit status 2 with exactly
one ``error:`` line, never a traceback or exit 1, and it leaves no partial
outputs. Property-based (hypothesis) where the check is cheap; the few cases
that actually train are a fixed list.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import os
import tempfile
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from controller import Controller, Reinforce
from enas.cli import cli
from enas.configlib import parse_set_option, read_config_file
from enas.data import DATASETS, load_dataset
from enas.errors import UserError
from enas.schedules import epoch_lr
from enas.search_config import SearchConfig, build_search_config
from enas.train_config import TrainConfig, build_train_config
from shared_model.genotype import Genotype, GenotypeError
from shared_model.ops import ENAS_MICRO_OPS, OPS
from shared_model.spaces import make_space

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


# -------------------------------------------------------------------------------- config files

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


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml_value(x)}"
                           for k, x in v.items() if x is not None) + "}"


def to_toml(data: dict) -> str:
    """A small TOML writer for generated configs (``None`` has no TOML form and is left out)."""
    lines = [f"{json.dumps(k, ensure_ascii=False)} = {_toml_value(v)}"
             for k, v in data.items() if v is not None and not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"[{json.dumps(k, ensure_ascii=False)}]")
            lines += [f"{json.dumps(kk, ensure_ascii=False)} = {_toml_value(vv)}" for kk, vv in v.items()
                      if vv is not None]
    return "\n".join(lines) + "\n"


def check_search_config_is_usable(cfg: SearchConfig, key: str = "controller.") -> None:
    """What a config that passed validation must allow: every component takes its values.

    ``key``: the one key that differs from a preset; the controller (the slow part of the
    check) is only sampled when it is a controller key.
    """
    for section in (cfg, cfg.data, cfg.model, cfg.optim, cfg.controller, cfg.darts, cfg.derive, cfg.run):
        for f in dataclasses.fields(section):
            v = getattr(section, f.name)
            if isinstance(v, float):
                assert math.isfinite(v), (f.name, v)
    p = torch.nn.Parameter(torch.zeros(3))
    o, c, d, r = cfg.optim, cfg.controller, cfg.darts, cfg.run
    torch.optim.SGD([p], lr=o.lr_max, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                    weight_decay=o.weight_decay)
    assert o.grad_clip is None or o.grad_clip > 0
    for epoch in (0, cfg.epochs - 1):
        assert math.isfinite(epoch_lr(o.schedule, epoch, cfg.epochs, o.lr_max, o.lr_min, o.sgdr_t0, o.sgdr_tmul))
    torch.optim.Adam([p], lr=d.arch_lr, betas=(d.arch_beta1, d.arch_beta2), weight_decay=d.arch_weight_decay)
    assert d.unrolled_r > 0
    for offset in (0, 1, 2):
        torch.Generator().manual_seed(r.seed + offset)
    assert r.log_every >= 1 and r.checkpoint_every_minutes > 0 and (r.threads is None or r.threads >= 1)
    assert cfg.data.eval_batch_size is None or cfg.data.eval_batch_size >= 1
    assert cfg.data.image_size is None or cfg.data.image_size >= 1
    assert cfg.model.aux_weight >= 0
    assert c.hidden >= 1
    if not key.startswith("controller."):
        return
    space = make_space("micro", 2)
    ctrl = Controller(space.decisions, len(space.sample_ops), hidden=min(c.hidden, 8),
                      tanh_constant=c.tanh_constant, op_tanh_reduce=c.op_tanh_reduce, temperature=c.temperature)
    Reinforce(ctrl, lr=c.lr, betas=(c.beta1, 0.999), eps=c.eps, baseline_decay=c.baseline_decay,
              entropy_weight=c.entropy_weight, samples_per_update=min(c.samples_per_update, 2))
    sample = ctrl.sample_batch(2, generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(s.log_prob) for s in sample)


def check_train_config_is_usable(cfg: TrainConfig, key: str = "") -> None:
    for section in (cfg, cfg.data, cfg.model, cfg.optim, cfg.run):
        for f in dataclasses.fields(section):
            v = getattr(section, f.name)
            if isinstance(v, float):
                assert math.isfinite(v), (f.name, v)
    o = cfg.optim
    p = torch.nn.Parameter(torch.zeros(3))
    torch.optim.SGD([p], lr=o.lr_max, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                    weight_decay=o.weight_decay)
    for epoch in (0, cfg.epochs - 1):
        assert math.isfinite(epoch_lr(o.schedule, epoch, cfg.epochs, o.lr_max, o.lr_min, o.sgdr_t0, o.sgdr_tmul))
    for offset in (0, 1):
        torch.Generator().manual_seed(cfg.run.seed + offset)


def _build_search(data):
    return build_search_config("enas", "paper", data, {})


def _build_train(data):
    return build_train_config(data, {})


@settings(max_examples=60, deadline=None)
@given(config_dicts(SEARCH_SCHEMA))
def test_search_config_objects_build_or_raise_user_error(data):
    try:
        cfg = _build_search(copy.deepcopy(data))
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    check_search_config_is_usable(cfg)


@settings(max_examples=60, deadline=None)
@given(config_dicts(TRAIN_SCHEMA))
def test_train_config_objects_build_or_raise_user_error(data):
    try:
        cfg = _build_train(copy.deepcopy(data))
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    check_train_config_is_usable(cfg)


SEARCH_KEYS = sorted(f"{s}.{k}" if s else k for s, keys in SEARCH_SCHEMA.items() for k in keys)
TRAIN_KEYS = sorted(f"{s}.{k}" if s else k for s, keys in TRAIN_SCHEMA.items() for k in keys)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SEARCH_KEYS), VALUES, st.sampled_from(["enas", "darts", "random"]))
def test_one_search_override_is_usable_or_refused(key, value, strategy):
    # One key at a time on a valid base: every key meets its bad values often.
    try:
        cfg = build_search_config(strategy, "quick", None, {key: value})
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    check_search_config_is_usable(cfg, key)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(TRAIN_KEYS), VALUES)
def test_one_train_override_is_usable_or_refused(key, value):
    try:
        cfg = build_train_config(None, {key: value}, preset="quick")
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    check_train_config_is_usable(cfg)


EDGE_VALUES = [0, 1, -1, 0.5, 1.5, -0.5, 1e-12, 2**63, 2**64, 10**400, -(10**400), math.nan, math.inf, -math.inf,
               True, None, "", "x", [], [1], {}]


@pytest.mark.parametrize("build, keys, check", [
    (lambda key, v: build_search_config("enas", "quick", None, {key: v}), SEARCH_KEYS, check_search_config_is_usable),
    (lambda key, v: build_search_config("darts", "quick", None, {key: v}), SEARCH_KEYS, check_search_config_is_usable),
    (lambda key, v: build_train_config(None, {key: v}, preset="quick"), TRAIN_KEYS, check_train_config_is_usable),
], ids=["enas", "darts", "train"])
def test_every_key_with_every_edge_value_is_usable_or_refused(build, keys, check):
    failures = []
    for key in keys:
        for value in EDGE_VALUES:
            try:
                cfg = build(key, copy.deepcopy(value))
            except UserError as exc:
                if "\n" in str(exc) or len(str(exc)) > 300:
                    failures.append((key, value, f"message {str(exc)[:80]!r}..."))
                continue
            except Exception as exc:  # noqa: BLE001 - the point is to list every offender
                failures.append((key, value, f"{type(exc).__name__}: {exc}"))
                continue
            try:
                check(cfg, key)
            except Exception as exc:  # noqa: BLE001
                failures.append((key, value, f"accepted, then {type(exc).__name__}: {exc}"))
    assert not failures, "\n".join(f"{k}={v!r:.30}: {e}" for k, v, e in failures)


def _read_text_config(text: str, suffix: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"c{suffix}"
        path.write_text(text, encoding="utf-8")
        return read_config_file(path)


@CHEAP
@given(config_dicts(SEARCH_SCHEMA), st.booleans())
def test_config_files_as_json_and_toml_build_or_raise_user_error(data, as_toml):
    text = to_toml(data) if as_toml else json.dumps(data)
    for build, check in ((_build_search, check_search_config_is_usable), (_build_train, check_train_config_is_usable)):
        try:
            cfg = build(_read_text_config(text, ".toml" if as_toml else ".json"))
        except UserError as exc:
            assert "\n" not in str(exc)
            continue
        check(cfg)


@CHEAP
@given(st.text(max_size=60) | st.sampled_from(["[data]\nbatch_size = " + "9" * 5000, "a = " + "[" * 5000,
                                               "a = " + "{a = " * 3000, "x = 1\nx = 2", "[data]\n[data]"]),
       st.sampled_from([".json", ".toml", ".txt", ""]))
def test_config_file_text_is_read_or_refused(text, suffix):
    try:
        data = _read_text_config(text, suffix)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(data, dict)


@pytest.mark.parametrize("content, suffix", [
    ("1" * 5000, ".json"), ("[" * 100000, ".json"), ('{"epochs": ' + "1" * 5000 + "}", ".json"),
    ("epochs = " + "1" * 5000, ".toml"), ("a = " + "[" * 100000, ".toml"), ("a = {" * 3000, ".toml"),
], ids=lambda v: repr(v[:12]))
def test_pathological_config_files_are_refused(tmp_path, content, suffix):
    path = tmp_path / f"c{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match="malformed"):
        read_config_file(path)


@FEW
@given(config_dicts(SEARCH_SCHEMA), st.sampled_from([".json", ".toml"]))
def test_invalid_config_file_through_the_cli_writes_nothing(data, suffix):
    text = to_toml(data) if suffix == ".toml" else json.dumps(data)
    try:
        _build_search(_read_text_config(text, suffix))
        assume(False)  # a valid config would start a search: only the refusal path is checked here
    except UserError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / f"c{suffix}", Path(tmp) / "run"
        path.write_text(text, encoding="utf-8")
        assert_refused(invoke("search", "--config", path, "--out", out))
        assert not out.exists()


# -------------------------------------------------------------------------------- CLI options

DOTTED = SEARCH_KEYS
TRAIN_DOTTED = TRAIN_KEYS
OPTION_TEXT = st.text(max_size=12)
INT_OPTION = st.none() | st.integers(-3, 5).map(str) | HUGE_INTS.map(str) | OPTION_TEXT
SET_VALUE = (VALUES.map(lambda v: json.dumps(v)) | st.text(max_size=10)
             | st.sampled_from(["9" * 5000, "[" * 5000, "NaN", "-Infinity", "1e999"]))


def _set_items(keys):
    pairs = st.tuples(st.sampled_from(keys) | st.text(max_size=10), SET_VALUE).map(lambda kv: f"{kv[0]}={kv[1]}")
    return st.lists(pairs | st.text(max_size=10), max_size=4)


def _options(draw, names_values):
    args = []
    for name, value in names_values:
        if value is not None:
            args += [f"{name}={value}"] if draw(st.booleans()) else [name, value]
    return args


@FEW
@given(st.data())
def test_random_search_options_never_give_a_traceback(data):
    draw = data.draw
    args = _options(draw, [
        ("--epochs", draw(INT_OPTION)), ("--batch-size", draw(INT_OPTION)), ("--seed", draw(INT_OPTION)),
        ("--dataset", draw(st.none() | st.sampled_from(DATASETS + ("CIFAR-10", "Digits", "mnist")) | OPTION_TEXT)),
        ("--device", draw(st.none() | st.sampled_from(["cpu", "auto", "cuda", "cuda:7", "mps", "meta", "cpu:x", ""])
                          | OPTION_TEXT)),
        ("--preset", draw(st.none() | st.sampled_from(["quick", "paper", "Quick"]) | OPTION_TEXT)),
        ("--strategy", draw(st.none() | st.sampled_from(["enas", "darts", "random", "dart"]))),
    ])
    for item in draw(_set_items(DOTTED)):
        args += ["--set", item]
    with tempfile.TemporaryDirectory() as tmp:
        blocker = Path(tmp) / "not-a-folder"
        blocker.write_text("")
        # --out names a file: a valid command line stops there, before any data or training.
        assert_refused(invoke("search", *args, "--out", blocker))
        assert blocker.read_text() == ""
        assert sorted(os.listdir(tmp)) == ["not-a-folder"]


@FEW
@given(st.data())
def test_random_train_options_never_give_a_traceback(data):
    draw = data.draw
    args = _options(draw, [
        ("--epochs", draw(INT_OPTION)), ("--batch-size", draw(INT_OPTION)), ("--seed", draw(INT_OPTION)),
        ("--channels", draw(INT_OPTION)), ("--layers", draw(INT_OPTION)),
        ("--dataset", draw(st.none() | st.sampled_from(DATASETS) | OPTION_TEXT)),
        ("--device", draw(st.none() | st.sampled_from(["cpu", "cuda", "cuda:-1", "xla", "cpu:0"]) | OPTION_TEXT)),
        ("--preset", draw(st.none() | st.sampled_from(["quick", "darts", "enas", "paper"]) | OPTION_TEXT)),
    ])
    for item in draw(_set_items(TRAIN_DOTTED)):
        args += ["--set", item]
    genotype = draw(st.sampled_from(["DARTS_V2", "enas", "no_such_genotype", ""]))
    with tempfile.TemporaryDirectory() as tmp:
        blocker = Path(tmp) / "not-a-folder"
        blocker.write_text("")
        assert_refused(invoke("train", genotype, *args, "--out", blocker))
        assert sorted(os.listdir(tmp)) == ["not-a-folder"]


@pytest.mark.parametrize("args, message", [
    (["--seed", str(2**64)], "run.seed"),
    (["--seed", "-1"], "run.seed"),
    (["--set", "optim.lr_max=NaN"], "optim.lr_max"),
    (["--set", "optim.lr_max=1e999"], "optim.lr_max"),
    (["--set", "optim.lr_max=" + "9" * 400], "optim.lr_max"),
    (["--set", "optim.momentum=-0.5"], "optim.momentum"),
    (["--set", "optim.weight_decay=-1"], "optim.weight_decay"),
    (["--set", "optim.grad_clip=0"], "optim.grad_clip"),
    (["--set", "controller.lr=-1"], "controller.lr"),
    (["--set", "controller.eps=-1"], "controller.eps"),
    (["--set", "controller.beta1=1"], "controller.beta1"),
    (["--set", "controller.baseline_decay=2"], "controller.baseline_decay"),
    (["--set", "controller.hidden=0"], "controller.hidden"),
    (["--set", "controller.temperature=0"], "controller.temperature"),
    (["--set", "controller.op_tanh_reduce=0"], "controller.op_tanh_reduce"),
    (["--set", "darts.arch_lr=-1"], "darts.arch_lr"),
    (["--set", "darts.arch_beta2=1.5"], "darts.arch_beta"),
    (["--set", "darts.unrolled_r=0"], "darts.unrolled_r"),
    (["--set", "run.log_every=0"], "run.log_every"),
    (["--set", "run.threads=-2"], "run.threads"),
    (["--set", "data.eval_batch_size=-1"], "data.eval_batch_size"),
    (["--set", "data.image_size=0"], "data.image_size"),
    (["--set", "model.aux_weight=-1"], "model.aux_weight"),
    (["--set", "run.checkpoint_every_minutes=0"], "run.checkpoint_every_minutes"),
    (["--set", "epochs=" + "9" * 5000], "epochs"),
    (["--set", "epochs=" + "[" * 5000], "epochs"),
    (["--device", "cuda:abc"], "device"),
    (["--device", "meta"], "device"),
], ids=lambda v: repr(v)[:40])
def test_values_that_would_crash_later_are_refused_up_front(tmp_path, args, message):
    out = tmp_path / "run"
    assert_refused(invoke("search", "--preset", "quick", *args, "--out", out), message)
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--seed", str(2**64)], "run.seed"),
    (["--set", "optim.lr_max=Infinity"], "optim.lr_max"),
    (["--set", "model.aux_weight=NaN"], "model.aux_weight"),
    (["--device", "cuda:abc"], "device"),
])
def test_train_values_that_would_crash_later_are_refused_up_front(tmp_path, args, message):
    out = tmp_path / "run"
    assert_refused(invoke("train", "DARTS_V2", "--preset", "quick", *args, "--out", out), message)
    assert not out.exists()


@CHEAP
@given(st.text(max_size=20) | SET_VALUE)
def test_set_option_parsing_never_raises_anything_else(item):
    try:
        key, _value = parse_set_option(item)
    except UserError:
        assert "=" not in item
        return
    assert isinstance(key, str)


# -------------------------------------------------------------------------------- datasets

def _png_bytes(size=(4, 4), mode="RGB", fmt="PNG", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "F":
        im = Image.fromarray(rng.random((h, w), dtype=np.float32))
    elif mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        shape = {"L": (h, w), "1": (h, w), "LA": (h, w, 2), "RGBA": (h, w, 4)}.get(mode, (h, w, 3))
        im = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8))
        if im.mode != mode:
            im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


GOOD_KINDS = [("png", (4, 4), "RGB"), ("png", (5, 3), "RGB"), ("png", (1, 1), "L"), ("png", (3, 7), "L"),
              ("png", (6, 6), "RGBA"), ("png", (4, 2), "LA"), ("png", (4, 4), "P"), ("png", (4, 4), "1"),
              ("png", (4, 4), "I;16"), ("tiff", (3, 3), "F"), ("jpeg", (8, 5), "RGB"), ("jpeg", (4, 4), "CMYK"),
              ("bmp", (2, 9), "RGB")]
BAD_CONTENTS = [b"", b"not an image", b"\x89PNG\r\n\x1a\n", None]  # None: a truncated real image
EXT = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg", "bmp": ".bmp"}
NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\.")
CLASS_NAMES = st.text(NAME_CHARS, min_size=1, max_size=6)


@st.composite
def image_files(draw):
    """``(file name, bytes)``: mostly decodable images of many modes and odd sizes, some broken files."""
    if draw(st.integers(0, 5)) == 0:
        bad = draw(st.sampled_from(BAD_CONTENTS))
        if bad is None:
            bad = _png_bytes((6, 6))[:40]
        return draw(st.sampled_from([".png", ".jpg", ".jpeg", ".PNG"])), bad
    fmt, size, mode = draw(st.sampled_from(GOOD_KINDS))
    return EXT[fmt], _png_bytes(size, mode, fmt.upper(), seed=draw(st.integers(0, 3)))


@st.composite
def image_folders(draw):
    """A folder layout: classes of images (maybe empty), stray files, non-image files."""
    classes = draw(st.dictionaries(CLASS_NAMES, st.lists(image_files(), max_size=4), max_size=4))
    stray = draw(st.lists(image_files(), max_size=2))
    other = draw(st.lists(st.sampled_from(["notes.txt", "README", ".DS_Store", "x.gif"]), max_size=2))
    return classes, stray, other


def _write_folder(root: Path, layout) -> None:
    classes, stray, other = layout
    for i, (ext, content) in enumerate(stray):
        (root / f"stray{i}{ext}").write_bytes(content)
    for c, files in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i, (ext, content) in enumerate(files):
            (root / c / f"img{i}{ext}").write_bytes(content)
        for name in other:
            (root / c / name).write_bytes(b"\x00junk")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_folders(), st.integers(1, 9))
def test_any_image_folder_loads_or_raises_user_error(layout, size):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_folder(root, layout)
        try:
            train = load_dataset("imagefolder", "train", str(root), image_size=size)
            test = load_dataset("imagefolder", "test", str(root), image_size=size)
        except UserError as exc:
            assert "\n" not in str(exc)
            return
    for split in (train, test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] in ((1, size, size), (3, size, size))
        assert split.images.shape[1] == train.images.shape[1]
        assert 0 <= int(split.labels.min()) and int(split.labels.max()) < train.num_classes
    assert len(train) >= 2 and len(test) >= 1
    assert all(math.isfinite(v) and v > 0 for v in train.std)
    assert train.classes == sorted(c for c in layout[0] if not c.startswith("."))


TINY_SEARCH = ["--preset", "quick", "--epochs", "1", "--batch-size", "2", "--set", "model.channels=2",
               "--set", "model.layers=3", "--set", "controller.updates_per_epoch=1",
               "--set", "controller.samples_per_update=1", "--set", "derive.samples=1",
               "--set", "data.image_size=8", "--set", "run.threads=1"]
TINY_TRAIN = ["DARTS_V2", "--preset", "quick", "--epochs", "1", "--batch-size", "2", "--channels", "2",
              "--layers", "3", "--set", "data.image_size=8", "--set", "run.threads=1"]


def _img(path: Path, size=(4, 4), mode="RGB", fmt="PNG", seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bytes(size, mode, fmt, seed))


def _two_classes(root: Path, per_class: int = 2) -> None:
    for c in ("ants", "bees"):
        for i in range(per_class):
            _img(root / c / f"{i}.png", seed=i)


def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG header claiming 10^10 pixels (beyond PIL's decompression-bomb limit), no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _unreadable(root: Path) -> None:
    _two_classes(root, 3)
    os.chmod(root / "bees" / "1.png", 0)


BAD_FOLDERS = {
    "empty folder": lambda r: None,
    "files but no class folders": lambda r: (_img(r / "a.png"), _img(r / "b.png")),
    "single class": lambda r: [_img(r / "only" / f"{i}.png", seed=i) for i in range(4)],
    "empty class folder": lambda r: (_two_classes(r, 3), (r / "wasps").mkdir()),
    "corrupt png": lambda r: (_two_classes(r, 3), (r / "bees" / "x.png").write_bytes(os.urandom(64))),
    "corrupt jpg": lambda r: (_two_classes(r, 3), (r / "ants" / "x.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(61))),
    "zero-byte image": lambda r: (_two_classes(r, 3), (r / "bees" / "zero.png").write_bytes(b"")),
    "truncated image": lambda r: (_two_classes(r, 3), (r / "bees" / "t.png").write_bytes(_png_bytes((9, 9))[:60])),
    "only non-image files": lambda r: [(r / c).mkdir() or (r / c / "x.txt").write_text("x") for c in "ab"],
    "too few images to hold out a test split": lambda r: _two_classes(r, 1),
    "unreadable file": _unreadable,
    "decompression bomb": lambda r: (_two_classes(r, 3), (r / "ants" / "bomb.png").write_bytes(_bomb_png())),
    "huge header, no data": lambda r: (_two_classes(r, 3), (r / "ants" / "big.png").write_bytes(_bomb_png(9000, 9000))),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
@pytest.mark.parametrize("command", ["search", "train"])
def test_bad_image_folders_are_refused_without_outputs(tmp_path, case, command):
    if case == "unreadable file" and os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    data = tmp_path / "data"
    data.mkdir()
    BAD_FOLDERS[case](data)
    out = tmp_path / "run"
    args = TINY_SEARCH if command == "search" else TINY_TRAIN
    assert_refused(invoke(command, *args, "--dataset", "imagefolder", "--data-dir", data, "--out", out))
    for name in ("genotype.json", "result.json", "derive.json", "config.json", "checkpoints", "metrics.jsonl"):
        assert not (out / name).exists(), name
    # Nothing there blocks a second attempt with the same --out.
    assert_refused(invoke(command, *args, "--dataset", "imagefolder", "--data-dir", data, "--out", out))


@pytest.mark.parametrize("command", ["search", "train"])
def test_missing_or_file_data_dir_is_refused(tmp_path, command):
    args = TINY_SEARCH if command == "search" else TINY_TRAIN
    (tmp_path / "file").write_text("")
    for data_dir in (tmp_path / "missing", tmp_path / "file"):
        assert_refused(invoke(command, *args, "--dataset", "imagefolder", "--data-dir", data_dir,
                              "--out", tmp_path / "run"), "data dir")
    assert_refused(invoke(command, *args, "--dataset", "imagefolder", "--out", tmp_path / "run"), "data dir")


def _mixed_folder(root: Path) -> None:
    """Two classes of grayscale and RGB images of odd sizes (1x1 to 9x2), five per class."""
    kinds = [((5, 3), "RGB", "PNG"), ((1, 1), "L", "PNG"), ((9, 2), "RGBA", "PNG"), ((3, 3), "P", "PNG"),
             ((4, 6), "RGB", "JPEG")]
    for c in ("cats", "dogs"):
        for i, (size, mode, fmt) in enumerate(kinds):
            _img(root / c / f"{i}.{'jpg' if fmt == 'JPEG' else 'png'}", size, mode, fmt, seed=i + len(c))


@pytest.mark.parametrize("command", ["search", "train"])
def test_mixed_odd_image_folder_trains(tmp_path, command):
    data = tmp_path / "data"
    _mixed_folder(data)
    out = tmp_path / "run"
    args = TINY_SEARCH if command == "search" else TINY_TRAIN
    result = invoke(command, *args, "--dataset", "imagefolder", "--data-dir", data, "--out", out)
    assert result.exit_code == 0, result.output
    if command == "search":
        assert Genotype.from_dict(json.loads((out / "genotype.json").read_text()))
    else:
        outcome = json.loads((out / "result.json").read_text())
        assert outcome["num_classes"] == 2 and outcome["input_shape"] == [3, 8, 8]
