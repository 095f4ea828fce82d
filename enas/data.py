"""Dataset sources: every dataset is loaded whole into uint8 tensors.

ENAS trains its shared weights on CIFAR-10 with the last 5,000 of the 50,000
training images held out as the validation set that rewards the controller
(Pham et al. 2018, Sec. 3.2; official ``data_utils.read_data``). Keeping
whole datasets as one uint8 tensor lets :mod:`enas.augment` move them to the
training device once and augment batches there.

Sources: ``cifar10`` / ``cifar100`` (torchvision files), ``fashion_mnist``
(IDX files), ``imagefolder`` (class folders of image files, any size) and
``digits`` (scikit-learn's bundled 8x8 digits, always offline). Every problem
with the user's data raises :class:`enas.errors.UserError` with one line.
"""
from __future__ import annotations

import gzip
import logging
import math
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

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
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: List[str]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

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


def resize_images(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 ``(N, C, H, W)`` images to ``size x size``."""
    if images.shape[2] == size and images.shape[3] == size:
        return images
    out = []
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].float()  # (b, C, H, W)
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    if not out:
        return images.new_zeros((0, images.shape[1], size, size))
    return torch.cat(out)


def load_dataset(name: str, split: str, data_dir: Optional[str] = None,
                 image_size: Optional[int] = None, download: bool = True,
                 cache_dir: Optional[str] = None, test_fraction: float = 0.2) -> ImageData:
    """Load one split of a dataset as uint8 tensors.

    Args:
        name: one of :data:`DATASETS` (``-`` and case are ignored).
        split: ``"train"`` or ``"test"``.
        data_dir: where the files are; ``None`` uses the cache (and downloads if allowed).
        image_size: resize every image to this square size (bilinear, antialiased); for
            ``imagefolder`` it is the decode size (default 32).
        download: allow torchvision downloads into the cache when ``data_dir`` is ``None``.
        cache_dir: download cache; default :func:`default_cache_dir`.
        test_fraction: share of each class held out as test by ``imagefolder`` when the
            folder has no ``test/`` (or ``val/``) subfolder.

    Returns:
        The split, with ``mean``/``std`` of the training split (known constants for CIFAR).

    Raises:
        UserError: for any problem with the name, the folder or its files.
    """
    key = canonical_name(name)
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}; use 'train' or 'test'")
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool)
                                   or image_size < 1):
        raise UserError(f"image size must be a positive integer, got {image_size!r}")
    if data_dir is not None:
        data_dir = os.path.expanduser(str(data_dir))
        if not os.path.isdir(data_dir):
            raise UserError(f"data dir {data_dir} does not exist or is not a folder")
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if key in ("cifar10", "cifar100"):
        data = _load_cifar(key, split, data_dir, download, cache)
    elif key == "fashion_mnist":
        data = _load_fashion_mnist(split, data_dir, download, cache)
    elif key == "digits":
        data = _load_digits(split)
    else:
        if data_dir is None:
            raise UserError("dataset 'imagefolder' needs a data dir (a folder of class folders)")
        data = _load_imagefolder(data_dir, split, image_size or 32, test_fraction)
    if image_size is not None and key != "imagefolder":
        data = replace(data, images=resize_images(data.images, int(image_size)))
    logger.info("loaded %s/%s: %d images %s, %d classes", key, split, len(data),
                tuple(data.images.shape[1:]), data.num_classes)
    return data


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


# ----------------------------------------------------------------------------- imagefolder

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
