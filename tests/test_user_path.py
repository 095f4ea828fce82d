"""Issue 15 as a user meets it: search on an image folder, retrain what was searched,
evaluate by class name, files that are never clobbered, progress off a terminal,
TensorBoard steps. Tiny: 8 px images, C 2, a handful of steps.
"""
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from cli_helpers import error_line, run
from enas.data import imagefolder

TINY = ["--preset", "quick", "--epochs", "2", "--batch-size", "4", "--set", "model.channels=2",
        "--set", "controller.updates_per_epoch=3", "--set", "derive.samples=2", "--set", "run.checkpoint_every_steps=1000"]
TRAIN = ["--epochs", "1", "--batch-size", "4", "--channels", "2", "--layers", "3"]


def _folder(root, classes=("cat", "dog", "owl"), per_class=6):
    rng = np.random.default_rng(0)
    for k, cls in enumerate(classes):
        for split, n in (("train", per_class), ("test", 2)):
            for i in range(n):
                arr = rng.integers(0, 60, (9, 7)).astype(np.uint16) * 100 + 20000 * k  # 16-bit, odd sizes
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    imagefolder._FOLDER_MEMO.clear()
    base = tmp_path_factory.mktemp("user")
    data = _folder(base / "images")
    out = base / "search"
    result = run("search", *TINY, "--dataset", "imagefolder", "--data-dir", data, "--set", "data.image_size=[8, 6]",
                 "--set", "run.progress_seconds=0.001", "--out", out)
    assert result.exit_code == 0, result.output
    return base, data, out, result


def test_search_writes_data_json_and_short_progress_lines(searched):
    _, data, out, result = searched
    info = json.loads((out / "data.json").read_text())
    assert info["classes"] == ["cat", "dog", "owl"] and info["in_channels"] == 1 and info["image_size"] == [8, 6]
    assert "I;16" in info["decode"]
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ") and ": loss" in line]
    assert len(epoch_lines) == 2 and all(len(line) < 160 for line in epoch_lines)
    assert "reward" in epoch_lines[0] and "entropy" in epoch_lines[0] and "run ETA" in epoch_lines[0]
    progress = [line for line in result.stderr.splitlines() if "it/s" in line]
    assert progress and all("ETA" in line for line in progress)  # off a terminal (CliRunner is not a TTY)


def test_train_on_a_search_run_uses_its_data_and_preset(searched, tmp_path):
    _, data, out, _ = searched
    result = run("train", out, *TRAIN, "--out", tmp_path / "t")
    assert result.exit_code == 0, result.output
    assert f"the data of the search run {out}: imagefolder in {data}" in result.stderr
    assert "preset quick (the search run used --preset quick)" in result.stderr
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["data"]["dataset"] == "imagefolder" and cfg["data"]["image_size"] == [8, 6]
    assert cfg["preset"] == "quick"
    info = json.loads((tmp_path / "t" / "data.json").read_text())
    assert info["classes"] == ["cat", "dog", "owl"] and info["in_channels"] == 1
    shown = json.loads(run("show", tmp_path / "t", "--json").stdout)
    assert (shown["channels"], shown["layers"], shown["num_classes"], shown["in_channels"]) == (2, 3, 3, 1)
    assert shown["image_size"] == [8, 6] and shown["sizes_from"] == "run"
    searched_show = json.loads(run("show", out, "--json").stdout)
    assert (searched_show["preset"], searched_show["num_classes"], searched_show["channels"]) == ("quick", 3, 8)
    # Flags still override: other data, the search's data is not carried.
    other = run("train", out, *TRAIN, "--dataset", "digits", "--out", tmp_path / "d")
    assert other.exit_code == 0 and "data as given" in other.stderr


def test_train_refuses_data_that_changed_since_the_search(searched, tmp_path):
    base, data, out, _ = searched
    moved = tmp_path / "images"
    shutil.copytree(data, moved)
    (moved / "train" / "owl").rename(moved / "train" / "bird")
    (moved / "test" / "owl").rename(moved / "test" / "bird")
    copy = tmp_path / "search"
    shutil.copytree(out, copy)
    for name, section in (("config.json", "data"), ("data.json", None)):  # the search's folder, changed
        saved = json.loads((copy / name).read_text())
        (saved[section] if section else saved)["data_dir"] = str(moved)
        (copy / name).write_text(json.dumps(saved))
    assert "data changed since the search" in error_line(run("-q", "train", copy, *TRAIN, "--out", tmp_path / "x"))


