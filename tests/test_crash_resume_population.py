"""SIGKILL `enas search --strategy evolution|bo` at several points, resume, compare with an uninterrupted run.

The population (members, rewards, births), the hall of fame, TPE's trials and the generator that
seeds its sampler are all in the checkpoint, so the resumed run must end bit-identically.
"""
import json

import pytest
import torch

from test_crash_resume import run_until, start

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
    kills = 0
    finished = not run_until([*args, "--out", str(run)], run, kill_points[0])
    kills += not finished
    for point in kill_points[1:]:
        if finished:
            break
        finished = not run_until(["--resume", str(run)], run, point)
        kills += not finished
    while not finished:
        finished = not run_until(["--resume", str(run)], run, lambda r: False)
    assert kills >= 2, "the run finished before the kill points were reached"

    assert (run / "genotype.json").read_text() == (ref / "genotype.json").read_text()
    derive_run, derive_ref = (json.loads((d / "derive.json").read_text()) for d in (run, ref))
    assert derive_run.pop("search_hours") > 0 and derive_ref.pop("search_hours") > 0
    assert derive_run == derive_ref
    assert (run / "metrics.jsonl").read_text() == (ref / "metrics.jsonl").read_text()
    a = torch.load(ref / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["strategy"]["proposer"] == b["strategy"]["proposer"]  # population / trials, bit for bit
    assert a["strategy"]["hall"] == b["strategy"]["hall"]
    assert all(torch.equal(a["rng"][k], b["rng"][k]) for k in a["rng"])
