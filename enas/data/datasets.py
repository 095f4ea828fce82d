"""Dataset sources: every dataset is loaded whole into uint8 tensors.

ENAS trains its shared weights on CIFAR-10 with the last 5,000 of the 50,000
training images held out as the validation set that rewards the controller
(Pham et al. 2018, Sec. 3.2; official ``data_utils.read_data``). Keeping
whole datasets as one uint8 tensor lets :mod:`enas.data.augment` move them to the
training device once and augment batches there.

Sources: ``cifar10`` / ``cifar100`` (torchvision files), ``fashion_mnist``
(IDX files), ``imagefolder`` (class folders of image files, any size) and
``digits`` (scikit-learn's bundled 8x8 digits, always offline). Every problem
with the user's data raises :class:`enas.errors.UserError` with one line.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from enas.errors import UserError

logger = logging.getLogger(__name__)

DATASETS = ("cifar10", "cifar100", "fashion_mnist", "imagefolder", "digits")

#: Per-channel statistics in [0, 1] units used by the DARTS code for CIFAR.
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
#: Where Debian's ``fashion-mnist`` package installs the IDX files.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
#: Official ENAS CIFAR-10 search split: the last 5,000 training images.
CIFAR10_NUM_VALID = 5000
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DIGITS_NUM_TRAIN = 1500


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before loading it (``None`` = depends on the files)."""

    name: str
    channels: Optional[int]
    image_size: Optional[int]
    num_classes: Optional[int]
    description: str


_INFO = {
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, "CIFAR-10 (torchvision layout)"),
    "cifar100": DatasetInfo("cifar100", 3, 32, 100, "CIFAR-100 (torchvision layout)"),
    "fashion_mnist": DatasetInfo("fashion_mnist", 1, 28, 10, "Fashion-MNIST (IDX files)"),
    "imagefolder": DatasetInfo("imagefolder", None, 32, None,
                               "class folders of images, decoded at image_size (default 32)"),
    "digits": DatasetInfo("digits", 1, 8, 10, "scikit-learn 8x8 digits (offline)"),
}


@dataclass
class ImageData:
    """A whole dataset split held in memory.

    Attributes:
        images: ``(N, C, H, W)`` uint8 tensor.
        labels: ``(N,)`` int64 tensor of class indices.
        classes: class names, ``classes[label]``.
        mean: per-channel mean of the training images in [0, 1] units.
        std: per-channel standard deviation of the training images in [0, 1] units.
        summary: one line saying how the files were decoded and converted ("" when nothing was).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: List[str]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    summary: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be an int64 (N,) tensor matching images")
        c = self.images.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"mean/std need {c} entries, got {len(self.mean)}/{len(self.std)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> Tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: torch.Tensor) -> "ImageData":
        """Rows ``indices`` with the same classes and normalisation statistics."""
        return replace(self, images=self.images[indices], labels=self.labels[indices])


def canonical_name(name: str) -> str:
    """``'Fashion-MNIST'`` -> ``'fashion_mnist'``; raises UserError for unknown names."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return key


def dataset_info(name: str) -> DatasetInfo:
    """Default image size, channels and class count of a dataset (for validation messages)."""
    return _INFO[canonical_name(name)]


