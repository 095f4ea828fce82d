"""The ``imagefolder`` source: class folders of image files (torchvision ImageFolder layout).

``ROOT/<class>/<images>`` (classes sorted by name, files found recursively), or
``ROOT/train/<class>/...`` with ``ROOT/test/`` (or ``val/``) holding the same
class folders. Without a test folder a seeded ``test_fraction`` of every
class is held out as test. Files are decoded by :mod:`enas.data.imaging` (every
PIL mode, 16-bit scaled, transparency composited), fitted to the image size
by ``resize``, and summarised in one line (:attr:`ImageData.summary`).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from enas.data.datasets import IMG_EXTENSIONS, ImageData, channel_stats
from enas.data.sources import _one_line
from enas.errors import UserError
from enas.data.imaging import Decoded, decode_image, fit, quiet_pil, summarize, to_channels, to_uint8

logger = logging.getLogger(__name__)

# Decoded image folders, keyed by path, size and file times: test needs train's statistics.
_FOLDER_MEMO: Dict[tuple, Tuple[ImageData, ImageData]] = {}



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


def _decode(path: Path, size: Tuple[int, int], resize: str) -> Tuple[Decoded, Tuple[int, int]]:
    """Decode one image and fit it to ``size``; returns it and its size on disk."""
    from PIL import Image

    try:
        d = decode_image(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path} ({_one_line(e)})") from e
    native = d.array.shape[:2]
    d.array = fit(d.array, size, resize)
    return d, native


def _to_tensors(parts: Sequence[Dict[str, List[Path]]], classes: List[str], size: Tuple[int, int],
                resize: str, channels: Optional[int]) -> Tuple[List[Tuple[torch.Tensor, torch.Tensor]], str]:
    """Decode every split and a one-line summary; without ``channels``, one channel only if
    ALL images of all splits are grayscale."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [[(f, k) for k, c in enumerate(classes) for f in part.get(c, [])] for part in parts]
    flat = [f for job in jobs for f, _ in job]
    with quiet_pil(), ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        # PIL releases the GIL while decoding and resizing.
        results = list(pool.map(lambda p: _decode(p, size, resize), flat))
    decoded = [d for d, _ in results]
    c = channels or (1 if all(d.gray for d in decoded) else 3)
    summary = summarize(decoded, [s for _, s in results], size, c, channels is not None, resize)
    arrays = [to_uint8(to_channels(d.array, c)) for d in decoded]  # each (C, H, W)
    out, start = [], 0
    for job in jobs:
        chunk = arrays[start:start + len(job)]
        start += len(job)
        if chunk:
            images = torch.from_numpy(np.stack(chunk))  # (n, C, H, W)
        else:
            images = torch.zeros((0, c) + tuple(size), dtype=torch.uint8)
        labels = torch.tensor([k for _, k in job], dtype=torch.int64)
        out.append((images, labels))
    return out, summary


def _limit_files(files: Dict[str, List[Path]], limit: Optional[int]) -> Dict[str, List[Path]]:
    """A stratified ``limit`` of the training files (before decoding: only those are read)."""
    from enas.data.prep import stratified_indices

    flat = [(c, f) for c, fs in files.items() for f in fs]
    if limit is None or limit >= len(flat):
        return files
    keep = set(stratified_indices([list(files).index(c) for c, _ in flat], limit).tolist())
    out: Dict[str, List[Path]] = {c: [] for c in files}
    for i, (c, f) in enumerate(flat):
        if i in keep:
            out[c].append(f)
    logger.info("data.limit: a stratified %d of the %d training images", limit, len(flat))
    return out


def _load_imagefolder(data_dir: str, split: str, size: Tuple[int, int], test_fraction: float,
                      resize: str = "stretch", channels: Optional[int] = None,
                      limit: Optional[int] = None) -> ImageData:
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
    elif not (root / "train").is_dir() and (test_dir is not None or test_fraction >= 1.0):
        # Only a test folder, or test_fraction 1 (`enas evaluate --data-dir`: score every image):
        # it is the test split; the statistics are its own, evaluation uses the checkpoint's.
        if split == "train":
            raise UserError(f"{root} has no train/ folder of class folders")
        base = test_dir or root
        train_files = test_files = _scan_classes(base)
        _check_train_classes(test_files, base)
    else:
        base = root / "train" if (root / "train").is_dir() else root
        files = _scan_classes(base)
        _check_train_classes(files, base)
        train_files, test_files = _holdout(files, test_fraction, base)
        logger.info("%s has no train/ + test/ (or val/) folders: holding out %.3g of each class "
                    "as test", root, test_fraction)
    classes = sorted(train_files)
    train_files = _limit_files(train_files, limit)
    listing = tuple((str(f), f.stat().st_mtime_ns)
                    for part in (train_files, test_files) for c in classes for f in part[c])
    key = (str(root.resolve()), tuple(size), resize, channels, listing)
    if key not in _FOLDER_MEMO:
        # Train and test are decoded together: the test split needs the train statistics and
        # both must agree on the channel count; the memo spares a second decode.
        parts = [train_files] if train_files is test_files else [train_files, test_files]
        decoded, summary = _to_tensors(parts, classes, size, resize, channels)
        (tr_x, tr_y), (te_x, te_y) = decoded[0], decoded[-1]
        mean, std = channel_stats(tr_x)
        logger.info("%s: %s", root, summary)
        _FOLDER_MEMO.clear()
        _FOLDER_MEMO[key] = (ImageData(tr_x, tr_y, classes, mean, std, summary),
                             ImageData(te_x, te_y, list(classes), mean, std, summary))
    return _FOLDER_MEMO[key][0 if split == "train" else 1]
