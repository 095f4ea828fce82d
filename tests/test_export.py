"""`enas export`: ONNX and TorchScript files that match PyTorch and run without enas."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from enas.cli import cli
from enas.retrain.trained import input_shape, load_train_checkpoint, network_from_checkpoint

TINY = ["--preset", "quick", "--channels", "4", "--layers", "3", "--epochs", "1", "--batch-size", "128",
        "--set", "run.threads=1", "--set", "run.channels_last=off", "--set", "model.drop_path_prob=0.2"]

# Runs in a fresh interpreter with the project's packages blocked: loading must not need them.
STANDALONE = """
import sys
for name in ("enas", "shared_model", "controller"):
    sys.modules[name] = None  # any import of them now raises ImportError
import numpy as np, torch, onnxruntime
x = np.load("x.npy")
onnx_out = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
ts_out = torch.jit.load("model.pt")(torch.from_numpy(x)).detach().numpy()
np.save("onnx_out.npy", onnx_out)
np.save("ts_out.npy", ts_out)
"""


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "run"
    result = invoke("train", "DARTS_V2", *TINY, "--out", folder)
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def reference(run):
    state, _ = load_train_checkpoint(run)
    model, _, _, info = network_from_checkpoint(state)
    assert not hasattr(model, "auxiliary_head")
    model.eval()
    x = torch.randn(5, *input_shape(info), generator=torch.Generator().manual_seed(3))  # (5, 1, 8, 8)
    with torch.no_grad():
        logits, _ = model(x)
    return x, logits


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    onnx_result = invoke("export", run / "checkpoints" / "last.pt", "--format", "onnx", "--out", out / "model.onnx")
    assert onnx_result.exit_code == 0, onnx_result.output
    ts_result = invoke("export", run, "--format", "torchscript", "--out", out / "model.pt", "--batch-size", "2")
    assert ts_result.exit_code == 0, ts_result.output
    return out, onnx_result.output, ts_result.output


def test_onnx_matches_pytorch(exported, reference):
    import onnx
    import onnxruntime as ort

    out, message, _ = exported
    assert "verified with onnxruntime" in message and "max abs diff" in message
    proto = onnx.load(str(out / "model.onnx"))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"]) == [str(d) for d in range(10)] and len(json.loads(meta["mean"])) == 1
    x, logits = reference
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]  # batch 5: the batch dimension is dynamic
    assert got.shape == (5, 10)
    np.testing.assert_allclose(got, logits.numpy(), rtol=1e-4, atol=1e-4)
    assert sorted(os.listdir(out)) == ["model.onnx", "model.pt"]  # no temporary or side files left


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_loads_and_matches(exported, reference):
    out, _, message = exported
    assert "verified with torch.jit.load" in message
    extra = {"enas.json": ""}
    loaded = torch.jit.load(str(out / "model.pt"), _extra_files=extra)
    assert json.loads(extra["enas.json"])["genotype"]["normal_concat"] == [2, 3, 4, 5]
    x, logits = reference
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), logits, rtol=1e-5, atol=1e-5)


def test_exported_files_run_without_enas(exported, reference, tmp_path):
    out, _, _ = exported
    x, logits = reference
    for name in ("model.onnx", "model.pt"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    np.save(tmp_path / "x.npy", x.numpy())
    proc = subprocess.run([sys.executable, "-c", STANDALONE], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("onnx_out.npy", "ts_out.npy"):
        np.testing.assert_allclose(np.load(tmp_path / name), logits.numpy(), rtol=1e-4, atol=1e-4)


def test_falls_back_to_the_torchscript_based_onnx_exporter(run, tmp_path, monkeypatch):
    original = torch.onnx.export

    def no_dynamo(*args, **kwargs):
        if kwargs.get("dynamo"):
            raise RuntimeError("simulated dynamo failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    result = invoke("export", run, "--format", "onnx", "--out", tmp_path / "legacy.onnx")
    assert result.exit_code == 0, result.output
    assert "torchscript-based exporter" in result.stdout and "verified with onnxruntime" in result.stdout
    assert "simulated dynamo failure" in result.stderr  # the fallback is announced, not silent


def test_default_output_path_is_the_run_folder(run):
    result = invoke("export", run, "--format", "torchscript")
    assert result.exit_code == 0, result.output
    assert (run / "model.torchscript.pt").is_file()


def test_missing_onnx_names_the_extra(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    result = invoke("-q", "export", run, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: ONNX export needs the onnx package: pip install 'enas[export]'"]
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("args, expected", [
    (["--format", "onnx"], "checkpoint not found"),
    (["--format", "torchscript", "--batch-size", "0"], "--batch-size"),
    (["--format", "tflite"], "unknown --format"),
])
def test_export_errors(tmp_path, args, expected):
    result = invoke("-q", "export", tmp_path / "missing.pt", *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


def test_output_path_that_is_a_folder_is_refused(run, tmp_path):
    result = invoke("-q", "export", run, "--format", "torchscript", "--out", tmp_path)
    assert result.exit_code == 2 and "folder" in result.stderr
    assert Path(tmp_path).is_dir()
