"""Hostile input: bad datasets and image folders are refused cleanly.

The contract (README "Genotypes", "Config"; enas/cli.py): library calls either
succeed or raise their documented error (:class:`GenotypeError`,
:class:`UserError`); through the CLI a refusal is exit status 2 with exactly
one ``error:`` line, never a traceback or exit 1, and it leaves no partial
outputs. Property-based (hypothesis) where the check is cheap; the few cases
that actually train are a fixed list. Shared parts: ``hostile_helpers.py``.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_helpers import assert_refused, invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from enas.data.datasets import load_dataset
from enas.errors import UserError
from shared_model.genotype import Genotype

# -------------------------------------------------------------------------------- datasets

def _png_bytes(size=(4, 4), mode="RGB", fmt="PNG", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "F":
        im = Image.fromarray(rng.random((h, w), dtype=np.float32))
    elif mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        shape = {"L": (h, w), "1": (h, w), "LA": (h, w, 2), "RGBA": (h, w, 4)}.get(mode, (h, w, 3))
        im = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8))
        if im.mode != mode:
            im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


GOOD_KINDS = [("png", (4, 4), "RGB"), ("png", (5, 3), "RGB"), ("png", (1, 1), "L"), ("png", (3, 7), "L"),
              ("png", (6, 6), "RGBA"), ("png", (4, 2), "LA"), ("png", (4, 4), "P"), ("png", (4, 4), "1"),
              ("png", (4, 4), "I;16"), ("tiff", (3, 3), "F"), ("jpeg", (8, 5), "RGB"), ("jpeg", (4, 4), "CMYK"),
              ("bmp", (2, 9), "RGB")]
BAD_CONTENTS = [b"", b"not an image", b"\x89PNG\r\n\x1a\n", None]  # None: a truncated real image
EXT = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg", "bmp": ".bmp"}
NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\.")
CLASS_NAMES = st.text(NAME_CHARS, min_size=1, max_size=6)


@st.composite
def image_files(draw):
    """``(file name, bytes)``: mostly decodable images of many modes and odd sizes, some broken files."""
    if draw(st.integers(0, 5)) == 0:
        bad = draw(st.sampled_from(BAD_CONTENTS))
        if bad is None:
            bad = _png_bytes((6, 6))[:40]
        return draw(st.sampled_from([".png", ".jpg", ".jpeg", ".PNG"])), bad
    fmt, size, mode = draw(st.sampled_from(GOOD_KINDS))
    return EXT[fmt], _png_bytes(size, mode, fmt.upper(), seed=draw(st.integers(0, 3)))


@st.composite
def image_folders(draw):
    """A folder layout: classes of images (maybe empty), stray files, non-image files."""
    classes = draw(st.dictionaries(CLASS_NAMES, st.lists(image_files(), max_size=4), max_size=4))
    stray = draw(st.lists(image_files(), max_size=2))
    other = draw(st.lists(st.sampled_from(["notes.txt", "README", ".DS_Store", "x.gif"]), max_size=2))
    return classes, stray, other


def _write_folder(root: Path, layout) -> None:
    classes, stray, other = layout
    for i, (ext, content) in enumerate(stray):
        (root / f"stray{i}{ext}").write_bytes(content)
    for c, files in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i, (ext, content) in enumerate(files):
            (root / c / f"img{i}{ext}").write_bytes(content)
        for name in other:
            (root / c / name).write_bytes(b"\x00junk")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_folders(), st.integers(1, 9))
def test_any_image_folder_loads_or_raises_user_error(layout, size):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_folder(root, layout)
        try:
            train = load_dataset("imagefolder", "train", str(root), image_size=size)
            test = load_dataset("imagefolder", "test", str(root), image_size=size)
        except UserError as exc:
            assert "\n" not in str(exc)
            return
    for split in (train, test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] in ((1, size, size), (3, size, size))
        assert split.images.shape[1] == train.images.shape[1]
        assert 0 <= int(split.labels.min()) and int(split.labels.max()) < train.num_classes
    assert len(train) >= 2 and len(test) >= 1
    assert all(math.isfinite(v) and v > 0 for v in train.std)
    assert train.classes == sorted(c for c in layout[0] if not c.startswith("."))


TINY_SEARCH = ["--preset", "quick", "--epochs", "1", "--batch-size", "2", "--set", "model.channels=2",
               "--set", "model.layers=3", "--set", "controller.updates_per_epoch=1",
               "--set", "controller.samples_per_update=1", "--set", "derive.samples=1",
               "--set", "data.image_size=8", "--set", "run.threads=1"]
TINY_TRAIN = ["DARTS_V2", "--preset", "quick", "--epochs", "1", "--batch-size", "2", "--channels", "2",
              "--layers", "3", "--set", "data.image_size=8", "--set", "run.threads=1"]


def _img(path: Path, size=(4, 4), mode="RGB", fmt="PNG", seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bytes(size, mode, fmt, seed))


def _two_classes(root: Path, per_class: int = 2) -> None:
    for c in ("ants", "bees"):
        for i in range(per_class):
            _img(root / c / f"{i}.png", seed=i)


def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG header claiming 10^10 pixels (beyond PIL's decompression-bomb limit), no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _unreadable(root: Path) -> None:
    _two_classes(root, 3)
    os.chmod(root / "bees" / "1.png", 0)


BAD_FOLDERS = {
    "empty folder": lambda r: None,
    "files but no class folders": lambda r: (_img(r / "a.png"), _img(r / "b.png")),
    "single class": lambda r: [_img(r / "only" / f"{i}.png", seed=i) for i in range(4)],
    "empty class folder": lambda r: (_two_classes(r, 3), (r / "wasps").mkdir()),
    "corrupt png": lambda r: (_two_classes(r, 3), (r / "bees" / "x.png").write_bytes(os.urandom(64))),
    "corrupt jpg": lambda r: (_two_classes(r, 3), (r / "ants" / "x.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(61))),
    "zero-byte image": lambda r: (_two_classes(r, 3), (r / "bees" / "zero.png").write_bytes(b"")),
    "truncated image": lambda r: (_two_classes(r, 3), (r / "bees" / "t.png").write_bytes(_png_bytes((9, 9))[:60])),
    "only non-image files": lambda r: [(r / c).mkdir() or (r / c / "x.txt").write_text("x") for c in "ab"],
    "too few images to hold out a test split": lambda r: _two_classes(r, 1),
    "unreadable file": _unreadable,
    "decompression bomb": lambda r: (_two_classes(r, 3), (r / "ants" / "bomb.png").write_bytes(_bomb_png())),
    "huge header, no data": lambda r: (_two_classes(r, 3), (r / "ants" / "big.png").write_bytes(_bomb_png(9000, 9000))),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
@pytest.mark.parametrize("command", ["search", "train"])
def test_bad_image_folders_are_refused_without_outputs(tmp_path, case, command):
    if case == "unreadable file" and os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    data = tmp_path / "data"
    data.mkdir()
    BAD_FOLDERS[case](data)
    out = tmp_path / "run"
    args = TINY_SEARCH if command == "search" else TINY_TRAIN
    assert_refused(invoke(command, *args, "--dataset", "imagefolder", "--data-dir", data, "--out", out))
    for name in ("genotype.json", "result.json", "derive.json", "config.json", "checkpoints", "metrics.jsonl"):
        assert not (out / name).exists(), name
    # Nothing there blocks a second attempt with the same --out.
    assert_refused(invoke(command, *args, "--dataset", "imagefolder", "--data-dir", data, "--out", out))


@pytest.mark.parametrize("command", ["search", "train"])
def test_missing_or_file_data_dir_is_refused(tmp_path, command):
    args = TINY_SEARCH if command == "search" else TINY_TRAIN
    (tmp_path / "file").write_text("")
    for data_dir in (tmp_path / "missing", tmp_path / "file"):
        assert_refused(invoke(command, *args, "--dataset", "imagefolder", "--data-dir", data_dir,
                              "--out", tmp_path / "run"), "data dir")
    assert_refused(invoke(command, *args, "--dataset", "imagefolder", "--out", tmp_path / "run"), "data dir")


def _mixed_folder(root: Path) -> None:
    """Two classes of grayscale and RGB images of odd sizes (1x1 to 9x2), five per class."""
    kinds = [((5, 3), "RGB", "PNG"), ((1, 1), "L", "PNG"), ((9, 2), "RGBA", "PNG"), ((3, 3), "P", "PNG"),
             ((4, 6), "RGB", "JPEG")]
    for c in ("cats", "dogs"):
        for i, (size, mode, fmt) in enumerate(kinds):
            _img(root / c / f"{i}.{'jpg' if fmt == 'JPEG' else 'png'}", size, mode, fmt, seed=i + len(c))


@pytest.mark.parametrize("command", ["search", "train"])
def test_mixed_odd_image_folder_trains(tmp_path, command):
    data = tmp_path / "data"
    _mixed_folder(data)
    out = tmp_path / "run"
    args = TINY_SEARCH if command == "search" else TINY_TRAIN
    result = invoke(command, *args, "--dataset", "imagefolder", "--data-dir", data, "--out", out)
    assert result.exit_code == 0, result.output
    if command == "search":
        assert Genotype.from_dict(json.loads((out / "genotype.json").read_text()))
    else:
        outcome = json.loads((out / "result.json").read_text())
        assert outcome["num_classes"] == 2 and outcome["input_shape"] == [3, 8, 8]
