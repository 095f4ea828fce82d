"""The accuracy-cost Pareto front of scored candidates, and its scatter image for TensorBoard.

MnasNet (Sec. 1) argues for searching the Pareto front rather than one
point: a candidate is on the front when no other candidate is at least as
accurate and at most as costly while strictly better in one of the two.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def pareto_front(points: Sequence[Dict[str, Any]], acc_key: str = "valid_acc", cost_key: str = "cost") -> List[int]:
    """Indices of the non-dominated points (higher ``acc_key``, lower ``cost_key``), cheapest first.

    Points with a NaN accuracy or without a cost are left out; of exact
    duplicates the first is kept.
    """
    valid = [i for i, p in enumerate(points)
             if p.get(cost_key) is not None and p.get(acc_key) == p.get(acc_key)]
    order = sorted(valid, key=lambda i: (points[i][cost_key], -points[i][acc_key], i))
    front, best = [], -float("inf")
    for i in order:
        if points[i][acc_key] > best:
            front.append(i)
            best = points[i][acc_key]
    return front


def pareto_image(points: Sequence[Dict[str, Any]], front: Sequence[int], unit: str,
                 target: Optional[float] = None, acc_key: str = "valid_acc", cost_key: str = "cost",
                 size: int = 360) -> np.ndarray:
    """Scatter of accuracy against cost as an ``(H, W, 3)`` uint8 image.

    Grey dots: scored candidates; red: the Pareto front (joined by a line);
    a dashed blue vertical line: the target.
    """
    pts = [(p[cost_key], p[acc_key]) for p in points
           if p.get(cost_key) is not None and p.get(acc_key) == p.get(acc_key)]
    font = ImageFont.load_default()
    left, bottom, top, right = 56, 36, 24, 16
    img = Image.new("RGB", (size + left + right, size + top + bottom), "white")
    draw = ImageDraw.Draw(img)
    costs = [c for c, _ in pts] + ([target] if target else [])
    accs = [a for _, a in pts]
    if not pts:
        draw.text((left, top), "no scored candidates", fill="black", font=font)
        return np.asarray(img, dtype=np.uint8).copy()
    c_lo, c_hi = min(costs), max(costs)
    a_lo, a_hi = min(accs), max(accs)
    c_pad, a_pad = (c_hi - c_lo) * 0.05 or abs(c_hi) * 0.05 or 1.0, (a_hi - a_lo) * 0.05 or 0.01
    c_lo, c_hi, a_lo, a_hi = c_lo - c_pad, c_hi + c_pad, a_lo - a_pad, a_hi + a_pad

    def xy(cost: float, acc: float):
        return (left + (cost - c_lo) / (c_hi - c_lo) * size, top + (a_hi - acc) / (a_hi - a_lo) * size)

    draw.rectangle([left, top, left + size, top + size], outline="black")
    for frac in (0.0, 0.5, 1.0):
        c = c_lo + frac * (c_hi - c_lo)
        a = a_lo + frac * (a_hi - a_lo)
        draw.text((left + frac * size - 16, top + size + 4), f"{c:.3g}", fill="black", font=font)
        draw.text((4, top + (1 - frac) * size - 6), f"{a:.3f}", fill="black", font=font)
    draw.text((left + size // 2 - 30, top + size + 18), f"cost ({unit})", fill="black", font=font)
    draw.text((left, 4), "search-time accuracy vs cost; red: Pareto front", fill="black", font=font)
    if target:
        x, _ = xy(target, a_lo)
        for y in range(top, top + size, 8):
            draw.line([x, y, x, min(y + 4, top + size)], fill=(40, 80, 220), width=2)
    for c, a in pts:
        x, y = xy(c, a)
        draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=(150, 150, 150))
    line = [xy(points[i][cost_key], points[i][acc_key]) for i in front]
    if len(line) > 1:
        draw.line(line, fill=(220, 40, 40), width=1)
    for x, y in line:
        draw.ellipse([x - 3.5, y - 3.5, x + 3.5, y + 3.5], fill=(220, 40, 40))
    return np.asarray(img, dtype=np.uint8).copy()
