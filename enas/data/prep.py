"""Whole-split transforms of loaded data: size fitting, channel conversion, stratified subsets.

The imagefolder source fits and converts image by image while decoding
(:mod:`enas.data.imaging`); the tensor datasets (CIFAR, Fashion-MNIST, digits) get
the same three choices here, on the whole uint8 tensor at once:
``data.image_size`` (``H`` or ``[H, W]``) with ``data.resize``, ``data.channels``
and ``data.limit``.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from enas.data.datasets import ImageData, channel_stats
from enas.errors import UserError
from enas.data.imaging import RESIZE_MODES

logger = logging.getLogger(__name__)


def check_options(size: Optional[Tuple[int, int]], resize: str, channels: Optional[int],
                  limit: Optional[int]) -> None:
    """Refuse impossible data options with one line."""
    if size is not None and min(size) < 1:
        raise UserError(f"image size must be positive, got {list(size)}")
    if resize not in RESIZE_MODES:
        raise UserError(f"unknown resize mode {resize!r}; choose from {', '.join(RESIZE_MODES)}")
    if channels not in (None, 1, 3):
        raise UserError(f"data.channels must be 1, 3 or null (the data's own), got {channels!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 2):
        raise UserError(f"data.limit must be an integer >= 2 (or null for all images), got {limit!r}")


def stratified_indices(labels: Sequence[int], limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` items with every class's share kept (largest remainder).

    Seeded by ``seed`` only, so a limited dataset is identical across runs and seeds.
    Every class keeps at least one item while ``limit`` allows it.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if limit >= n:
        return np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (limit / n)
    quota = np.floor(exact).astype(int)
    if limit >= len(classes):
        quota = np.maximum(quota, 1)
    # Largest remainders get the images still to give (or lose the ones given too many).
    order = np.argsort(-(exact - quota), kind="stable")
    i = 0
    while quota.sum() < limit:
        k = order[i % len(order)]
        if quota[k] < counts[k]:
            quota[k] += 1
        i += 1
    while quota.sum() > limit:  # the one-per-class floor gave too many: take from the largest
        quota[int(np.argmax(quota))] -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def limit_subset(data: ImageData, limit: int) -> ImageData:
    """A stratified subset of ``limit`` images (:func:`stratified_indices`); statistics kept."""
    if limit >= len(data):
        return data
    idx = torch.from_numpy(stratified_indices(data.labels.numpy(), limit))
    note = f"data.limit: a stratified {len(idx):,} of {len(data):,} training images"
    out = data.subset(idx)
    return replace(out, summary="; ".join(s for s in (data.summary, note) if s))


def convert_channels(data: ImageData, channels: int, train: Optional[ImageData] = None) -> ImageData:
    """Convert to ``channels`` (3 -> 1: ITU-R 601-2 luminance, as PIL's ``L``; 1 -> 3: repeat).

    The statistics are recomputed from the converted images, or taken from ``train``
    (a converted training split) for a test split.
    """
    x = data.images
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(1, 3, 1, 1)
        x = (x.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    else:
        x = x.expand(-1, 3, -1, -1).contiguous()
    mean, std = (train.mean, train.std) if train is not None else channel_stats(x)
    note = f"converted {data.channels} -> {channels} channel(s) (data.channels)"
    return replace(data, images=x, mean=mean, std=std,
                   summary="; ".join(s for s in (data.summary, note) if s))


def _scaled(h: int, w: int, size: Tuple[int, int], mode: str) -> Tuple[int, int]:
    """The intermediate size of ``pad`` (fit inside) and ``crop`` (cover) resizing."""
    H, W = size
    scale = min(H / h, W / w) if mode == "pad" else max(H / h, W / w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    return (min(th, H), min(tw, W)) if mode == "pad" else (max(th, H), max(tw, W))


def resize_images(data: ImageData, size: Tuple[int, int], mode: str = "stretch",
                  chunk: int = 2048) -> ImageData:
    """Fit all images to ``size = (H, W)`` by ``mode`` (bilinear, antialiased)."""
    n, c, h, w = data.images.shape
    if (h, w) == tuple(size):
        return data
    th, tw = size if mode == "stretch" else _scaled(h, w, size, mode)
    out = []
    for i in range(0, n, chunk):
        x = data.images[i:i + chunk].float()  # (b, C, h, w)
        x = F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255).to(torch.uint8)  # (b, C, th, tw)
        if mode == "crop":
            top, left = (th - size[0]) // 2, (tw - size[1]) // 2
            x = x[:, :, top:top + size[0], left:left + size[1]]
        elif mode == "pad":
            top, left = (size[0] - th) // 2, (size[1] - tw) // 2
            x = F.pad(x, (left, size[1] - tw - left, top, size[0] - th - top))
        out.append(x.contiguous())
    images = torch.cat(out) if out else data.images.new_zeros((0, c) + tuple(size))
    how = {"stretch": "stretched", "pad": "scaled and padded", "crop": "scaled and centre-cropped"}[mode]
    note = f"{n:,} images {how} from {h}x{w} to {size[0]}x{size[1]} (data.resize={mode})"
    return replace(data, images=images, summary="; ".join(s for s in (data.summary, note) if s))


def match_classes(data: ImageData, names: Sequence[str], where: str) -> ImageData:
    """Relabel ``data`` to the class order ``names`` (e.g. a checkpoint's), matching by name.

    A test folder may hold a subset of the classes; a class the network does not know (a
    renamed or foreign folder) is refused: counting classes alone would score a mismatch.

    Raises:
        UserError: one line naming the unknown and the missing classes.
    """
    names = list(names)
    if not names or list(data.classes) == names:
        return data
    unknown = [c for c in data.classes if c not in names]
    if unknown:
        missing = [c for c in names if c not in data.classes]
        raise UserError(f"the classes of {where} do not match the checkpoint's: not in the checkpoint "
                        f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}, missing {missing[:5]}"
                        f"{' ...' if len(missing) > 5 else ''} (class names must be the training ones)")
    index = torch.tensor([names.index(c) for c in data.classes], dtype=torch.int64)
    if len(data.classes) < len(names):
        logger.info("%s holds %d of the checkpoint's %d classes; scoring those", where, len(data.classes), len(names))
    return replace(data, labels=index[data.labels], classes=names)
