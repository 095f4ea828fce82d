"""Dataset sources of enas.data.datasets: real loads where the files exist, every user error, splits."""
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from enas.data import datasets as D
from enas.data import imagefolder, sources as data_sources
from enas.data.datasets import ImageData, load_dataset, search_split
from enas.errors import UserError

from conftest import CIFAR10_DIR

CIFAR_DIR = str(CIFAR10_DIR)
needs_cifar = pytest.mark.skipif(not os.path.isdir(os.path.join(CIFAR_DIR, "cifar-10-batches-py")),
                                 reason="CIFAR-10 files not present")
needs_fmnist = pytest.mark.skipif(data_sources._fmnist_folder(Path(D.DEBIAN_FASHION_MNIST)) is None,
                                  reason="Debian fashion-mnist files not present")


def _png(path: Path, value, size=(8, 8), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def _folder(root: Path, classes=("ants", "bees"), per_class=3, mode="RGB", size=(8, 8)):
    for k, c in enumerate(classes):
        for i in range(per_class):
            value = (10 * k + i + 1,) * 3 if mode == "RGB" else 10 * k + i + 1
            _png(root / c / f"{i}.png", value, size, mode)


# ----------------------------------------------------------------------------- sources

def test_digits_train_test_split_and_stats():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1500, 1, 8, 8) and test.images.shape == (297, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert int(train.images.max()) == 255 and train.classes == [str(d) for d in range(10)]
    assert test.mean == train.mean == D.channel_stats(train.images)[0]
    from sklearn.datasets import load_digits
    assert torch.equal(test.labels, torch.from_numpy(load_digits().target[1500:]).long())


def test_image_size_resizes_any_dataset():
    data = load_dataset("digits", "test", image_size=16)
    assert data.images.shape == (297, 1, 16, 16) and data.images.dtype == torch.uint8


def test_channel_stats_match_numpy():
    x = torch.randint(0, 256, (7, 3, 5, 4), dtype=torch.uint8)
    mean, std = D.channel_stats(x, chunk=3)
    ref = x.numpy().astype(np.float64) / 255
    assert np.allclose(mean, ref.mean(axis=(0, 2, 3))) and np.allclose(std, ref.std(axis=(0, 2, 3)))


@pytest.mark.slow
@needs_fmnist
def test_fashion_mnist_debian_files_and_torchvision_layout(tmp_path):
    # Without a data dir the Debian location comes before the (empty, offline) cache.
    test = load_dataset("fashion_mnist", "test", cache_dir=str(tmp_path / "cache"), download=False)
    assert test.images.shape == (10000, 1, 28, 28) and len(test.classes) == 10
    assert abs(test.mean[0] - 0.286) < 0.01  # statistics of the 60k training images
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in Path(D.DEBIAN_FASHION_MNIST).iterdir():
        (raw / f.name).symlink_to(f)
    again = load_dataset("fashion_mnist", "test", data_dir=str(tmp_path))
    assert torch.equal(again.labels, test.labels)


def _write_idx(folder: Path, n=6, gz=True, bad_magic=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        for kind, arr in (("images-idx3", imgs), ("labels-idx1", labels)):
            magic = 0x0801 + arr.ndim - 1 + (0x100 if bad_magic else 0)
            blob = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
            name = folder / f"{split}-{kind}-ubyte"
            if gz:
                with gzip.open(str(name) + ".gz", "wb") as f:
                    f.write(blob)
            else:
                name.write_bytes(blob)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_parser(tmp_path, gz):
    _write_idx(tmp_path, n=6, gz=gz)
    train = load_dataset("fashion_mnist", "train", data_dir=str(tmp_path))
    assert train.images.shape == (6, 1, 28, 28) and train.labels.tolist() == list(range(6))
    assert train.classes[0] == "T-shirt/top"


def test_fashion_mnist_bad_files(tmp_path):
    with pytest.raises(UserError, match="train-images-idx3-ubyte"):
        load_dataset("fashion_mnist", "train", data_dir=str(tmp_path))
    _write_idx(tmp_path, bad_magic=True)
    with pytest.raises(UserError, match="not a valid IDX file"):
        load_dataset("fashion_mnist", "train", data_dir=str(tmp_path))


@pytest.mark.slow
@needs_cifar
def test_cifar10_loads_from_shared_dir():
    test = load_dataset("cifar10", "test", data_dir=CIFAR_DIR)
    assert test.images.shape == (10000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert test.classes[0] == "airplane" and test.mean == D.CIFAR10_MEAN
    # The extracted folder itself is accepted as the data dir too.
    inner = load_dataset("cifar10", "test", data_dir=os.path.join(CIFAR_DIR, "cifar-10-batches-py"))
    assert torch.equal(inner.labels[:50], test.labels[:50])


def test_cifar_bad_dirs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("cifar10", "train", data_dir=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no cifar-10-batches-py/"):
        load_dataset("cifar10", "train", data_dir=str(tmp_path))
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(UserError, match="missing or corrupt"):
        load_dataset("cifar10", "train", data_dir=str(tmp_path))


def test_download_failure_and_download_off(tmp_path, monkeypatch):
    import torchvision.datasets
    from urllib.error import URLError

    class Offline:
        base_folder = "cifar-100-python"

        def __init__(self, root, train=True, download=False):
            raise URLError("[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Offline)
    with pytest.raises(UserError, match="could not download cifar100") as err:
        load_dataset("cifar100", "train", cache_dir=str(tmp_path))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="downloading is off"):
        load_dataset("cifar10", "train", cache_dir=str(tmp_path), download=False)


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ENAS_DATA_CACHE", str(tmp_path))
    assert D.default_cache_dir() == tmp_path
    monkeypatch.delenv("ENAS_DATA_CACHE")
    assert D.default_cache_dir() == Path.home() / ".cache" / "enas" / "data"


def test_names_splits_and_info():
    with pytest.raises(UserError, match="known datasets: cifar10, cifar100"):
        load_dataset("mnist", "train")
    with pytest.raises(UserError, match="unknown split"):
        load_dataset("digits", "valid")
    with pytest.raises(UserError, match="needs a data dir"):
        load_dataset("imagefolder", "train")
    assert D.dataset_info("Fashion-MNIST").channels == 1
    assert D.dataset_info("cifar10").image_size == 32
    assert D.dataset_info("imagefolder").channels is None
    with pytest.raises(ValueError):
        ImageData(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), ["a"], (0.5,), (0.2,))


# ----------------------------------------------------------------------------- imagefolder

def test_imagefolder_train_test_mixed_modes_and_sizes(tmp_path):
    _folder(tmp_path / "train")
    _folder(tmp_path / "test", per_class=1)
    _png(tmp_path / "train" / "bees" / "odd.png", (200, 100, 50), size=(13, 7))  # non-square source
    _png(tmp_path / "train" / "ants" / "gray.png", 77, mode="L")
    train = load_dataset("imagefolder", "train", data_dir=str(tmp_path))
    assert train.images.shape == (8, 3, 32, 32) and train.classes == ["ants", "bees"]
    assert train.labels.tolist() == [0] * 4 + [1] * 4
    assert (train.images[3] == 77).all()  # 'gray.png' sorts last among ants: L -> RGB replicates
    assert train.images[7].view(3, -1)[:, 0].tolist() == [200, 100, 50]  # 'odd.png'
    test = load_dataset("imagefolder", "test", data_dir=str(tmp_path), image_size=12)
    assert test.images.shape == (2, 3, 12, 12) and test.mean == load_dataset(
        "imagefolder", "train", data_dir=str(tmp_path), image_size=12).mean


def test_imagefolder_all_grayscale_and_val_folder(tmp_path):
    _folder(tmp_path / "train", mode="L")
    _folder(tmp_path / "val", per_class=1, mode="L")
    test = load_dataset("imagefolder", "test", data_dir=str(tmp_path), image_size=8)
    assert test.images.shape == (2, 1, 8, 8) and test.images[1, 0, 0, 0] == 11


def test_imagefolder_holdout_is_deterministic_and_disjoint(tmp_path):
    _folder(tmp_path, per_class=5)
    train = load_dataset("imagefolder", "train", data_dir=str(tmp_path), image_size=4)
    test = load_dataset("imagefolder", "test", data_dir=str(tmp_path), image_size=4)
    assert len(train) == 8 and len(test) == 2 and test.labels.tolist() == [0, 1]
    values = sorted(train.images[:, 0, 0, 0].tolist() + test.images[:, 0, 0, 0].tolist())
    assert values == [1, 2, 3, 4, 5, 11, 12, 13, 14, 15]
    imagefolder._FOLDER_MEMO.clear()
    again = load_dataset("imagefolder", "test", data_dir=str(tmp_path), image_size=4)
    assert torch.equal(again.images, test.images)


@pytest.mark.parametrize("setup, message", [
    (lambda r: _png(r / "loose.png", (1, 2, 3)), "no class folders"),
    (lambda r: [(r / c).mkdir() for c in ("a", "b")], "no images"),
    (lambda r: (_folder(r), (r / "wasps").mkdir()), "without images in .*: wasps"),
    (lambda r: _folder(r, classes=("only",)), "at least 2 classes"),
    (lambda r: (_folder(r), (r / "bees" / "broken.png").write_bytes(b"not a png")), "broken.png"),
    (lambda r: (_folder(r / "train"), _folder(r / "test", classes=("ants", "wasps"))),
     r"differ \(only in train: \['bees'\]; only in test: \['wasps'\]\)"),
    (lambda r: _folder(r, per_class=1), "too few images"),
])
def test_imagefolder_errors(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(UserError, match=message):
        load_dataset("imagefolder", "train", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------- search split

def _fake(n, c=1):
    return ImageData(torch.zeros(n, c, 1, 1, dtype=torch.uint8), torch.arange(n), ["a", "b"],
                     (0.5,) * c, (0.25,) * c)


def test_search_split_cifar10_official_last_5000():
    train, valid = search_split(_fake(50000, 3), "cifar10")
    assert torch.equal(train.labels, torch.arange(45000))
    assert torch.equal(valid.labels, torch.arange(45000, 50000))


def test_search_split_seeded_fraction():
    torch.manual_seed(123)  # the split must not depend on the global RNG
    a_train, a_valid = search_split(_fake(100), "digits", valid_fraction=0.1)
    torch.manual_seed(7)
    b_train, b_valid = search_split(_fake(100), "digits", valid_fraction=0.1)
    assert len(a_train) == 90 and len(a_valid) == 10 and torch.equal(a_valid.labels, b_valid.labels)
    assert sorted(a_train.labels.tolist() + a_valid.labels.tolist()) == list(range(100))
    assert a_valid.labels.tolist() != list(range(90, 100))  # a permutation, not the tail
    c_train, _ = search_split(_fake(100), "custom", valid_fraction=0.1)  # any name: generic rule
    assert torch.equal(c_train.labels, a_train.labels)
    with pytest.raises(UserError, match="non-empty"):
        search_split(_fake(1), "digits")
    with pytest.raises(UserError, match="between 0 and 1"):
        search_split(_fake(10), "digits", valid_fraction=1.5)


def test_ordered_split_keeps_the_stored_order():
    data = load_dataset("digits", "train")
    train, valid = search_split(data, "custom", 0.5, ordered=True)
    assert len(train) == 750 and len(valid) == 750
    assert torch.equal(train.images, data.images[:750]) and torch.equal(valid.images, data.images[750:])
