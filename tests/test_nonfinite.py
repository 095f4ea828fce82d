"""Non-finite values: skipped steps, the stop after ``run.max_nonfinite``, NaN rewards.

A NaN/inf loss or gradient skips the optimizer step (weights and optimizer
state unchanged), is counted and logged; ``max_nonfinite`` in a row stops the
run with one error line naming the likely causes, and the last checkpoint stays
usable. A NaN reward never reaches the controller (REINFORCE skips the sample).
The DARTS architecture step's skip is covered in tests/test_darts.py.
"""
from __future__ import annotations

import copy
import json
import logging
import math

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from controller import Controller, Reinforce, TFAdam
from enas.runs.checkpoint import load_checkpoint
from enas.cli import cli
from enas.errors import UserError
from enas.search.build import build_search
from enas.search.driver import SearchDriver
from enas.search.trainer import ChildTrainer, NonFiniteError
from enas.config.search import build_search_config
from shared_model.spaces import make_space

NAN = float("nan")
TINY_FLAGS = {"epochs": 1, "data.batch_size": 128, "model.channels": 2, "model.layers": 3,
              "controller.updates_per_epoch": 2, "controller.samples_per_update": 3, "derive.samples": 2,
              "run.device": "cpu", "run.threads": 1}
TINY_CLI = ["--preset", "quick", "--epochs", "1", "--batch-size", "128", "--set", "model.channels=2",
            "--set", "model.layers=3", "--set", "controller.updates_per_epoch=1",
            "--set", "controller.samples_per_update=1", "--set", "derive.samples=1", "--set", "run.threads=1",
            "--set", "run.log_every=1"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


class Linear(nn.Module):
    """``model(x, arch) -> (logits, None)`` like the supernet."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)

    def forward(self, x, arch=None):
        return self.fc(x), None


def make_trainer(max_nonfinite=3, grad_clip=5.0):
    model = Linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    return ChildTrainer(model, opt, torch.device("cpu"), grad_clip=grad_clip, max_nonfinite=max_nonfinite)


def batch(value=None):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g)  # (B, 4)
    if value is not None:
        x[2, 1] = value
    return x, torch.randint(3, (6,), generator=g)


def snapshot(trainer):
    return (copy.deepcopy(trainer.model.state_dict()), copy.deepcopy(trainer.optimizer.state_dict()))


def assert_same(a, b):
    (wa, oa), (wb, ob) = a, b
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert oa["state"].keys() == ob["state"].keys()
    for k in oa["state"]:
        assert all(torch.equal(oa["state"][k][n], ob["state"][k][n]) for n in oa["state"][k])


# -------------------------------------------------------------------------------- ChildTrainer

@pytest.mark.parametrize("bad", [NAN, float("inf"), -float("inf")])
@pytest.mark.parametrize("grad_clip", [5.0, None])
def test_non_finite_step_is_skipped_counted_and_logged(bad, grad_clip, caplog):
    trainer = make_trainer(grad_clip=grad_clip)
    trainer.train_step(*batch(), None)  # a good step first: momentum buffers exist
    before = snapshot(trainer)
    with caplog.at_level(logging.WARNING, logger="enas.search.trainer"):
        out = trainer.train_step(*batch(bad), None)
    assert out["skipped"] == 1.0 and not math.isfinite(out["loss"])
    assert_same(snapshot(trainer), before)  # weights and momentum untouched
    assert all(p.grad is None for p in trainer.model.parameters())  # no NaN gradient left behind
    assert trainer.nonfinite_total == 1 and trainer.nonfinite_in_row == 1
    assert any("non-finite" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)

    out = trainer.train_step(*batch(), None)  # a finite step resets the streak, not the total
    assert out["skipped"] == 0.0 and trainer.nonfinite_in_row == 0 and trainer.nonfinite_total == 1
    assert not torch.equal(trainer.model.fc.weight, before[0]["fc.weight"])


def test_non_finite_gradient_with_finite_loss_is_skipped():
    trainer = make_trainer()
    before = snapshot(trainer)
    original = trainer.loss

    def loss_with_nan_gradient(x, y, arch):
        loss, logits = original(x, y, arch)
        w = trainer.model.fc.weight
        # sqrt'(0) is inf: the value stays finite while the gradient is not.
        return loss + 0.0 * (w[0, 0] - w[0, 0]).abs().sqrt(), logits

    trainer.loss = loss_with_nan_gradient
    out = trainer.train_step(*batch(), None)
    assert math.isfinite(out["loss"]) and out["skipped"] == 1.0 and trainer.nonfinite_total == 1
    assert_same(snapshot(trainer), before)


def test_max_nonfinite_in_a_row_stops_with_a_user_error_naming_the_causes():
    trainer = make_trainer(max_nonfinite=3)
    for _ in range(2):
        trainer.train_step(*batch(NAN), None)
    trainer.train_step(*batch(), None)  # the streak restarts
    for _ in range(2):
        trainer.train_step(*batch(NAN), None)
    with pytest.raises(NonFiniteError) as info:
        trainer.train_step(*batch(NAN), None)
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert message.startswith("3 consecutive non-finite steps") and "\n" not in message
    assert "learning rate" in message and "NaN" in message and "checkpoint" in message
    assert trainer.nonfinite_total == 5
    state = trainer.state_dict()
    fresh = make_trainer()
    fresh.load_state_dict(state)
    assert (fresh.nonfinite_in_row, fresh.nonfinite_total) == (3, 5)


def test_non_finite_forward_gives_a_nan_reward():
    trainer = make_trainer()
    assert math.isnan(trainer.accuracy(*batch(NAN), None))
    assert 0.0 <= trainer.accuracy(*batch(), None) <= 1.0


# -------------------------------------------------------------------------------- search CLI

@pytest.fixture
def nan_loss(monkeypatch):
    """Every training loss of the supernet becomes NaN (what a diverging run produces)."""
    original = ChildTrainer.loss

    def loss(self, x, y, arch):
        value, logits = original(self, x, y, arch)
        return value * NAN, logits

    monkeypatch.setattr(ChildTrainer, "loss", loss)
    return monkeypatch


def test_search_stops_after_max_nonfinite_and_its_checkpoint_resumes(tmp_path, nan_loss):
    run = tmp_path / "run"
    result = invoke("search", *TINY_CLI, "--set", "run.max_nonfinite=3", "--out", run)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert errors[0].startswith("error: 3 consecutive non-finite steps") and "learning rate" in errors[0]
    assert sum("non-finite loss or gradient: step skipped" in line for line in lines) == 3
    assert "step skipped" in (run / "log.txt").read_text()
    train_rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in train_rows if r["phase"] == "train"] == [1.0, 1.0]  # the 3rd raised
    assert all(r["loss"] == "nan" for r in train_rows if r["phase"] == "train")
    assert not (run / "genotype.json").exists() and not (run / "derive.json").exists()

    state = load_checkpoint(run / "checkpoints" / "last.pt", kind="search")
    assert state["position"]["step"] == 0 and state["position"]["stage"] == "search"
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())

    nan_loss.undo()  # the cause is gone: the run continues from its last checkpoint
    result = invoke("search", "--resume", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "genotype.json").read_text())["normal"]


# -------------------------------------------------------------------------------- REINFORCE

def _controller(seed=0):
    torch.manual_seed(seed)
    space = make_space("micro", 2)
    return Controller(space.decisions, len(space.sample_ops), hidden=8)


def test_all_nan_rewards_leave_controller_baseline_and_adam_untouched():
    ctrl = _controller()
    reinforce = Reinforce(ctrl, samples_per_update=4, baseline_decay=0.9)
    reinforce.baseline = 0.3
    before = copy.deepcopy(ctrl.state_dict())
    for bad in (NAN, float("inf"), -float("inf")):
        out = reinforce.update(lambda actions: bad, torch.Generator().manual_seed(0))
        assert out["skipped_nonfinite"] == 4 and out["num_samples"] == 4
        assert math.isnan(out["loss"]) and math.isnan(out["grad_norm"]) and out["best_actions"] is None
    assert reinforce.baseline == 0.3 and reinforce.num_updates == 0
    assert reinforce.optimizer.state_dict()["state"] == {}
    assert all(torch.equal(v, ctrl.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in ctrl.parameters())


def test_only_finite_rewards_contribute_to_baseline_and_gradient():
    rewards = [0.5, NAN, 0.25, float("inf"), 0.75]
    ctrl = _controller()
    reference = copy.deepcopy(ctrl)
    decay, entropy_weight = 0.8, 0.01
    reinforce = Reinforce(ctrl, lr=0.01, samples_per_update=5, baseline_decay=decay, entropy_weight=entropy_weight)
    calls = iter(rewards)
    out = reinforce.update(lambda actions: next(calls), torch.Generator().manual_seed(3))
    assert out["skipped_nonfinite"] == 2

    # The same samples by hand, with the two non-finite ones left out entirely.
    samples = reference.sample_batch(5, generator=torch.Generator().manual_seed(3))
    b, losses = 0.0, []
    for s, raw in zip(samples, rewards):
        if not math.isfinite(raw):
            continue
        r = raw + entropy_weight * float(s.entropy.detach())
        b -= (1 - decay) * (b - r)
        losses.append(-s.log_prob * (r - b))
    loss = torch.stack(losses).mean()
    assert reinforce.baseline == pytest.approx(b) and out["loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert out["raw_reward"] == pytest.approx(0.5)
    opt = TFAdam(reference.parameters(), lr=0.01, betas=(0.0, 0.999), eps=1e-3)  # the official rule
    loss.backward()
    opt.step()
    for p, q in zip(ctrl.parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


# -------------------------------------------------------------------------------- ENAS strategy

def _setup(**extra):
    cfg = build_search_config("enas", "quick", None, dict(TINY_FLAGS, **extra))
    torch.manual_seed(0)
    return cfg, build_search(cfg, torch.device("cpu"))


def test_nan_accuracy_never_moves_the_controller_in_the_controller_phase():
    cfg, setup = _setup()
    strategy = setup.strategy
    strategy.trainer.accuracy = lambda x, y, arch, sync=True: NAN
    before = copy.deepcopy(strategy.policy.state_dict())
    controller_phase = strategy.phases(0)[1]
    rows = list(controller_phase.run(0))
    assert len(rows) == cfg.controller.updates_per_epoch
    assert all(r["skipped_nonfinite"] == cfg.controller.samples_per_update for r in rows)
    assert all(math.isnan(r["reward"]) and math.isnan(r["loss"]) for r in rows)
    assert all(torch.equal(v, strategy.policy.state_dict()[k]) for k, v in before.items())
    assert strategy.reinforce.baseline == 0.0 and strategy.reinforce.num_updates == 0
    assert strategy.epoch_result() == (None, {})  # no NaN "best" genotype of the epoch

    calls = iter([NAN, 0.5, NAN] * 10)  # mixed: the finite rewards still train the controller
    strategy.trainer.accuracy = lambda x, y, arch, sync=True: next(calls)
    rows = list(controller_phase.run(0))
    assert [r["skipped_nonfinite"] for r in rows] == [2, 2]
    assert strategy.reinforce.num_updates == 2 and math.isfinite(strategy.reinforce.baseline)
    assert not all(torch.equal(v, strategy.policy.state_dict()[k]) for k, v in before.items())
    genotype, extra = strategy.epoch_result()
    assert genotype is not None and extra == {"best_reward": 0.5}


def test_nan_rewards_are_recorded_in_metrics_and_the_search_completes(tmp_path):
    cfg, setup = _setup()
    original = setup.trainer.accuracy
    controller_calls = cfg.controller.updates_per_epoch * cfg.controller.samples_per_update
    calls = {"n": 0}

    def accuracy(x, y, arch, sync=True):
        calls["n"] += 1  # the controller phase comes first; derive then scores normally
        return NAN if calls["n"] <= controller_calls else original(x, y, arch, sync=sync)

    setup.trainer.accuracy = accuracy
    before = copy.deepcopy(setup.strategy.policy.state_dict())
    driver = SearchDriver(cfg, setup, tmp_path)
    genotype_path = driver.run(tensorboard=False)
    assert genotype_path.is_file()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    controller_rows = [r for r in rows if r["phase"] == "controller"]
    assert len(controller_rows) == cfg.controller.updates_per_epoch
    assert all(r["skipped_nonfinite"] == cfg.controller.samples_per_update and r["reward"] == "nan"
               for r in controller_rows)
    epoch_row = next(r for r in rows if r["phase"] == "epoch")
    assert epoch_row["controller_skipped_nonfinite_mean"] == cfg.controller.samples_per_update
    assert "genotype" not in epoch_row and not (tmp_path / "genotypes").exists()
    assert all(torch.equal(v, setup.strategy.policy.state_dict()[k]) for k, v in before.items())
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt", kind="search")
    assert state["strategy"]["reinforce"]["num_updates"] == 0


def test_all_nan_derive_scores_give_one_error_line_and_keep_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(ChildTrainer, "accuracy", lambda self, x, y, arch, sync=True: NAN)
    run = tmp_path / "run"
    result = invoke("search", *TINY_CLI, "--out", run)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "NaN" in errors[0], result.stderr
    assert not (run / "genotype.json").exists() and not (run / "derive.json").exists()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_nonfinite"] for r in rows if r["phase"] == "controller"] == [1]
    state = load_checkpoint(run / "checkpoints" / "last.pt", kind="search")
    assert state["position"]["stage"] == "derive"  # `enas derive RUN` can retry once the cause is fixed


def test_finite_weight_steps_do_not_hide_endless_nonfinite_architecture_steps():
    trainer = make_trainer()
    with pytest.raises(NonFiniteError, match=r"\(architecture\)"):
        for _ in range(10):
            trainer.note_nonfinite("architecture loss", kind="architecture")
            trainer.note_finite("weights")
    assert trainer.in_row["architecture"] == trainer.max_nonfinite
