"""The command line a person sees: fast help, one metavar per option, honest memory errors,
progress with rates and ETAs, metrics a reader can tail."""
import json
import subprocess
import sys

import click
import pytest

from enas.cli import cli, memory_error_kind
from enas.runs.progress import LogBar, RunClock, duration

HELP_PROBE = """
import sys
from click.testing import CliRunner
from enas.cli import cli
for args in {commands!r}:
    result = CliRunner().invoke(cli, args + ["--help"])
    assert result.exit_code == 0, result.output
loaded = [m for m in ("torch", "numpy", "PIL", "shared_model") if m in sys.modules]
print(",".join(loaded))
"""


def test_help_does_not_import_torch():
    commands = [[]] + [[name] for name in cli.commands] + [["table", name] for name in cli.commands["table"].commands]
    proc = subprocess.run([sys.executable, "-c", HELP_PROBE.format(commands=commands)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""  # no torch, numpy, PIL or model code behind any --help


def test_import_enas_is_cheap_and_exposes_the_api():
    probe = "import sys, enas; print(sorted(enas.__all__)); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    names, torch_loaded = proc.stdout.strip().splitlines()
    assert "run_search" in names and "build_child" in names and torch_loaded == "False"


def _commands(group, prefix=""):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def test_shared_options_have_one_metavar_everywhere():
    seen = {}
    # export's and latency-table's --out name a file, not a run folder; --preset and --format list
    # their own choices.
    exempt = {("export", "--out"), ("table synthetic", "--out"), ("table import-nats", "--out"),
              ("latency-table", "--out")}
    ctx = click.Context(cli)
    for name, cmd in _commands(cli):
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.is_flag:
                continue
            flag = max(param.opts, key=len)
            if (name, flag) in exempt or flag in ("--format",):
                continue
            seen.setdefault(flag, {})[name] = param.make_metavar(ctx)
    differ = {flag: names for flag, names in seen.items() if len(set(names.values())) > 1}
    assert not differ
    for flag in ("--dataset", "--data-dir", "--config", "--out", "--resume", "--device", "--set"):
        assert len(seen[flag]) >= 2  # really shared


def test_out_of_memory_names_the_right_memory():
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                       "you tried to allocate 1099511627776 bytes.")
    gpu = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert memory_error_kind(cpu) == "memory (RAM)" and memory_error_kind(gpu) == "GPU memory"
    assert memory_error_kind(RuntimeError("shape mismatch")) is None


def test_log_bar_reports_rate_and_eta_every_n_seconds(caplog):
    now = [0.0]
    bar = LogBar(total=100, desc="epoch 1/3 train", every=10.0, clock=lambda: now[0])
    with caplog.at_level("INFO", logger="enas.runs.progress"):
        for _ in range(50):
            now[0] += 0.5  # 2 it/s
            bar.set_postfix(**{"loss": "1.234", "run ETA": "2m00s"})
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[-1] == "epoch 1/3 train: 40/100 (40%), 2 it/s, ETA 30s, loss 1.234, run ETA 2m00s"


def test_run_clock_and_durations():
    now = [0.0]
    clock = RunClock(epochs=10, clock=lambda: now[0])
    now[0] = 30.0
    assert clock.eta(0, 0.5) == pytest.approx(30.0 + 9 * 60.0)  # half of epoch 1 in 30 s
    now[0] = 60.0
    clock.end_epoch()
    assert clock.after_epoch(0) == pytest.approx(9 * 60.0)
    assert [duration(s) for s in (5, 75, 3725, 90000, None)] == ["5s", "1m15s", "1h02m", "1d01h", "?"]


def test_metrics_lines_are_on_disk_at_once(tmp_path):
    from enas.runs.runlog import RunLog

    log = RunLog(tmp_path, tensorboard=False)
    log.record(1, 1, "train", {"loss": 0.5})
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "epoch": 1, "phase": "train",
                                                                     "loss": 0.5}
    log.close()
