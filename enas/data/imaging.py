"""Decode image files of any PIL mode into 8-bit arrays, and fit them to one size.

Used by the ``imagefolder`` source (:mod:`enas.data.sources`) and, for the
size fitting, by every dataset. What each mode becomes (README "Image folders"):

* 8-bit gray (``L``, ``1``) and colour (``RGB``, ``YCbCr``, ``CMYK``, ``LAB``,
  ``HSV``) are converted with PIL; palette images (``P``) by their palette.
* 16-bit gray (``I;16`` and its byte orders, and 32-bit ``I``, which is how
  16-bit files often load) is scaled from 0..65535 to 0..255, never clipped at
  255; ``F`` (float) is read as 0..1 when all values lie there, else as 0..255.
* Transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) is
  composited onto white, what a viewer shows on a white page.
* JPEG/TIFF EXIF orientation is applied.

An image counts as grayscale when its mode is a gray one or its three colour
channels are identical; :func:`fit` then resizes to ``(H, W)`` by ``stretch``,
``pad`` (keep the aspect ratio, pad with black) or ``crop`` (keep the aspect
ratio, centre crop), with PIL's antialiased bilinear filter.
"""
from __future__ import annotations

import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Tuple

import numpy as np

RESIZE_MODES = ("stretch", "pad", "crop")
_GRAY = ("1", "L")
_SIXTEEN = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


@dataclass
class Decoded:
    """One decoded image: ``array`` ``(h, w, 1 or 3)`` float32 in 0..255 and what was done to it."""

    array: np.ndarray
    mode: str
    gray: bool
    alpha: bool = False  # had transparent pixels (composited onto white)
    clipped: bool = False  # values outside the assumed range were clipped
    rotated: bool = False  # EXIF orientation applied


@contextmanager
def quiet_pil() -> Iterator[None]:
    """Silence PIL's warnings (e.g. about palette transparency) around a whole decode.

    Set once around the thread pool, not per image: ``warnings.catch_warnings``
    changes process-wide state and is not thread-safe.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"PIL(\..*)?")
        yield


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb`` (h, w, c) over a white background with ``alpha`` (h, w) in 0..255."""
    a = alpha[..., None] / 255.0
    return rgb * a + 255.0 * (1.0 - a)


