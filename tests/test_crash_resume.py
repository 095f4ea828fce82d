"""SIGKILL `enas search` at several points, resume, and compare with an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ARGS = ["--preset", "quick", "--epochs", "2", "--batch-size", "32", "--deterministic", "--device", "cpu",
        "--set", "model.channels=4", "--set", "model.layers=3", "--set", "controller.updates_per_epoch=4",
        "--set", "controller.samples_per_update=3", "--set", "derive.samples=30",
        "--set", "run.checkpoint_every_steps=3", "--set", "run.log_every=1", "--set", "run.threads=1"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def rows(run: Path):
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.endswith("}")]


def start(args):
    return subprocess.Popen([sys.executable, "-m", "enas", "search", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_until(args, run: Path, condition, timeout=300.0) -> bool:
    """Run until ``condition(rows)`` holds, then SIGKILL; False if it finished first."""
    proc = start(args)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if condition(rows(run)):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    out = proc.communicate()[0]
    assert proc.returncode == 0, out
    return False


def kill_and_resume(args, run: Path, kill_points) -> int:
    """Start ``args`` into ``run``, SIGKILL at each kill point in turn (resuming in between), finish.

    Returns the number of kills (a point the run passes without being caught is no kill).
    """
    kills = 0
    finished = not run_until([*args, "--out", str(run)], run, kill_points[0])
    kills += not finished
    for point in kill_points[1:]:
        if finished:
            break
        assert (run / "checkpoints" / "last.pt").is_file()
        finished = not run_until(["--resume", str(run)], run, point)
        kills += not finished
    while not finished:
        finished = not run_until(["--resume", str(run)], run, lambda r: False)
    return kills


def assert_same_run(run: Path, ref: Path):
    """Same genotype, derive.json (but its wall time), metrics and weights; returns both last checkpoints."""
    assert (run / "genotype.json").read_text() == (ref / "genotype.json").read_text()
    derive_run, derive_ref = (json.loads((d / "derive.json").read_text()) for d in (run, ref))
    assert derive_run.pop("search_hours") > 0 and derive_ref.pop("search_hours") > 0
    assert derive_run == derive_ref
    assert (run / "metrics.jsonl").read_text() == (ref / "metrics.jsonl").read_text()
    a = torch.load(ref / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert not list(run.rglob("*.tmp")), "a temporary file was left behind"
    return a, b


@pytest.mark.parametrize("space", ["micro", "macro"])
def test_sigkill_at_several_points_then_resume_equals_uninterrupted(tmp_path, space):
    # micro: the quick preset's default space; macro: the layer-by-layer space, whose controller
    # adds the skip penalty to its loss (3 layers, C 4).
    args = ARGS if space == "micro" else [*ARGS, "--space", "macro"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    proc = start([*args, "--out", str(ref)])
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out

    kill_points = [
        lambda r: sum(x["phase"] == "train" for x in r) >= 8,  # mid child epoch 1
        lambda r: any(x["phase"] == "controller" and x["epoch"] == 2 for x in r),  # controller phase
        lambda r: any(x["phase"] == "derive" for x in r),  # during derive
    ]
    assert kill_and_resume(args, run, kill_points) >= 2, "the run finished before the kill points were reached"
    a, b = assert_same_run(run, ref)
    assert a["strategy"]["reinforce"]["baseline"] == b["strategy"]["reinforce"]["baseline"]
    assert sorted(p.name for p in (run / "genotypes").iterdir()) == ["epoch_001.json", "epoch_002.json"]
    assert json.loads((run / "config.json").read_text())["model"]["space"] == space
