"""Regression tests of issue 15 point 2: every PIL mode decodes to what a viewer shows.

The fixtures are tiny image folders written with PIL here: 16-bit gray (``I;16``),
gray, colour, transparent, palette (with a transparent colour, which makes PIL
warn) and images of odd, non-square sizes.
"""
import logging
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from enas.data import imagefolder
from enas.data.datasets import load_dataset
from enas.data.prep import stratified_indices
from enas.errors import UserError


@pytest.fixture(autouse=True)
def _fresh_memo():
    imagefolder._FOLDER_MEMO.clear()
    yield
    imagefolder._FOLDER_MEMO.clear()


def _save(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _sixteen_bit(path, value, size=(6, 6)):
    _save(path, Image.fromarray(np.full(size[::-1], value, dtype=np.uint16)))  # mode I;16


def _with_test(root):
    """A test/ folder beside train/ (one gray image per class), so train/ is read whole."""
    for cls in ("a", "b"):
        _save(root / "test" / cls / "t.png", Image.new("L", (4, 4), 1))
    return root / "train"


def _gray_folder(root, per_class=3):
    for k, cls in enumerate(("a", "b")):
        for i in range(per_class):
            _sixteen_bit(root / cls / f"s{i}.png", 20000 + 10000 * k + 1000 * i)
        _save(root / cls / "l.png", Image.new("L", (6, 6), 40 + k))


def test_sixteen_bit_gray_is_scaled_not_clipped_and_stays_one_channel(tmp_path):
    _gray_folder(tmp_path)
    with Image.open(next(tmp_path.rglob("s0.png"))) as im:
        assert im.mode == "I;16"  # the fixture is what the trial had
    train = load_dataset("imagefolder", "train", str(tmp_path), image_size=6)
    test = load_dataset("imagefolder", "test", str(tmp_path), image_size=6)
    assert train.channels == 1 and test.channels == 1
    values = torch.cat([train.images, test.images]).flatten().float()
    assert (values == 255).float().mean() < 0.01  # the bug: 99.7 % white
    # 20000 / 65535 * 255 = 77.8 -> 78; 40 (the 8-bit L image) stays 40.
    assert set(torch.unique(values).tolist()) == {40.0, 41.0, 78.0, 82.0, 86.0, 117.0, 121.0, 125.0}
    assert "16/32-bit scaled to 8 bits" in train.summary and "1 channel" in train.summary


def test_every_mode_decodes_as_a_viewer_shows_it(tmp_path):
    red = (200, 10, 10)
    root, tmp_path = tmp_path, _with_test(tmp_path)
    _save(tmp_path / "a" / "rgb.png", Image.new("RGB", (4, 4), red))
    _save(tmp_path / "a" / "l.png", Image.new("L", (4, 4), 90))
    rgba = Image.new("RGBA", (4, 4), red + (255,))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent: white on a page
    _save(tmp_path / "a" / "rgba.png", rgba)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.info["transparency"] = bytes([255, 128] + [255] * 254)  # bytes transparency: PIL warns
    _save(tmp_path / "b" / "pal.png", pal)
    _save(tmp_path / "b" / "la.png", Image.new("LA", (4, 4), (0, 0)))  # transparent black -> white
    _save(tmp_path / "b" / "one.png", Image.new("1", (4, 4), 1))
    _sixteen_bit(tmp_path / "b" / "s.png", 65535, size=(4, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset("imagefolder", "train", str(root), image_size=4)
    assert not [w for w in caught if "PIL" in (w.filename or "") or "Palette" in str(w.message)]
    assert data.channels == 3  # mixed gray and colour: gray repeated to 3 channels
    pixel = {name: data.images[i, :, 1, 1].tolist() for i, name in
             enumerate(["l", "rgb", "rgba", "la", "one", "pal", "s"])}  # sorted file order per class
    assert pixel["rgb"] == list(red) and pixel["l"] == [90] * 3 and pixel["rgba"] == list(red)
    assert data.images[2, :, 0, 0].tolist() == [255, 255, 255]  # the transparent pixel
    assert pixel["la"] == [255] * 3 and pixel["one"] == [255] * 3 and pixel["s"] == [255] * 3
    pal_value = round(200 * 128 / 255 + 255 * (1 - 128 / 255))  # palette entry 1 at alpha 128 on white
    assert pixel["pal"] == [round(10 * 128 / 255 + 255 * 127 / 255), pal_value,
                            round(30 * 128 / 255 + 255 * 127 / 255)]
    assert "with transparency composited onto white" in data.summary
    assert "grayscale repeated to 3 channels" in data.summary


def test_channels_option_converts_both_ways(tmp_path):
    root, tmp_path = tmp_path, _with_test(tmp_path)
    _save(tmp_path / "a" / "x.png", Image.new("RGB", (4, 4), (255, 0, 0)))
    _save(tmp_path / "a" / "y.png", Image.new("RGB", (4, 4), (0, 255, 0)))
    _save(tmp_path / "b" / "x.png", Image.new("RGB", (4, 4), (0, 0, 255)))
    _save(tmp_path / "b" / "y.png", Image.new("RGB", (4, 4), (9, 9, 9)))
    gray = load_dataset("imagefolder", "train", str(root), image_size=4, channels=1)
    assert gray.channels == 1 and gray.images[:, 0, 0, 0].tolist() == [76, 150, 29, 9]  # ITU-R 601 luma
    digits = load_dataset("digits", "test", channels=3)
    assert digits.channels == 3 and torch.equal(digits.images[:, 0], digits.images[:, 2])
    assert digits.mean == load_dataset("digits", "train", channels=3).mean


def test_non_square_sizes_and_the_three_resize_modes(tmp_path):
    wide = np.zeros((4, 8, 3), dtype=np.uint8)
    wide[:, 2:6] = 200  # a bright 4x4 square in the middle of a 4x8 (h x w) image
    root, tmp_path = tmp_path, _with_test(tmp_path)
    for cls in ("a", "b"):
        for i in range(2):
            _save(tmp_path / cls / f"{i}.png", Image.fromarray(wide))
    got = {}
    for mode in ("stretch", "pad", "crop"):
        imagefolder._FOLDER_MEMO.clear()
        data = load_dataset("imagefolder", "train", str(root), image_size=[4, 4], resize=mode)
        got[mode] = data.images[0, 0]
        assert data.image_size == (4, 4)
    assert (got["crop"] == 200).all()  # the centre 4x4 is the bright square
    assert (got["pad"][0] == 0).all() and (got["pad"][-1] == 0).all()  # black bars above and below
    assert got["stretch"][:, 0].max() < 120 and got["stretch"][:, 1:3].min() > 100  # squeezed sideways
    tall = load_dataset("imagefolder", "train", str(root), image_size=[6, 3])
    assert tall.images.shape[2:] == (6, 3) and "4x8" not in tall.summary
    assert "of other sizes stretched to 6x3 (data.resize=stretch)" in tall.summary
    resized = load_dataset("digits", "test", image_size=[8, 12], resize="pad")
    assert resized.images.shape[2:] == (8, 12) and (resized.images[:, :, :, :2] == 0).all()
    with pytest.raises(UserError, match="resize mode"):
        load_dataset("digits", "test", resize="squash")


def test_one_summary_line_is_logged(tmp_path, caplog):
    _gray_folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="enas"):
        load_dataset("imagefolder", "train", str(tmp_path), image_size=6)
    lines = [r.getMessage() for r in caplog.records if "decoded" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "I;16" in lines[0]


def test_limit_is_a_stratified_reproducible_subset(tmp_path):
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    idx = stratified_indices(labels, 10)
    assert len(idx) == 10 and np.bincount(labels[idx]).tolist() == [5, 3, 2]
    assert np.array_equal(idx, stratified_indices(labels, 10)) and list(idx) == sorted(idx)
    assert np.bincount(labels[stratified_indices(labels, 3)]).tolist() == [1, 1, 1]
    digits = load_dataset("digits", "train", limit=300)
    assert len(digits) == 300 and np.bincount(digits.labels.numpy()).min() >= 28
    assert "stratified 300 of 1,500" in digits.summary
    assert len(load_dataset("digits", "test", limit=30)) == 297  # the test split is never cut
    _gray_folder(tmp_path, per_class=6)
    data = load_dataset("imagefolder", "train", str(tmp_path), image_size=6, limit=4)
    assert len(data) == 4 and data.labels.tolist() == [0, 0, 1, 1]
