"""Smoke test of the throughput harness (scripts/bench.py) at its tiny size.

Runs the script as a user would and checks the documented JSON keys; no
timing thresholds (the suite runs on loaded 2-core machines).
"""
import json
import math
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "scripts" / "bench.py"
STEPS = ("enas_step", "reward_eval", "retrain_step")


def finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_step(entry: dict) -> None:
    assert finite_positive(entry["images_per_s"])
    assert entry["batch"] == 4
    assert set(entry["step_ms"]) == {"median", "p10", "p90", "min", "max"}
    assert all(finite_positive(v) for v in entry["step_ms"].values())
    assert entry["step_ms"]["min"] <= entry["step_ms"]["median"] <= entry["step_ms"]["max"]
    assert finite_positive(entry["peak_rss_mib"])


def test_tiny_run_reports_every_documented_key():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--config", "tiny", "--device", "cpu", "--threads", "1"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    meta = report["meta"]
    for key in ("date", "device", "device_name", "torch", "threads", "channels_last", "amp", "repeats", "warmup"):
        assert key in meta
    assert meta["device"] == "cpu" and meta["threads"] == 1
    assert (meta["repeats"], meta["warmup"]) == (1, 0)
    res = report["results"]["tiny"]
    for key in STEPS:
        check_step(res[key])
    darts = res["darts_step"]
    if "skipped" not in darts:
        check_step(darts)
    enas = res["enas_step"]
    assert 0 <= enas["overhead_share"] < 1
    assert {"data", "child", "other", "presample_per_step"} <= set(enas["parts_ms"])
    assert enas["presample_ms"]["steps"] >= 1 and finite_positive(enas["parts_ms"]["presample_per_step"])
    assert finite_positive(enas["parts_ms"]["child"])
    assert finite_positive(res["reward_eval"]["reward_ms"]["median"])
    ctrl = res["controller"]
    for key in ("sample_ms", "decode_ms", "update_ms"):
        assert finite_positive(ctrl[key]["median"])
    assert ctrl["sample_batch"]["n"] == 512 and finite_positive(ctrl["sample_batch"]["per_arch_ms"])
    est = res["epoch_estimate"]
    assert est["train_steps"] == 45_000 // 4
    assert math.isclose(est["epoch_s"], est["train_s"] + est["controller_s"])
    assert all(finite_positive(v) for v in est.values())
    assert "images/s" in proc.stderr  # the human table


def test_only_selects_items_and_rejects_unknown_ones():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--config", "tiny", "--device", "cpu", "--threads", "1",
                           "--only", "retrain", "--channels-last", "off"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["meta"]["channels_last"] is False
    assert set(report["results"]["tiny"]) == {"sizes", "retrain_step"}
    check_step(report["results"]["tiny"]["retrain_step"])
    bad = subprocess.run([sys.executable, str(SCRIPT), "--config", "tiny", "--only", "x"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "unknown --only item" in bad.stderr


def test_trainer_mode_switch_is_skipped_only_when_every_module_agrees():
    """The speed-up of docs/performance.md (no full ``model.train()`` walk per step) keeps semantics."""
    import torch

    from enas.search.trainer import ChildTrainer
    from shared_model.spaces import make_space
    from shared_model.supernet import Supernet

    space = make_space("micro")
    model = Supernet(space.ops, space.num_nodes, 4, 3, 10, image_size=8, dropout=0.1)
    trainer = ChildTrainer(model, torch.optim.SGD(model.parameters(), lr=0.01), torch.device("cpu"))
    genotype = space.decode(space.random_actions(torch.Generator().manual_seed(0)))
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    trainer.accuracy(x, y, genotype)
    assert not any(m.training for m in model.modules())
    trainer.train_step(x, y, genotype)
    assert all(m.training for m in model.modules())
    model.dropout.eval()  # switched behind the trainer's back: the next step must notice
    trainer.train_step(x, y, genotype)
    assert model.dropout.training
    model.cells[1].train()
    trainer.accuracy(x, y, genotype)
    assert not any(m.training for m in model.modules())


def test_channels_last_auto_follows_the_measured_choice_per_device():
    import torch

    from enas.runtime import use_channels_last

    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # constructing a cuda device needs no GPU
    assert use_channels_last(cpu, "auto") is True
    assert use_channels_last(cuda, "auto") is True and use_channels_last(cuda, "auto", amp="bf16") is True
    assert use_channels_last(cuda, "auto", amp="off") is False
    assert use_channels_last(cpu, "off") is False and use_channels_last(cuda, "on", amp="off") is True


def test_ab_step_switches_off_one_change_and_restores_it():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import ab_step
    finally:
        sys.path.remove(str(REPO / "scripts"))
    import enas.search.darts as darts
    import shared_model.batch_norm as batch_norm
    import shared_model.child as child
    import shared_model.kernels as kernels
    import shared_model.native_bn as native_bn
    import shared_model.nb201 as nb201
    import shared_model.ops as ops
    import shared_model.supernet as supernet
    import torch
    from enas.flat_sgd import FlatSGD
    from shared_model.ops import make_op

    def state():
        return (batch_norm.FOLD_MIN_NUMEL, kernels._SPLIT_MIN_NUMEL, kernels._FLIPPED_EVERYWHERE,
                darts.weights_frozen, kernels.fast_kernels_enabled(), (supernet.takes_scale, nb201.takes_scale),
                ops.even_odd_pixels, native_bn.native_kernels(), child.takes_scale,
                kernels._native, (FlatSGD.flat_grad, FlatSGD.attach_grads, FlatSGD.covers))

    before = state()
    seen = {}
    for name, switch_off in ab_step.AGAINST.items():
        with switch_off():
            seen[name] = state()
        assert state() == before
    assert seen["reference"][4] is False
    assert seen["serial-bn"][0] > 1 << 60 and seen["plain-wide-wgrad"][1] > 1 << 60
    assert seen["flipped-everywhere"][2] is True and seen["darts-unfrozen"][3] is not before[3]
    assert not any(f(torch.nn.Identity()) or f(make_op("sep_conv_3x3", 4, 1)) for f in seen["unscaled-mixing"][5])
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    assert seen["strided-reduce"][6](x)[0].grad_fn.name() != before[6](x)[0].grad_fn.name()
    assert seen["no-native"][7] is None
    assert not seen["unfolded-drop-path"][8](make_op("sep_conv_3x3", 4, 1))
    assert seen["onednn-dw-wgrad"][9]() is None
    assert all(f(None) in (None, False) for f in seen["per-tensor-sgd"][10][:2]) and not seen["per-tensor-sgd"][10][2](None, [])
    if before[7] is None:  # no compiled kernels here: the switch changes nothing
        del seen["no-native"]
    # Every entry changes exactly one thing.
    assert all(sum(a != b for a, b in zip(s, before)) == 1 for s in seen.values())

    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "ab_step.py"), "--rows", "darts1", "--config", "tiny",
                           "--rounds", "1", "--threads", "1", "--against", "darts-unfrozen"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["meta"]["against"] == "darts-unfrozen"
    assert finite_positive(report["rows"]["darts1"]["fast_ms"])
