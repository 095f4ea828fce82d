"""torch.distributed runs on the CPU: 2 gloo processes started by torchrun on the loopback.

Each job is ``python -m torch.distributed.run --standalone --nproc-per-node 2`` (a rendezvous
on localhost at a port the system picks) with a time limit, at tiny sizes (1 epoch of ENAS,
2 DARTS steps, 2 retrain steps).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from enas.data.augment import DeviceLoader
from enas.data.datasets import ImageData
from enas.distributed import CollectiveError, Dist

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
TINY = ["--preset", "quick", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
        "--set", "model.channels=4", "--set", "model.layers=3", "--set", "run.log_every=1"]
ENAS = [*TINY, "--deterministic", "--set", "data.limit=400", "--set", "controller.updates_per_epoch=2",
        "--set", "controller.samples_per_update=3", "--set", "derive.samples=4",
        "--set", "run.checkpoint_every_steps=3"]


def torchrun(*args, nproc=2, module=True):
    # --standalone: a rendezvous on localhost at a port the system picks (no race for a free port).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           *(["-m", "enas"] if module else []), *map(str, args)]
    return subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=240):
    try:
        out = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"timed out after {timeout}s: {proc.communicate()[0][-3000:]}")
    return proc.returncode, out


def ok(proc, timeout=240):
    rc, out = finish(proc, timeout)
    assert rc == 0, out[-4000:]
    return out


def rows(run: Path):
    path = run / "metrics.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines() if l.endswith("}")] if path.exists() else []


def errors(out: str):
    return [l for l in out.splitlines() if l.startswith("error: ")]


def worker(proc, rank: int) -> int:
    """The pid of the torchrun worker with ``rank``."""
    for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return int(pid)
    raise AssertionError("worker not found")


def written_once(run: Path):
    """Process 0 alone wrote: one set of checkpoints, no temporary files, every logged step once."""
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) in (["best.pt", "last.pt"], ["last.pt"])
    assert not list(run.rglob("*.tmp"))
    steps = [(r["step"], r["phase"]) for r in rows(run) if r["phase"] == "train"]
    assert steps and len(steps) == len(set(steps))
    log = (run / "log.txt").read_text().splitlines()
    assert sum("epoch 1/1" in line for line in log) == 1


# -- in one process ---------------------------------------------------------------
def test_the_parts_of_a_sharded_batch_are_the_one_process_batch():
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 255, (40, 3, 8, 8), dtype=torch.uint8, generator=g),
                     torch.arange(40) % 4, ["a", "b", "c", "d"], (0.5,) * 3, (0.2,) * 3)

    def loader(shard, train=True, batch=12):
        return DeviceLoader(data, batch, "cpu", train=train, cutout=4, seed=3, shard=shard,
                            generator=torch.Generator().manual_seed(7))

    for train, batch in ((True, 12), (False, 16)):
        one, parts = loader((0, 1), train, batch), [loader((r, 3), train, batch) for r in range(3)]
        assert all(len(p) == len(one) for p in parts)  # the same steps per epoch, whatever the world
        whole = list(one.epoch_batches(2))
        split = list(zip(*(list(p.epoch_batches(2)) for p in parts)))
        for (x, y), pieces in zip(whole, split):
            assert torch.equal(torch.cat([xp for xp, _ in pieces]), x)
            assert torch.equal(torch.cat([yp for _, yp in pieces]), y)
        assert all(torch.equal(p.generator.get_state(), one.generator.get_state()) for p in parts)
    a, b = loader((0, 1)), loader((0, 1))
    a.sample_batch(), b.skip_batch()  # another process scores it: the same draws
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_the_global_batch_must_split_evenly():
    Dist(rank=0, world=4).check_batch(96)
    with pytest.raises(CollectiveError, match="102 is the global batch .* 4 equal per-process .* 100 or 104"):
        Dist(rank=0, world=4).check_batch(100 + 2)
    with pytest.raises(CollectiveError, match="at least 2 images"):
        Dist(rank=1, world=8).check_batch(8)


def test_linear_scaling_is_opt_in():
    from enas.errors import UserError
    from enas.retrain.schedules import batch_scaled
    from enas.config.train import build_train_config

    assert batch_scaled(0.025, 384, None) == 0.025  # default: the protocol's rate at any batch
    assert batch_scaled(0.025, 384, 96) == pytest.approx(0.1)
    assert build_train_config(None, {}, preset="darts").optim.lr_batch is None
    with pytest.raises(UserError, match="optim.lr_batch must be >= 1"):
        build_train_config(None, {"optim.lr_batch": 0}, preset="darts")


def test_other_commands_refuse_torchrun():
    env = dict(ENV, WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    out = subprocess.run([sys.executable, "-m", "enas", "genotypes"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and errors(out.stderr) == [
        "error: enas genotypes runs in one process; torchrun is for enas search and enas train"], out.stderr


def test_exit_worker_flushes_and_keeps_the_status():
    code = ("import logging, sys; from enas.distributed import exit_worker; logging.basicConfig(); "
            "print('out', end=''); sys.stderr.write('err'); logging.getLogger('x').warning('logged'); exit_worker(3)")
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}  # buffered pipes, as torchrun's may be
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 3 and out.stdout == "out", out
    assert out.stderr.startswith("err") and "logged" in out.stderr, out.stderr


# -- 2 gloo processes ----------------------------------------------------------------
def test_collectives_equal_one_process():
    """Gradients of different paths, split batches, the split controller phase, agreement, RNG."""
    out = ok(torchrun(REPO / "tests" / "dist_checks.py", module=False))
    assert "process 0: ALL OK" in out and "process 1: ALL OK" in out, out[-3000:]


def test_enas_search_two_processes_kill_resume(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ok(torchrun("search", *ENAS, "--out", a))
    written_once(a)
    assert "derived genotype identical on all 2 processes (checked)" in (a / "log.txt").read_text()
    assert torch.load(a / "checkpoints" / "last.pt", weights_only=True)["world_size"] == 2

    proc = torchrun("search", *ENAS, "--out", b)
    deadline = time.monotonic() + 240
    while len([r for r in rows(b) if r["phase"] == "train"]) < 5 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(worker(proc, 1), signal.SIGKILL)
    rc, out = finish(proc, timeout=120)
    assert rc != 0 and "SIGKILL" in out and len(errors(out)) <= 1, out[-3000:]
    if errors(out):  # process 0 met the loss before torchrun stopped it
        assert errors(out)[0].startswith("error: lost contact with another process"), out
    state = torch.load(b / "checkpoints" / "last.pt", weights_only=True)  # the last good checkpoint
    assert state["position"]["stage"] == "search" and state["position"]["step"] >= 3
    shutil.copytree(b, c)

    ok(torchrun("search", "--resume", b))  # the same 2 processes: exactly the uninterrupted run
    assert (b / "genotype.json").read_text() == (a / "genotype.json").read_text()
    assert (b / "metrics.jsonl").read_text() == (a / "metrics.jsonl").read_text()
    wa, wb = (torch.load(r / "checkpoints" / "last.pt", weights_only=True)["model"] for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    one = subprocess.run([sys.executable, "-m", "enas", "search", "--resume", str(c)], env=ENV, cwd=REPO,
                         capture_output=True, text=True, timeout=240)  # one process continues it
    assert one.returncode == 0, one.stderr[-3000:]
    assert "resuming a run of 2 process(es) with 1" in (c / "log.txt").read_text()
    assert (c / "genotype.json").is_file()


def test_darts_second_order_two_processes_derive_one_genotype(tmp_path):
    run = tmp_path / "darts"
    ok(torchrun("search", *TINY, "--strategy", "darts", "--order", "2", "--set", "data.limit=128", "--out", run))
    written_once(run)
    assert len([r for r in rows(run) if r["phase"] == "train"]) == 2
    # Checked after every step (alphas) and at the end (genotype): a difference stops the run.
    assert "derived genotype identical on all 2 processes (checked)" in (run / "log.txt").read_text()
    assert json.loads((run / "genotype.json").read_text())["normal"]


def test_retrain_two_processes(tmp_path):
    run = tmp_path / "train"
    out = ok(torchrun("train", "DARTS_V2", *TINY, "--set", "data.limit=64", "--out", run))
    assert out.count("final test accuracy") == 1  # process 0 reports
    written_once(run)
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 2 and result["test_images"] == 297  # both halves of the test split counted
    assert "2 processes (global batch 32, 16 per process)" in (run / "log.txt").read_text()


def test_a_user_error_on_one_process_ends_all_with_one_line(tmp_path):
    run = tmp_path / "taken"
    run.mkdir()
    (run / "config.json").write_text("{}")  # only process 0 looks at the run folder
    started = time.monotonic()
    rc, out = finish(torchrun("search", *TINY, "--out", run), timeout=120)
    assert rc != 0 and errors(out) == [f"error: {run} already holds a run; use --resume to continue it or "
                                       "--force to replace it"], out[-3000:]
    assert f'File "{REPO}' not in out and time.monotonic() - started < 120  # torchrun's report only


def test_scaling_bench_runs():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_distributed.py"), "--nproc", "1", "2",
                          "--config", "tiny", "--units", "1", "--warmup", "0", "--only", "retrain"],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert [r["nproc"] for r in report["runs"]] == [1, 2] and report["meta"]["sizes"]["global_batch"] == 8
    for run in report["runs"]:
        assert set(run["items"]) == {"retrain"} and 0 <= run["other_cpu_share"] <= 1
        assert all(v["unit_ms"] > 0 and v["images_per_s"] > 0 for v in run["items"].values())
    assert report["runs"][0]["items"]["retrain"]["speedup"] == 1.0
