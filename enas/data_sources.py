"""Dataset readers behind :func:`enas.data.load_dataset`: CIFAR through torchvision,
Fashion-MNIST IDX files and image folders (ImageFolder layout), all to uint8 tensors.
"""
from __future__ import annotations

import gzip
import logging
import math
import os
import struct
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from enas.data import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, DEBIAN_FASHION_MNIST,
                       FASHION_MNIST_CLASSES, IMG_EXTENSIONS, ImageData, channel_stats)
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



# Decoded image folders, keyed by path, size and file times: test needs train's statistics.
_FOLDER_MEMO: Dict[tuple, Tuple[ImageData, ImageData]] = {}

_GRAY_MODES = ("L", "1")


def _scan_classes(folder: Path) -> Dict[str, List[Path]]:
    """Class name -> sorted image files below ``folder/<class>/`` (torchvision ImageFolder layout)."""
    try:
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise UserError(f"{folder} has no class folders (expected {folder}/<class name>/<images>)")
        return {c: sorted(p for p in (folder / c).rglob("*")
                          if p.suffix.lower() in IMG_EXTENSIONS and p.is_file()
                          and not p.name.startswith("."))
                for c in classes}
    except OSError as e:
        raise UserError(f"cannot list the image folder {folder} ({_one_line(e)})") from e


def _check_train_classes(files: Dict[str, List[Path]], folder: Path) -> None:
    if not any(files.values()):
        raise UserError(f"no images ({', '.join(IMG_EXTENSIONS)}) found in the class folders of {folder}")
    empty = [c for c, fs in files.items() if not fs]
    if empty:
        raise UserError(f"class folder(s) without images in {folder}: {', '.join(empty[:10])}")
    if len(files) < 2:
        raise UserError(f"imagefolder needs at least 2 classes, found 1 ({next(iter(files))!r}) in {folder}")


def _holdout(files: Dict[str, List[Path]], fraction: float, folder: Path
             ) -> Tuple[Dict[str, List[Path]], Dict[str, List[Path]]]:
    """Hold out ``fraction`` of every class (seeded, so identical across runs) as test."""
    if not 0.0 < float(fraction) < 1.0:
        raise UserError(f"test fraction must be between 0 and 1, got {fraction}")
    train, test = {}, {}
    for i, (c, fs) in enumerate(files.items()):
        perm = np.random.default_rng([0, i]).permutation(len(fs))
        n_test = min(int(math.floor(len(fs) * fraction + 0.5)), len(fs) - 1)
        test_idx = set(perm[:n_test].tolist())
        train[c] = [f for j, f in enumerate(fs) if j not in test_idx]
        test[c] = [f for j, f in enumerate(fs) if j in test_idx]
    if not any(test.values()):
        raise UserError(f"too few images in {folder} to hold out a test fraction of {fraction}; "
                        f"add images or provide train/ and test/ folders")
    return train, test


def _decode(path: Path, size: int) -> Tuple[np.ndarray, bool]:
    """Decode one image to ``(size, size)`` or ``(size, size, 3)`` uint8; flag grayscale sources."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            gray = im.mode in _GRAY_MODES
            im = im.convert("L" if gray else "RGB")
            # PIL's bilinear filter widens its support when shrinking, i.e. it antialiases.
            arr = np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path} ({_one_line(e)})") from e
    return arr, gray


def _to_tensors(parts: Sequence[Dict[str, List[Path]]], classes: List[str], size: int
                ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Decode every split; one channel only if ALL images of all splits are grayscale."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [[(f, k) for k, c in enumerate(classes) for f in part.get(c, [])] for part in parts]
    flat = [f for job in jobs for f, _ in job]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda p: _decode(p, size), flat))  # PIL releases the GIL while decoding
    all_gray = all(g for _, g in decoded)
    arrays = [a[None] if all_gray else (np.repeat(a[None], 3, 0) if g else a.transpose(2, 0, 1))
              for a, g in decoded]  # each (C, size, size)
    out, start = [], 0
    for job in jobs:
        chunk = arrays[start:start + len(job)]
        start += len(job)
        c = 1 if all_gray else 3
        if chunk:
            images = torch.from_numpy(np.stack(chunk))  # (n, C, size, size)
        else:
            images = torch.zeros((0, c, size, size), dtype=torch.uint8)
        labels = torch.tensor([k for _, k in job], dtype=torch.int64)
        out.append((images, labels))
    return out


def _load_imagefolder(data_dir: str, split: str, size: int, test_fraction: float) -> ImageData:
    root = Path(data_dir)
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        train_files = _scan_classes(root / "train")
        _check_train_classes(train_files, root / "train")
        test_files = _scan_classes(test_dir)
        if set(test_files) != set(train_files):
            only_train = sorted(set(train_files) - set(test_files))[:5]
            only_test = sorted(set(test_files) - set(train_files))[:5]
            raise UserError(f"class folders of {root / 'train'} and {test_dir} differ (only in train: "
                            f"{only_train or '-'}; only in {test_dir.name}: {only_test or '-'})")
        if not any(test_files.values()):
            raise UserError(f"no images found in the class folders of {test_dir}")
        missing = [c for c, fs in test_files.items() if not fs]
        if missing:
            logger.warning("test classes without images in %s: %s", test_dir, ", ".join(missing[:10]))
    else:
        base = root / "train" if (root / "train").is_dir() else root
        files = _scan_classes(base)
        _check_train_classes(files, base)
        train_files, test_files = _holdout(files, test_fraction, base)
        logger.info("%s has no train/ + test/ (or val/) folders: holding out %.3g of each class "
                    "as test", root, test_fraction)
    classes = sorted(train_files)
    listing = tuple((str(f), f.stat().st_mtime_ns)
                    for part in (train_files, test_files) for c in classes for f in part[c])
    key = (str(root.resolve()), size, listing)
    if key not in _FOLDER_MEMO:
        # Train and test are decoded together: the test split needs the train statistics and
        # both must agree on the channel count; the memo spares a second decode.
        (tr_x, tr_y), (te_x, te_y) = _to_tensors([train_files, test_files], classes, size)
        mean, std = channel_stats(tr_x)
        _FOLDER_MEMO.clear()
        _FOLDER_MEMO[key] = (ImageData(tr_x, tr_y, classes, mean, std),
                             ImageData(te_x, te_y, list(classes), mean, std))
    return _FOLDER_MEMO[key][0 if split == "train" else 1]
