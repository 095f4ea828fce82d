"""Hostile input: random CLI options and ``--set`` values are used or refused cleanly.

The contract (README "Config"; enas/cli.py): through the CLI a refusal is exit status 2 with
exactly one ``error:`` line, never a traceback or exit 1, and it leaves no partial outputs.
Config files and config objects: ``test_hostile_config.py``; shared parts: ``hostile_helpers.py``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hostile_helpers import CHEAP, FEW, HUGE_INTS, SEARCH_KEYS, TRAIN_KEYS, VALUES, assert_refused, invoke
from hypothesis import given
from hypothesis import strategies as st

from enas.config.lib import parse_set_option
from enas.data.datasets import DATASETS
from enas.errors import UserError

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