def decode_image(path: Path) -> Decoded:
    """Read ``path`` into an 8-bit-range float array (see the module docstring).

    Raises:
        OSError, ValueError, SyntaxError: unreadable or undecodable file (the caller
            turns them into one ``UserError`` line naming the file).
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        rotated = False
        if im.getexif().get(0x0112, 1) not in (1, None):
            im, rotated = ImageOps.exif_transpose(im), True
        clipped, alpha = False, None
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info or im.palette.mode == "RGBA" else "RGB")
        elif mode in ("PA", "RGBa", "La"):
            im = im.convert("RGBA" if mode != "La" else "LA")
        if im.mode in _SIXTEEN or mode.startswith("I;16"):
            raw = np.asarray(im).astype(np.float64)
            clipped = bool(raw.min() < 0 or raw.max() > 65535)
            arr = np.clip(raw, 0, 65535) * (255.0 / 65535.0)
            arr = arr[..., None]
        elif im.mode == "F":
            raw = np.asarray(im).astype(np.float64)
            finite = np.nan_to_num(raw, nan=0.0, posinf=255.0, neginf=0.0)
            unit = finite.size > 0 and finite.min() >= 0.0 and finite.max() <= 1.0
            arr = finite * 255.0 if unit else finite
            clipped = bool(not unit and (arr.min() < 0 or arr.max() > 255)) or not np.isfinite(raw).all()
            arr = np.clip(arr, 0, 255)[..., None]
        elif im.mode in ("RGBA", "LA"):
            raw = np.asarray(im).astype(np.float64)
            color, alpha = raw[..., :-1], raw[..., -1]
            arr = _composite(color, alpha)
        elif im.mode in _GRAY:
            arr = np.asarray(im.convert("L")).astype(np.float64)[..., None]
        else:  # RGB, RGBX, CMYK, YCbCr, LAB, HSV, ...
            arr = np.asarray(im.convert("RGB")).astype(np.float64)
    has_alpha = alpha is not None and bool((alpha < 255).any())
    # Colour files whose three channels are identical hold gray pictures too.
    gray = arr.shape[-1] == 1 or (np.array_equal(arr[..., 0], arr[..., 1])
                                  and np.array_equal(arr[..., 1], arr[..., 2]))
    return Decoded(arr.astype(np.float32), mode, gray, has_alpha, clipped, rotated)


def to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """``(h, w, c)`` -> ``(h, w, channels)``: gray repeated to 3, colour to luminance (ITU-R 601-2, as PIL)."""
    if arr.shape[-1] == channels:
        return arr
    if channels == 3:
        return np.repeat(arr, 3, axis=-1)
    return (arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]


def fit(arr: np.ndarray, size: Tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """Resize ``(h, w, c)`` float array to ``size = (H, W)`` by ``mode`` (:data:`RESIZE_MODES`)."""
    from PIL import Image

    h, w = arr.shape[:2]
    H, W = size
    if (h, w) == (H, W):
        return arr
    if mode == "stretch":
        th, tw = H, W
    else:
        scale = min(H / h, W / w) if mode == "pad" else max(H / h, W / w)
        th, tw = max(1, round(h * scale)), max(1, round(w * scale))
        if mode == "pad":
            th, tw = min(th, H), min(tw, W)
        else:
            th, tw = max(th, H), max(tw, W)
    # PIL's bilinear filter widens its support when shrinking, i.e. it antialiases.
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., k]), mode="F")
                               .resize((tw, th), Image.BILINEAR)) for k in range(arr.shape[-1])], axis=-1)
    if mode == "stretch":
        return out
    if mode == "crop":
        top, left = (th - H) // 2, (tw - W) // 2
        return out[top:top + H, left:left + W]
    canvas = np.zeros((H, W, arr.shape[-1]), dtype=out.dtype)
    top, left = (H - th) // 2, (W - tw) // 2
    canvas[top:top + th, left:left + tw] = out
    return canvas


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """``(h, w, c)`` float in 0..255 -> ``(c, h, w)`` uint8, rounded."""
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def summarize(decoded: Sequence[Decoded], sizes: Sequence[Tuple[int, int]], size: Tuple[int, int],
              channels: int, channels_asked: bool, resize: str) -> str:
    """One line saying what the decode converted (logged, and kept in the run's data.json)."""
    modes = Counter(d.mode for d in decoded)
    parts = [f"decoded {len(decoded):,} images of all splits ("
             + ", ".join(f"{n:,} {m}" for m, n in modes.most_common()) + ")"]
    sixteen = sum(n for m, n in modes.items() if m.startswith("I"))
    if sixteen:
        parts.append(f"{sixteen:,} 16/32-bit scaled to 8 bits")
    if modes.get("F"):
        parts.append(f"{modes['F']:,} float read as 0..1 or 0..255")
    for flag, text in (("alpha", "with transparency composited onto white"), ("clipped", "with values clipped"),
                       ("rotated", "rotated by their EXIF orientation")):
        n = sum(getattr(d, flag) for d in decoded)
        if n:
            parts.append(f"{n:,} {text}")
    gray = sum(d.gray for d in decoded)
    if channels_asked:
        parts.append(f"{channels} channel(s) as asked (data.channels)")
    elif channels == 1:
        parts.append("all grayscale: 1 channel")
    elif gray:
        parts.append(f"{gray:,} grayscale repeated to 3 channels (data.channels=1 keeps gray)")
    else:
        parts.append("3 channels")
    other = sum(s != tuple(size) for s in sizes)
    if other:
        how = {"stretch": "stretched", "pad": "scaled and padded", "crop": "scaled and centre-cropped"}[resize]
        parts.append(f"{other:,} of other sizes {how} to {size[0]}x{size[1]} (data.resize={resize})")
    return "; ".join(parts)
