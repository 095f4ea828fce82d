"""Heatmap images of DARTS architecture weights for TensorBoard (no plotting library needed)."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont


_PALETTE = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)],
                    dtype=np.float64)


def render_heatmap(table: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
                   title: str = "", cell_w: int = 30, cell_h: int = 16) -> np.ndarray:
    """Draw a ``(rows, cols)`` table in ``[0, 1]`` as an annotated ``(H, W, 3)`` uint8 heatmap.

    Colour spans the table's own ``[min, max]`` (early DARTS weights are all
    close to ``1/K``), and the title states that range; each cell shows its value.
    """
    table = np.asarray(table, dtype=np.float64)
    if table.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"table {table.shape} does not match {len(row_labels)} x {len(col_labels)} labels")
    lo_v, hi_v = float(table.min()), float(table.max())
    title = f"{title}  [{lo_v:.3f}, {hi_v:.3f}]".strip()
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text: str) -> Tuple[int, int]:
        box = probe.textbbox((0, 0), text, font=font)
        return box[2] - min(box[0], 0), box[3]

    left = max(size(t)[0] for t in row_labels) + 8
    title_h = size(title)[1] + 6
    top = title_h + max(size(t)[0] for t in col_labels) + 6
    rows, cols = table.shape
    img = Image.new("RGB", (left + cols * cell_w + 4, top + rows * cell_h + 4), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), title, fill="black", font=font)
    for c, label in enumerate(col_labels):
        w, h = size(label)
        tile = Image.new("RGB", (w + 2, h + 2), "white")
        ImageDraw.Draw(tile).text((1, 0), label, fill="black", font=font)
        tile = tile.rotate(90, expand=True)  # read bottom-up, like matplotlib's vertical ticks
        img.paste(tile, (left + c * cell_w + (cell_w - tile.width) // 2, top - tile.height - 3))
    scaled = (table - lo_v) / max(hi_v - lo_v, 1e-12)  # (rows, cols) in [0, 1]
    pos = np.clip(scaled, 0.0, 1.0) * (len(_PALETTE) - 1)
    lo = np.minimum(pos.astype(int), len(_PALETTE) - 2)
    colours = _PALETTE[lo] + (pos - lo)[..., None] * (_PALETTE[lo + 1] - _PALETTE[lo])  # (rows, cols, 3)
    for r, label in enumerate(row_labels):
        y = top + r * cell_h
        draw.text((4, y + (cell_h - size(label)[1]) // 2), label, fill="black", font=font)
        for c in range(cols):
            x = left + c * cell_w
            rgb = tuple(int(round(v)) for v in colours[r, c])
            draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=rgb)
            text = f"{table[r, c]:.2f}".lstrip("0") or "0"
            tw, th = size(text)
            ink = "black" if scaled[r, c] > 0.6 else "white"
            draw.text((x + (cell_w - tw) // 2, y + (cell_h - th) // 2), text, fill=ink, font=font)
    return np.asarray(img, dtype=np.uint8).copy()