def default_cache_dir() -> Path:
    """``$ENAS_DATA_CACHE`` if set, else ``~/.cache/enas/data``."""
    env = os.environ.get("ENAS_DATA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "enas" / "data"


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and population std of uint8 ``(N, C, H, W)`` images in [0, 1] units.

    Accumulates in float64 chunk by chunk so large datasets never need a full float copy.
    """
    n, c = images.shape[:2]
    if n == 0:
        raise UserError("cannot compute normalisation statistics of an empty image set")
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, n, chunk):
        x = images[i:i + chunk].to(torch.float64) / 255.0  # (b, C, H, W)
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    if bool((std < 1e-6).any()):
        # A constant channel would divide by zero; leave it unscaled instead.
        logger.warning("a channel of the training images is constant; using std 1 for it")
        std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def image_hw(size: Union[int, Sequence[int], None], default: int = 32) -> Tuple[int, int]:
    """``data.image_size`` as ``(H, W)``: an int is square, ``[H, W]`` is taken as is."""
    if size is None:
        return default, default
    if isinstance(size, int) and not isinstance(size, bool):
        return int(size), int(size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in size):
        return int(size[0]), int(size[1])
    raise UserError(f"image size must be a positive integer or [height, width], got {size!r}")


def load_dataset(name: str, split: str, data_dir: Optional[str] = None,
                 image_size: Union[int, Sequence[int], None] = None, download: bool = True,
                 cache_dir: Optional[str] = None, test_fraction: float = 0.2, resize: str = "stretch",
                 channels: Optional[int] = None, limit: Optional[int] = None) -> ImageData:
    """Load one split of a dataset as uint8 tensors.

    Args:
        name: one of :data:`DATASETS` (``-`` and case are ignored).
        split: ``"train"`` or ``"test"``.
        data_dir: where the files are; ``None`` uses the cache (and downloads if allowed).
        image_size: ``H`` (square) or ``[H, W]``; images of another size are fitted by
            ``resize``. For ``imagefolder`` it is the decode size (default 32).
        download: allow torchvision downloads into the cache when ``data_dir`` is ``None``.
        cache_dir: download cache; default :func:`default_cache_dir`.
        test_fraction: share of each class held out as test by ``imagefolder`` when the
            folder has no ``test/`` (or ``val/``) subfolder; 1.0 makes every image of a folder
            without ``train/`` the test split (``enas evaluate --data-dir``).
        resize: ``stretch``, ``pad`` (keep the aspect ratio, pad with black) or ``crop``
            (keep the aspect ratio, centre crop); see :mod:`enas.data.imaging`.
        channels: 1 or 3 to convert every image (colour to luminance, gray repeated);
            ``None`` keeps the data's own (an image folder is 1-channel if all its
            images are grayscale).
        limit: at most this many training images, a stratified subset (same share of
            every class, seeded, identical across runs); the test split is never cut.

    Returns:
        The split, with ``mean``/``std`` of the training split (known constants for CIFAR).

    Raises:
        UserError: for any problem with the name, the folder or its files.
    """
    from enas.data.prep import check_options, convert_channels, limit_subset, resize_images

    key = canonical_name(name)
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}; use 'train' or 'test'")
    size = image_hw(image_size) if image_size is not None else None
    check_options(size, resize, channels, limit)
    if data_dir is not None:
        data_dir = os.path.expanduser(str(data_dir))
        if not os.path.isdir(data_dir):
            raise UserError(f"data dir {data_dir} does not exist or is not a folder")
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    from enas.data.sources import _load_cifar, _load_digits, _load_fashion_mnist
    from enas.data.imagefolder import _load_imagefolder

    if key == "imagefolder":
        if data_dir is None:
            raise UserError("dataset 'imagefolder' needs a data dir (a folder of class folders)")
        data = _load_imagefolder(data_dir, split, size or (32, 32), test_fraction, resize, channels,
                                 limit)
    else:
        if key in ("cifar10", "cifar100"):
            data = _load_cifar(key, split, data_dir, download, cache)
        elif key == "fashion_mnist":
            data = _load_fashion_mnist(split, data_dir, download, cache)
        else:
            data = _load_digits(split)
        if channels is not None and channels != data.channels:
            # New channels need new statistics, always those of the training split.
            train = data if split == "train" else load_dataset(key, "train", data_dir, None, download,
                                                                 cache_dir, channels=channels)
            data = convert_channels(data, channels, train if split == "test" else None)
        if split == "train" and limit is not None:
            data = limit_subset(data, limit)
        if size is not None:
            data = resize_images(data, size, resize)
    logger.info("loaded %s/%s: %d images %s, %d classes", key, split, len(data),
                tuple(data.images.shape[1:]), data.num_classes)
    if data.summary and key != "imagefolder":  # an image folder logs its decode once, when it decodes
        logger.info("%s/%s: %s", key, split, data.summary)
    return data


def load_config_data(d: Any, split: str, data_dir: Optional[str] = None) -> ImageData:
    """One split as a config's ``data`` section says (``data_dir`` overrides ``d.data_dir``)."""
    return load_dataset(d.dataset, split, data_dir or d.data_dir, d.image_size, resize=d.resize,
                        channels=d.channels, limit=d.limit)


def data_info(data: ImageData, dataset: str) -> dict:
    """Plain-data description of a training split: what checkpoints carry (``data_info``) and,
    with the decode summary, a run's ``data.json``. ``image_size`` is ``[H, W]``."""
    return {"dataset": dataset, "num_classes": data.num_classes, "in_channels": data.channels,
            "image_size": list(data.image_size), "classes": list(data.classes),
            "mean": [float(v) for v in data.mean], "std": [float(v) for v in data.std]}


def search_split(data: ImageData, dataset: str, valid_fraction: float = 0.1,
                 ordered: bool = False) -> Tuple[ImageData, ImageData]:
    """Split training data into the search's (train, validation) parts.

    CIFAR-10 follows the official ENAS split: of the 50,000 training images the last 5,000
    are the validation set that rewards the controller (Pham et al. 2018, Sec. 3.2). Any
    other dataset holds out the last ``valid_fraction`` of a fixed permutation (seed 0),
    so the split never depends on the run's seed. Both parts keep the original order.
    ``dataset`` only selects the rule; a name outside :data:`DATASETS` (e.g. ``"custom"``)
    gets the generic one. ``ordered=True`` holds out the last ``valid_fraction`` in the
    original order instead (DARTS ``train_search.py``: first half for weights, second half
    for the architecture; only sensible for data stored in random order, like CIFAR).

    Raises:
        UserError: if either part would be empty or the fraction is not in (0, 1).
    """
    key = str(dataset).strip().lower().replace("-", "_")  # any other name: the generic rule
    n = len(data)
    if key == "cifar10" and n == 50000:
        cut = n - CIFAR10_NUM_VALID
        return (replace(data, images=data.images[:cut], labels=data.labels[:cut]),
                replace(data, images=data.images[cut:], labels=data.labels[cut:]))
    if not 0.0 < float(valid_fraction) < 1.0:
        raise UserError(f"validation fraction must be between 0 and 1, got {valid_fraction}")
    if key == "cifar10":
        logger.warning("cifar10 training data has %d images, not 50000: using a seeded "
                       "%.3g validation fraction instead of the official last 5000", n, valid_fraction)
    n_valid = math.ceil(n * float(valid_fraction) - 1e-9)
    if n_valid < 1 or n - n_valid < 1:
        raise UserError(f"cannot split {n} training images with validation fraction "
                        f"{valid_fraction}: both the search-train and validation parts must be non-empty")
    if ordered:
        cut = n - n_valid
        return (replace(data, images=data.images[:cut], labels=data.labels[:cut]),
                replace(data, images=data.images[cut:], labels=data.labels[cut:]))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    train_idx, _ = perm[:n - n_valid].sort()
    valid_idx, _ = perm[n - n_valid:].sort()
    return data.subset(train_idx), data.subset(valid_idx)
# ----------------------------------------------------------------------------- imagefolder