def test_evaluate_matches_classes_by_name(searched, tmp_path):
    base, data, out, _ = searched
    trained = tmp_path / "t"
    assert run("train", out, *TRAIN, "--out", trained).exit_code == 0
    ok = json.loads(run("evaluate", trained, "--json", "--repeats", "1", "--latency-batch", "1").stdout)
    renamed = tmp_path / "renamed"
    shutil.copytree(data, renamed)
    (renamed / "test" / "owl").rename(renamed / "test" / "bird")
    (renamed / "train" / "owl").rename(renamed / "train" / "bird")
    line = error_line(run("-q", "evaluate", trained, "--data-dir", renamed, "--repeats", "1"))
    assert "do not match the checkpoint's" in line and "'bird'" in line and "'owl'" in line
    subset = tmp_path / "subset"  # a test folder with some of the classes is scored by name
    shutil.copytree(data, subset)
    shutil.rmtree(subset / "test" / "cat")
    shutil.rmtree(subset / "train" / "cat")
    part = json.loads(run("evaluate", trained, "--data-dir", subset, "--json", "--repeats", "1",
                          "--latency-batch", "1").stdout)
    assert part["test_images"] == 4 and ok["test_images"] == 6
    bare = json.loads(run("evaluate", trained, "--data-dir", data / "test", "--json", "--repeats", "1",
                          "--latency-batch", "1").stdout)  # bare class folders: every image is scored
    assert bare["test_images"] == 6 and bare["top1"] == ok["top1"]


def test_derive_says_it_replaces_genotype_json(searched, tmp_path):
    _, _, out, _ = searched
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    result = run("derive", copy, "--samples", "2")
    assert result.exit_code == 0, result.output
    assert re.search(r"replaced the previous genotype.json \((the same|a different) architecture\)", result.stdout)


def test_controller_updates_have_their_own_tensorboard_steps(searched):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, out, _ = searched
    ctrl = EventAccumulator(str(out / "tb" / "controller"))
    ctrl.Reload()
    steps = [e.step for e in ctrl.Scalars("controller/reward")]
    assert steps == [1, 2, 3, 4, 5, 6]  # 2 epochs x 3 updates, each its own point
    main = EventAccumulator(str(out / "tb"))
    main.Reload()
    assert not [t for t in main.Tags()["scalars"] if t.startswith("controller/")]


def test_random_search_logs_no_controller_tags(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "random"
    assert run("search", *TINY, "--strategy", "random", "--set", "derive.top_k=1", "--out", out).exit_code == 0
    tags = []
    for folder in [out / "tb", *(p for p in (out / "tb").iterdir() if p.is_dir())]:
        acc = EventAccumulator(str(folder))
        acc.Reload()
        tags += acc.Tags()["scalars"]
    assert tags and not [t for t in tags if t.startswith("controller/")] and "score/reward" in tags
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows} >= {"train", "score", "epoch"} and "controller" not in {r["phase"] for r in rows}


def test_force_deletes_only_what_the_run_wrote(searched, tmp_path):
    look_alike = tmp_path / "mine"
    (look_alike / "tb").mkdir(parents=True)
    (look_alike / "cells").mkdir()
    (look_alike / "config.json").write_text('{"my": "settings"}')
    line = error_line(run("-q", "search", *TINY, "--out", look_alike, "--force"))
    assert "--force only replaces runs enas wrote" in line
    assert (look_alike / "config.json").read_text() == '{"my": "settings"}' and (look_alike / "cells").is_dir()
    _, _, out, _ = searched
    real = tmp_path / "real"
    shutil.copytree(out, real)
    (real / "notes.txt").write_text("keep me")
    (real / "cells").mkdir()
    (real / "cells" / "normal.png").write_bytes(b"png")
    (real / "tb" / "mine.txt").write_text("keep")
    assert run("search", *TINY, "--out", real, "--force").exit_code == 0
    assert (real / "notes.txt").read_text() == "keep me" and (real / "cells" / "normal.png").exists()
    assert (real / "tb" / "mine.txt").exists() and (real / "genotype.json").exists()
    assert len(list((real / "tb").glob("events.out.tfevents.*"))) == 1  # the old run's events are gone


def test_export_never_overwrites_a_foreign_file(searched, tmp_path):
    _, _, out, _ = searched
    trained = tmp_path / "t"
    assert run("train", out, *TRAIN, "--out", trained).exit_code == 0
    foreign = tmp_path / "model.pt"
    foreign.write_text("my own model")
    line = error_line(run("-q", "export", trained, "--format", "torchscript", "--out", foreign))
    assert "not a file enas exported; use --force" in line and foreign.read_text() == "my own model"
    again = run("export", trained, "--format", "torchscript", "--out", foreign, "--force")
    assert again.exit_code == 0 and again.stdout.startswith("replaced")
    assert run("export", trained, "--format", "torchscript", "--out", foreign).exit_code == 0  # ours now
