"""Hostile input: config files, `--set` values and CLI options are used or refused cleanly.

The contract (README "Genotypes", "Config"; enas/cli.py): library calls either
succeed or raise their documented error (:class:`GenotypeError`,
:class:`UserError`); through the CLI a refusal is exit status 2 with exactly
one ``error:`` line, never a traceback or exit 1, and it leaves no partial
outputs. Property-based (hypothesis) where the check is cheap; the few cases
that actually train are a fixed list. Random CLI options: ``test_hostile_options.py``; shared
parts (the config schemas and strategies among them): ``hostile_helpers.py``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from hostile_helpers import (
    CHEAP,
    FEW,
    SEARCH_KEYS,
    SEARCH_SCHEMA,
    TRAIN_KEYS,
    TRAIN_SCHEMA,
    VALUES,
    assert_refused,
    config_dicts,
    invoke,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from controller import Controller, Reinforce
from enas.config.lib import read_config_file
from enas.errors import UserError
from enas.retrain.schedules import epoch_lr
from enas.runtime import sgd
from enas.config.search import SearchConfig, build_search_config
from enas.config.train import TrainConfig, build_train_config
from shared_model.spaces import make_space

# -------------------------------------------------------------------------------- config files

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
    sgd([p], lr=o.lr_max, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
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
    sgd([p], lr=o.lr_max, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
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
