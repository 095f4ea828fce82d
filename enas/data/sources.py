"""Dataset readers behind :func:`enas.data.datasets.load_dataset`: CIFAR through torchvision,
Fashion-MNIST IDX files and scikit-learn's digits, to uint8 tensors (image folders:
:mod:`enas.data.imagefolder`).
"""
from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from enas.data.datasets import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, DEBIAN_FASHION_MNIST,
                       DIGITS_NUM_TRAIN, FASHION_MNIST_CLASSES, ImageData, channel_stats)
from enas.errors import UserError

logger = logging.getLogger(__name__)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _ensure_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create data cache {path}: {_one_line(e)}") from e


# ----------------------------------------------------------------------------- CIFAR

def _load_cifar(key: str, split: str, data_dir: Optional[str], download: bool,
                cache: Path) -> ImageData:
    from torchvision import datasets

    cls = datasets.CIFAR10 if key == "cifar10" else datasets.CIFAR100
    folder = cls.base_folder  # 'cifar-10-batches-py' / 'cifar-100-python'
    if data_dir is not None:
        root = Path(data_dir)
        if root.name == folder:  # also accept the extracted folder itself
            root = root.parent
        if not (root / folder).is_dir():
            raise UserError(f"data dir {data_dir} has no {folder}/ folder "
                            f"(expected torchvision's {key} layout: <data dir>/{folder}/...)")
    else:
        root = cache
        if not (root / folder).is_dir():
            if not download:
                raise UserError(f"{key} is not in the data cache {root} and downloading is off; "
                                f"pass a data dir holding {folder}/")
            _ensure_dir(root)
            try:
                cls(str(root), train=True, download=True)
            except Exception as e:  # network failures come as many exception types
                raise UserError(f"could not download {key} into {root} ({_one_line(e)}); without "
                                f"internet, fetch it elsewhere and pass a data dir") from e
    try:
        ds = cls(str(root), train=(split == "train"), download=False)
    except Exception as e:  # torchvision: RuntimeError on failed md5, pickle errors on garbage
        raise UserError(f"{key} files in {root / folder} are missing or corrupt ({_one_line(e)})") from e
    images = torch.from_numpy(np.ascontiguousarray(ds.data))  # (N, 32, 32, 3)
    images = images.permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if key == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return ImageData(images, labels, list(ds.classes), mean, std)


# ----------------------------------------------------------------------------- Fashion-MNIST

_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_STATS_MEMO: Dict[Tuple[str, int, int], Tuple[Tuple[float, ...], Tuple[float, ...]]] = {}


def _idx_file(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _fmnist_folder(base: Path) -> Optional[Path]:
    """The folder below ``base`` holding all four IDX files (plain or .gz), if any."""
    stems = _FMNIST_FILES["train"] + _FMNIST_FILES["test"]
    for cand in (base, base / "FashionMNIST" / "raw", base / "raw"):
        if all(_idx_file(cand, s) is not None for s in stems):
            return cand
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX array (the MNIST file format) with ``ndim`` dimensions."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
        zero, dtype, nd = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08 or nd != ndim:
            raise ValueError(f"header says type {dtype:#x} with {nd} dims, expected 0x08 with {ndim}")
        dims = struct.unpack(f">{nd}I", raw[4:4 + 4 * nd])
        arr = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * nd)
        if arr.size != int(np.prod(dims)):
            raise ValueError(f"{arr.size} bytes of data for shape {dims}")
    except (OSError, EOFError, ValueError, struct.error) as e:
        raise UserError(f"{path} is not a valid IDX file ({_one_line(e)})") from e
    return arr.reshape(dims)


def _fmnist_split(folder: Path, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
    img_path = _idx_file(folder, _FMNIST_FILES[split][0])
    lbl_path = _idx_file(folder, _FMNIST_FILES[split][1])
    images = torch.from_numpy(_read_idx(img_path, 3).copy()).unsqueeze(1)  # (N, 1, 28, 28)
    labels = torch.from_numpy(_read_idx(lbl_path, 1).astype(np.int64))
    if images.shape[0] != labels.shape[0] or (labels.numel() and int(labels.max()) >= 10):
        raise UserError(f"Fashion-MNIST {split} files in {folder} do not match "
                        f"({images.shape[0]} images, {labels.shape[0]} labels, 10 classes)")
    return images, labels


def _load_fashion_mnist(split: str, data_dir: Optional[str], download: bool,
                        cache: Path) -> ImageData:
    if data_dir is not None:
        folder = _fmnist_folder(Path(data_dir))
        if folder is None:
            names = ", ".join(_FMNIST_FILES["train"] + _FMNIST_FILES["test"])
            raise UserError(f"data dir {data_dir} lacks the Fashion-MNIST IDX files ({names}, "
                            f"optionally .gz), directly or under FashionMNIST/raw/")
    else:
        folder = _fmnist_folder(Path(DEBIAN_FASHION_MNIST)) or _fmnist_folder(cache)
        if folder is None:
            if not download:
                raise UserError(f"Fashion-MNIST is not in {DEBIAN_FASHION_MNIST} or the data cache "
                                f"{cache} and downloading is off; pass a data dir")
            from torchvision import datasets

            _ensure_dir(cache)
            try:
                datasets.FashionMNIST(str(cache), train=True, download=True)
            except Exception as e:  # network failures come as many exception types
                raise UserError(f"could not download Fashion-MNIST into {cache} ({_one_line(e)}); "
                                f"without internet, fetch the IDX files and pass a data dir") from e
            folder = _fmnist_folder(cache)
            if folder is None:
                raise UserError(f"Fashion-MNIST download into {cache} left no IDX files")
    images, labels = _fmnist_split(folder, split)
    # Normalisation always comes from the training images, also for the test split.
    train_path = _idx_file(folder, _FMNIST_FILES["train"][0])
    st = train_path.stat()
    memo_key = (str(train_path.resolve()), st.st_mtime_ns, st.st_size)
    if memo_key not in _STATS_MEMO:
        train_images = images if split == "train" else _fmnist_split(folder, "train")[0]
        _STATS_MEMO[memo_key] = channel_stats(train_images)
    mean, std = _STATS_MEMO[memo_key]
    return ImageData(images, labels, list(FASHION_MNIST_CLASSES), mean, std)


# ----------------------------------------------------------------------------- digits

def _load_digits(split: str) -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # The bundled values are counts (0..16) of set pixels in 4x4 blocks; scale to the uint8 range.
    scaled = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    images = torch.from_numpy(scaled).unsqueeze(1)  # (1797, 1, 8, 8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    mean, std = channel_stats(images[:DIGITS_NUM_TRAIN])
    part = slice(0, DIGITS_NUM_TRAIN) if split == "train" else slice(DIGITS_NUM_TRAIN, None)
    return ImageData(images[part].contiguous(), labels[part].contiguous(),
                     [str(d) for d in range(10)], mean, std)
