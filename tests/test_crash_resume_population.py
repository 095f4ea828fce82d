"""SIGKILL `enas search --strategy evolution|bo` at several points, resume, compare with an uninterrupted run.

The population (members, rewards, births), the hall of fame, TPE's trials and the generator that
seeds its sampler are all in the checkpoint, so the resumed run must end bit-identically.
"""
import pytest
import torch

from test_crash_resume import assert_same_run, kill_and_resume, start

ARGS = ["--preset", "quick", "--epochs", "2", "--batch-size", "32", "--deterministic", "--device", "cpu",
        "--set", "model.channels=4", "--set", "model.layers=3", "--set", "derive.samples=12",
        "--set", "evolution.population=5", "--set", "evolution.sample=2", "--set", "evolution.cycles_per_epoch=12",
        "--set", "bo.population=5", "--set", "bo.trials_per_epoch=12", "--set", "bo.startup_trials=4",
        "--set", "run.checkpoint_every_steps=3", "--set", "run.log_every=1", "--set", "run.threads=1"]


@pytest.mark.parametrize("strategy", ["evolution", "bo"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, strategy):
    if strategy == "bo":
        pytest.importorskip("optuna")
    args = [*ARGS, "--strategy", strategy]
    ref, run = tmp_path / "ref", tmp_path / "run"
    proc = start([*args, "--out", str(ref)])
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out

    kill_points = [
        lambda r: any(x["phase"] == strategy and x["epoch"] == 1 for x in r),  # first search phase
        lambda r: sum(x["phase"] == strategy and x["epoch"] == 2 for x in r) >= 5,  # mid second one
        lambda r: any(x["phase"] == "derive" for x in r),  # during derive
    ]
    assert kill_and_resume(args, run, kill_points) >= 2, "the run finished before the kill points were reached"
    a, b = assert_same_run(run, ref)
    assert a["strategy"]["proposer"] == b["strategy"]["proposer"]  # population / trials, bit for bit
    assert a["strategy"]["hall"] == b["strategy"]["hall"]
    assert all(torch.equal(a["rng"][k], b["rng"][k]) for k in a["rng"])
