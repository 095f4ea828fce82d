"""Batched augmentation and batching on the training device.

The whole uint8 dataset is moved to the device once; each batch is gathered,
normalised and augmented there with index arithmetic, without PIL or a
per-image Python loop.

Augmentation follows the official ENAS CIFAR pipeline (Pham et al. 2018,
Sec. 3.2; ``micro_child._pre_process``): images are normalised first, then
zero-padded by ``pad`` pixels and randomly cropped back, flipped left-right
with probability 0.5, and optionally cut out (DeVries & Taylor 2017). Because
normalisation comes first, both the padding and the cutout box are zero in
normalised units (the dataset's mean colour), as in ENAS; DARTS instead pads
black before normalising, a negligible difference.

All random numbers are drawn on the CPU from a ``torch.Generator`` so that a
checkpoint can save its state and a resumed run draws the same augmentations;
the batch order of an epoch depends only on ``(seed, epoch)``.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from enas.data.datasets import ImageData
from enas.errors import UserError

logger = logging.getLogger(__name__)

Params = Dict[str, Optional[torch.Tensor]]


def draw_params(batch: int, height: int, width: int, pad: int, flip: bool, cutout: int,
                generator: Optional[torch.Generator] = None) -> Params:
    """Draw the augmentation parameters of one batch on the CPU.

    Returns:
        ``offsets`` ``(B, 2)`` int64: top-left ``(dy, dx)`` of the crop window in the padded
        image, uniform in ``0..2*pad`` (``pad`` means no shift); ``flip`` ``(B,)`` bool;
        ``centers`` ``(B, 2)`` int64 cutout centres uniform over the image and ``boxes``
        ``(B, 4)`` int64 ``(y1, y2, x1, x2)`` half-open cutout boxes clipped at the borders
        (both ``None`` without cutout).
    """
    if pad > 0:
        offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator)
    else:
        offsets = torch.zeros(batch, 2, dtype=torch.int64)
    if flip:
        flips = torch.rand(batch, generator=generator) < 0.5
    else:
        flips = torch.zeros(batch, dtype=torch.bool)
    centers = boxes = None
    if cutout > 0:
        cy = torch.randint(0, height, (batch,), generator=generator)
        cx = torch.randint(0, width, (batch,), generator=generator)
        centers = torch.stack([cy, cx], dim=1)
        # DARTS Cutout: centre anywhere, box clipped; y1 = c - L//2 keeps an odd L exactly L wide.
        y1, x1 = cy - cutout // 2, cx - cutout // 2
        boxes = torch.stack([y1.clamp(0, height), (y1 + cutout).clamp(0, height),
                             x1.clamp(0, width), (x1 + cutout).clamp(0, width)], dim=1)
    return {"offsets": offsets, "flip": flips, "centers": centers, "boxes": boxes}


def apply_params(x: torch.Tensor, params: Params, pad: int) -> torch.Tensor:
    """Apply drawn crop/flip/cutout parameters to a batch ``(B, C, H, W)`` of any dtype."""
    b, c, h, w = x.shape
    offsets, flips = params["offsets"].to(x.device), params["flip"].to(x.device)
    if pad > 0 or bool(params["flip"].any()):
        xp = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x  # (B, C, H+2p, W+2p)
        hp, wp = h + 2 * pad, w + 2 * pad
        ar_h = torch.arange(h, device=x.device)
        ar_w = torch.arange(w, device=x.device)
        rows = offsets[:, :1] + ar_h  # (B, H) rows of the padded image
        # Flipping the cropped window = reading its columns right to left.
        cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # (B, W)
        index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w)  # (B, 1, H*W)
        x = xp.reshape(b, c, hp * wp).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)
    boxes = params.get("boxes")
    if boxes is not None:
        boxes = boxes.to(x.device)
        ys = torch.arange(h, device=x.device)
        xs = torch.arange(w, device=x.device)
        in_y = (ys >= boxes[:, :1]) & (ys < boxes[:, 1:2])  # (B, H)
        in_x = (xs >= boxes[:, 2:3]) & (xs < boxes[:, 3:])  # (B, W)
        x = x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], 0)  # mask (B, 1, H, W)
    return x


def augment_batch(x: torch.Tensor, pad: int, flip: bool, cutout: int,
                  generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, Params]:
    """Random crop with zero padding, horizontal flip and cutout for a whole batch.

    Args:
        x: ``(B, C, H, W)`` uint8 or float images on any device; zeros are inserted in
            whatever units ``x`` has (pass normalised floats for ENAS semantics).
        pad: zero padding before cropping back to ``H x W``; 0 disables the crop.
        flip: flip left-right with probability 0.5.
        cutout: side of the zeroed square; 0 disables cutout.
        generator: CPU generator for all random draws (``None``: torch's global RNG).

    Returns:
        ``(out, params)``: the augmented batch (same dtype and device as ``x``) and the
        CPU parameters from :func:`draw_params`.
    """
    if pad < 0 or cutout < 0:
        raise ValueError(f"pad and cutout must be >= 0, got {pad} and {cutout}")
    b, _, h, w = x.shape
    params = draw_params(b, h, w, pad, flip, cutout, generator)
    return apply_params(x, params, pad), params


def _epoch_seed(seed: int, epoch: int) -> int:
    """Well-mixed 63-bit seed for the batch order of ``epoch`` (independent of anything else)."""
    state = np.random.SeedSequence([seed % 2**64, epoch]).generate_state(2, dtype=np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) & (2**63 - 1)


class DeviceLoader:
    """Batches of one dataset split, kept, normalised and augmented on ``device``.

    Args:
        data: the split to serve (uint8 images are copied to ``device`` once).
        batch_size: images per batch.
        device: where batches live.
        train: augment (crop/flip/cutout) and, by default, shuffle and drop the last
            partial batch; eval loaders serve the images in order, unaugmented.
        pad, flip, cutout: augmentation settings (see :func:`augment_batch`).
        generator: CPU generator for augmentation and :meth:`sample_batch`; its state is
            what a checkpoint saves. Default: a new one seeded with ``seed``.
        drop_last: drop the final partial batch (default: ``train``).
        channels_last: return batches in channels-last memory format.
        dtype: floating dtype of the returned images.
        seed: base seed of the per-epoch batch order.
        shuffle: permute every epoch (default: ``train``).
        shard: ``(rank, world)``: this process serves its part of every batch (torch.distributed,
            :mod:`enas.distributed`): part ``rank`` of ``world`` nearly equal consecutive parts
            (``torch.tensor_split``; empty parts are skipped). The batch order and the augmentation
            are drawn for the whole batch on every process, so the parts of all processes are
            exactly the batch one process would serve, and the generators stay identical.
    """

    def __init__(self, data: ImageData, batch_size: int, device: torch.device, train: bool,
                 pad: int = 4, flip: bool = True, cutout: int = 0,
                 generator: Optional[torch.Generator] = None, drop_last: Optional[bool] = None,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32, seed: int = 0,
                 shuffle: Optional[bool] = None, shard: Tuple[int, int] = (0, 1)) -> None:
        if int(batch_size) < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if pad < 0 or cutout < 0:
            raise UserError(f"crop padding and cutout size must be >= 0, got {pad} and {cutout}")
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("the augmentation generator must live on the CPU")
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.train = bool(train)
        self.pad, self.flip, self.cutout = int(pad), bool(flip), int(cutout)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.shuffle = self.train if shuffle is None else bool(shuffle)
        self.channels_last = channels_last
        self.dtype = dtype
        self.seed = int(seed)
        self.shard = (int(shard[0]), int(shard[1]))
        if not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError(f"shard {shard} is not (rank, world) with 0 <= rank < world")
        self.generator = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        self.epoch = 0
        self.num_samples = len(data)
        if self.num_samples == 0:
            raise UserError("cannot build a data loader over an empty image set")
        if self.drop_last and self.num_samples < self.batch_size:
            raise UserError(f"batch size {self.batch_size} exceeds the {self.num_samples} images "
                            f"of this split; lower the batch size")
        self.classes = list(data.classes)
        self.images = data.images.to(self.device)  # (N, C, H, W) uint8, moved once
        self.labels = data.labels.to(self.device)  # (N,)
        std = torch.tensor(data.std, dtype=torch.float32)
        mean = torch.tensor(data.mean, dtype=torch.float32)
        # (x / 255 - mean) / std folded into one multiply-add per pixel.
        self._scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(self.device)  # (1, C, 1, 1)
        self._shift = (-mean / std).view(1, -1, 1, 1).to(self.device)  # (1, C, 1, 1)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """``(N,)`` CPU permutation of the sample indices for ``epoch`` (identity without shuffle)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, int(epoch)))
        return torch.randperm(self.num_samples, generator=g)

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches ``start, start + 1, ...`` of ``epoch``.

        The order depends only on ``(seed, epoch)``, so resuming at ``start`` with the saved
        generator state reproduces the rest of the epoch exactly.
        """
        if not 0 <= start <= len(self):
            raise ValueError(f"start batch {start} is outside 0..{len(self)}")
        order = self.epoch_order(epoch).to(self.device)
        return self._iterate(order, start)

    def _iterate(self, order: torch.Tensor, start: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for i in range(start, len(self)):
            x, y = self._batch(order[i * self.batch_size:(i + 1) * self.batch_size])
            if len(y):
                yield x, y

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over epoch :attr:`epoch` (set it per epoch, like a distributed sampler)."""
        return self.epoch_batches(self.epoch)

    def sample_batch(self, generator: Optional[torch.Generator] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One random batch without repeats (e.g. the validation minibatch of an ENAS reward).

        Indices (and, for train loaders, augmentation) come from ``generator``, default
        :attr:`generator`, so the draw is reproducible.
        """
        gen = self.generator if generator is None else generator
        idx = torch.randperm(self.num_samples, generator=gen)[:self.batch_size]
        return self._batch(idx.to(self.device), gen)

    def skip_batch(self, generator: Optional[torch.Generator] = None) -> None:
        """Draw what :meth:`sample_batch` draws, without building the batch (another process
        scores it), so the generator stays where it would be in one process."""
        gen = self.generator if generator is None else generator
        n = len(torch.randperm(self.num_samples, generator=gen)[:self.batch_size])
        if self.train:
            _, _, h, w = self.images.shape
            draw_params(n, h, w, self.pad, self.flip, self.cutout, gen)

    def _batch(self, idx: torch.Tensor, gen: Optional[torch.Generator] = None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        rank, world = self.shard
        pieces = idx.tensor_split(world) if world > 1 else (idx,)
        part, lo = pieces[rank], sum(len(p) for p in pieces[:rank])  # this process's images, first index
        x = self.images.index_select(0, part).float() * self._scale + self._shift  # (b, C, H, W)
        if self.train:
            # Parameters drawn for the whole batch (the same draws on every process), applied to this part.
            _, _, h, w = x.shape
            params = draw_params(len(idx), h, w, self.pad, self.flip, self.cutout, gen or self.generator)
            if world > 1:
                params = {k: None if v is None else v[lo:lo + len(part)] for k, v in params.items()}
            x = apply_params(x, params, self.pad)
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels.index_select(0, part)
