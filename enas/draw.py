"""Draw a cell as a graph (DARTS Fig. 4/5 style, ENAS Fig. 7).

Any space hands over its cells as :class:`~shared_model.spaces.CellGraph`
objects (``space.graphs(arch)``): labelled nodes (inputs, computed nodes, the
output) and edges labelled with their op. For a genotype the nodes are the cell
inputs ``c_{k-2}`` and ``c_{k-1}``, the computed nodes ``0 .. n-1`` and the
output ``c_{k}``; each genotype entry is an edge labelled with its op and every
concatenated node has an unlabelled edge to ``c_{k}``.

Rendering uses graphviz ``dot`` when it is on PATH. Otherwise a pure-Python
renderer lays the nodes out in columns by depth and draws them with PIL
(PNG) and as hand-written SVG text, so drawing never needs a system binary.
Files are written atomically (temporary file, then ``os.replace``).
"""
from __future__ import annotations

import io
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from enas.errors import UserError
from shared_model.genotype import CELL_TYPES, Genotype
from shared_model.spaces import CellGraph
from shared_model.spaces.cell import genotype_graph

logger = logging.getLogger(__name__)

_IN_FILL, _NODE_FILL, _OUT_FILL = "#c1ffc1", "#add8e6", "#eee8aa"
_FONT_SIZE = 14
_BOX_H, _ROW_GAP, _MARGIN, _PAD = 44, 64, 24, 12
Point = Tuple[float, float]


def _check_cell_type(cell_type: str) -> None:
    if cell_type not in CELL_TYPES:
        raise ValueError(f"cell_type must be one of {CELL_TYPES}, got {cell_type!r}")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def graph_to_dot(graph: CellGraph, name: str = "cell") -> str:
    """Graphviz DOT text for one cell graph."""
    fills = {"input": _IN_FILL, "node": _NODE_FILL, "output": _OUT_FILL}
    lines = [
        f"digraph {name} {{",
        f"  rankdir={'TB' if graph.layout == 'chain' else 'LR'};",
        '  node [shape=rect, style="filled,rounded", fontname="helvetica", penwidth=2];',
        '  edge [fontname="helvetica"];',
    ]
    for label, kind in zip(graph.labels, graph.kinds):
        lines.append(f'  {_quote(label)} [fillcolor="{fills[kind]}"];')
    # Pin the inputs to the first column and the output to the last.
    inputs = [_quote(lb) for lb, k in zip(graph.labels, graph.kinds) if k == "input"]
    outputs = [_quote(lb) for lb, k in zip(graph.labels, graph.kinds) if k == "output"]
    lines.append(f"  {{ rank=source; {'; '.join(inputs)}; }}")
    lines.append(f"  {{ rank=sink; {'; '.join(outputs)}; }}")
    for src, dst, op in graph.edges:
        attr = f"label={_quote(op)}" if op is not None else 'color="gray40"'
        lines.append(f"  {_quote(graph.labels[src])} -> {_quote(graph.labels[dst])} [{attr}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def cell_to_dot(genotype: Genotype, cell_type: str) -> str:
    """Graphviz DOT text for one cell (``"normal"`` or ``"reduce"``) of a genotype."""
    _check_cell_type(cell_type)
    return graph_to_dot(genotype_graph(genotype, cell_type), cell_type)


# -- pure-Python layout --------------------------------------------------------
@dataclass
class _Box:
    label: str
    x: float
    y: float
    w: float
    h: float
    fill: str
    out_edges: List[int] = field(default_factory=list)
    in_edges: List[int] = field(default_factory=list)


@dataclass
class _Edge:
    src: int
    dst: int
    label: Optional[str]
    points: List[Point] = field(default_factory=list)
    label_at: Point = (0.0, 0.0)


@dataclass
class _Layout:
    width: int
    height: int
    title: str
    boxes: List[_Box]
    edges: List[_Edge]


def _font(size: int = _FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed bitmap font
        return ImageFont.load_default()


def _text_size(font, text: str) -> Tuple[int, int]:
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _bezier(p0: Point, p1: Point, p2: Point, steps: int = 24) -> List[Point]:
    return [((1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t * t * p2[0],
             (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t * t * p2[1])
            for t in (s / steps for s in range(steps + 1))]


def _chain_layout(graph: CellGraph, font) -> _Layout:
    """One node per row, top to bottom; an edge between neighbours is a short vertical
    arrow, a longer one (a skip) an arc on the right whose bow grows with the rows it spans."""
    fills = {"input": _IN_FILL, "node": _NODE_FILL, "output": _OUT_FILL}
    box_w = max(_text_size(font, s)[0] for s in graph.labels) + 2 * _PAD + 24
    pitch = _BOX_H + _ROW_GAP // 2
    top0 = _MARGIN + _text_size(font, "Ag")[1] + _PAD
    boxes = [_Box(label, _MARGIN, top0 + i * pitch, box_w, _BOX_H, fills[kind])
             for i, (label, kind) in enumerate(zip(graph.labels, graph.kinds))]
    edges = [_Edge(src, dst, op) for src, dst, op in graph.edges]
    # Right-side ports, spread along each box by the far end's row so arcs nest instead of crossing.
    side: Dict[int, List[Tuple[int, int]]] = {}
    for k, e in enumerate(edges):
        if abs(e.dst - e.src) > 1:
            side.setdefault(e.src, []).append((-e.dst, k))
            side.setdefault(e.dst, []).append((e.src, k))
    ports: Dict[Tuple[int, int], Point] = {}
    for node, items in side.items():
        b = boxes[node]
        for rank, (_, k) in enumerate(sorted(items)):
            ports[(k, node)] = (b.x + b.w, b.y + b.h * (rank + 1) / (len(items) + 1))
    reach = 0.0
    for k, e in enumerate(edges):
        a, b = boxes[e.src], boxes[e.dst]
        if abs(e.dst - e.src) <= 1:
            e.points = [(a.x + a.w / 2, a.y + a.h), (b.x + b.w / 2, b.y)]
            continue
        p0, p2 = ports[(k, e.src)], ports[(k, e.dst)]
        bow = 28.0 + 28.0 * (abs(e.dst - e.src) - 1)
        e.points = _bezier(p0, (a.x + a.w + bow, (p0[1] + p2[1]) / 2), p2)
        reach = max(reach, max(x for x, _ in e.points))
    _place_labels(boxes, edges, font)
    width = int(max(reach, _MARGIN + box_w) + _MARGIN)
    height = int(boxes[-1].y + _BOX_H + _MARGIN) if boxes else 2 * _MARGIN
    return _Layout(width, height, graph.title, boxes, edges)


def _layout(graph: CellGraph, font) -> _Layout:
    if graph.layout == "chain":
        return _chain_layout(graph, font)
    labels = list(graph.labels)
    # Column = longest path from the inputs, so every edge points rightwards; the
    # output goes one column right of everything.
    level: List[int] = []
    for i, kind in enumerate(graph.kinds):
        if kind == "input":
            level.append(0)
        elif kind == "output":
            level.append(max(level, default=0) + 1)
        else:
            level.append(1 + max((level[s] for s, d, _ in graph.edges if d == i), default=0))
    edges = [_Edge(src, dst, op) for src, dst, op in graph.edges]
    fills = {"input": _IN_FILL, "node": _NODE_FILL, "output": _OUT_FILL}

    box_w = max(_text_size(font, s)[0] for s in labels) + 2 * _PAD + 24
    gap = 2 * max([_text_size(font, op)[0] for _, _, op in graph.edges if op] or [0]) + 2 * _PAD
    columns: Dict[int, List[int]] = {}
    for i, lv in enumerate(level):
        columns.setdefault(lv, []).append(i)
    tallest = max(len(col) for col in columns.values())
    title_h = _text_size(font, "Ag")[1] + _PAD
    inner_h = tallest * _BOX_H + (tallest - 1) * _ROW_GAP
    top0 = _MARGIN + title_h
    boxes: List[_Box] = [None] * len(labels)  # type: ignore[list-item]
    for lv, col in columns.items():
        # Spread short columns over the full height: fewer edges bunch up.
        pitch = (inner_h + _ROW_GAP) / len(col)
        for r, i in enumerate(col):
            fill = fills[graph.kinds[i]]
            y = top0 + (r + 0.5) * pitch - (_BOX_H + _ROW_GAP) / 2
            boxes[i] = _Box(labels[i], _MARGIN + lv * (box_w + gap), y, box_w, _BOX_H, fill)
    width = int(2 * _MARGIN + (max(level) + 1) * box_w + max(level) * gap)

    for e_idx, e in enumerate(edges):
        boxes[e.src].out_edges.append(e_idx)
        boxes[e.dst].in_edges.append(e_idx)
    # Spread ports along the box sides, ordered by the far end's height, so
    # parallel edges (a node reading one input twice) stay apart.
    ports: Dict[Tuple[int, str], Point] = {}
    for b in boxes:
        for side, idxs, far in (("out", b.out_edges, lambda e: boxes[e.dst].y),
                                ("in", b.in_edges, lambda e: boxes[e.src].y)):
            ordered = sorted(idxs, key=lambda i: (far(edges[i]), i))
            for rank, e_idx in enumerate(ordered):
                y = b.y + b.h * (rank + 1) / (len(ordered) + 1)
                ports[(e_idx, side)] = (b.x + b.w if side == "out" else b.x, y)
    mid_y = top0 + inner_h / 2
    for e_idx, e in enumerate(edges):
        p0, p2 = ports[(e_idx, "out")], ports[(e_idx, "in")]
        span = level[e.dst] - level[e.src]
        mid = ((p0[0] + p2[0]) / 2, (p0[1] + p2[1]) / 2)
        # Edges that skip columns bow away from the centre so they pass
        # around, not through, the boxes in between.
        bow = 0.0 if span <= 1 else (_BOX_H + _ROW_GAP) * (span - 1) * 0.8
        sign = -1.0 if mid[1] <= mid_y else 1.0
        e.points = _bezier(p0, (mid[0], mid[1] + sign * bow), p2)
    _place_labels(boxes, edges, font)
    # Fit the canvas to whatever the bowed edges and labels reach.
    ys = [y for e in edges for _, y in e.points] + [b.y for b in boxes] + [b.y + b.h for b in boxes]
    ys += [e.label_at[1] + sgn * _BOX_H / 2 for e in edges if e.label for sgn in (-1, 1)]
    shift = max(0.0, _MARGIN + title_h - min(ys))
    for b in boxes:
        b.y += shift
    for e in edges:
        e.points = [(x, y + shift) for x, y in e.points]
        e.label_at = (e.label_at[0], e.label_at[1] + shift)
    height = int(max(ys) + shift + _MARGIN)
    return _Layout(width, height, graph.title, boxes, edges)


def _point_at(points: Sequence[Point], t: float) -> Point:
    return points[min(len(points) - 1, int(round(t * (len(points) - 1))))]


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _place_labels(boxes: Sequence[_Box], edges: Sequence[_Edge], font) -> None:
    """Greedily slide each op label along its edge to the least crowded spot.

    Spots past the middle come first: near the source many edges fan out
    from one port and a label there is ambiguous.
    """
    taken = [(b.x - 4, b.y - 4, b.x + b.w + 4, b.y + b.h + 4) for b in boxes]
    for e in edges:
        if not e.label:
            continue
        tw, th = _text_size(font, e.label)
        best = None
        for t in (0.6, 0.7, 0.5, 0.75, 0.4, 0.8, 0.65, 0.55, 0.3, 0.45, 0.35, 0.25, 0.2):
            cx, cy = _point_at(e.points, t)
            rect = (cx - tw / 2 - 4, cy - th / 2 - 4, cx + tw / 2 + 4, cy + th / 2 + 4)
            score = sum(_overlap(rect, r) for r in taken)
            if best is None or score < best[0]:
                best = (score, (cx, cy), rect)
            if score == 0:
                break
        e.label_at = best[1]
        taken.append(best[2])


def _arrow_head(points: Sequence[Point], size: float = 9.0) -> List[Point]:
    (x0, y0), (x1, y1) = points[-2], points[-1]
    ang = math.atan2(y1 - y0, x1 - x0)
    return [(x1, y1),
            (x1 - size * math.cos(ang - 0.4), y1 - size * math.sin(ang - 0.4)),
            (x1 - size * math.cos(ang + 0.4), y1 - size * math.sin(ang + 0.4))]


def _draw_pil(layout: _Layout, font) -> Image.Image:
    img = Image.new("RGB", (layout.width, layout.height), "white")
    d = ImageDraw.Draw(img)
    d.text((_MARGIN, _MARGIN), layout.title, fill="black", font=font)
    for e in layout.edges:
        color = "black" if e.label else "#666666"
        d.line(e.points, fill=color, width=2, joint="curve")
        d.polygon(_arrow_head(e.points), fill=color)
    for b in layout.boxes:
        d.rounded_rectangle((b.x, b.y, b.x + b.w, b.y + b.h), radius=8, fill=b.fill, outline="black", width=2)
        tw, th = _text_size(font, b.label)
        d.text((b.x + (b.w - tw) / 2, b.y + (b.h - th) / 2), b.label, fill="black", font=font, anchor="lt")
    for e in layout.edges:
        if e.label:
            (cx, cy), (tw, th) = e.label_at, _text_size(font, e.label)
            d.rectangle((cx - tw / 2 - 3, cy - th / 2 - 3, cx + tw / 2 + 3, cy + th / 2 + 3), fill="white")
            d.text((cx - tw / 2, cy - th / 2), e.label, fill="black", font=font, anchor="lt")
    return img


def _svg(layout: _Layout, font) -> str:
    fmt = "{:.1f}".format
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
           f'width="{layout.width}" height="{layout.height}" viewBox="0 0 {layout.width} {layout.height}" '
           f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="{_FONT_SIZE}">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{_MARGIN}" y="{_MARGIN}" dominant-baseline="hanging">{escape(layout.title)}</text>']
    for e in layout.edges:
        color = "black" if e.label else "#666666"
        pts = " ".join(f"{fmt(x)},{fmt(y)}" for x, y in e.points)
        head = " ".join(f"{fmt(x)},{fmt(y)}" for x, y in _arrow_head(e.points))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.append(f'<polygon points="{head}" fill="{color}"/>')
    for b in layout.boxes:
        out.append(f'<rect x="{fmt(b.x)}" y="{fmt(b.y)}" width="{fmt(b.w)}" height="{fmt(b.h)}" rx="8" '
                   f'fill="{b.fill}" stroke="black" stroke-width="2"/>')
        out.append(f'<text x="{fmt(b.x + b.w / 2)}" y="{fmt(b.y + b.h / 2)}" text-anchor="middle" '
                   f'dominant-baseline="central">{escape(b.label)}</text>')
    for e in layout.edges:
        if e.label:
            (cx, cy), (tw, th) = e.label_at, _text_size(font, e.label)
            out.append(f'<rect x="{fmt(cx - tw / 2 - 3)}" y="{fmt(cy - th / 2 - 3)}" width="{fmt(tw + 6)}" '
                       f'height="{fmt(th + 6)}" fill="white"/>')
            out.append(f'<text x="{fmt(cx)}" y="{fmt(cy)}" text-anchor="middle" '
                       f'dominant-baseline="central">{escape(e.label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def graph_image(graph: CellGraph) -> Image.Image:
    """A cell graph drawn by the pure-Python renderer as an RGB PIL image."""
    font = _font()
    return _draw_pil(_layout(graph, font), font)


def graph_image_array(graph: CellGraph) -> np.ndarray:
    """A cell graph as an ``(H, W, 3)`` uint8 array (TensorBoard ``add_image(..., dataformats="HWC")``)."""
    return np.asarray(graph_image(graph), dtype=np.uint8)


def cell_image(genotype: Genotype, cell_type: str) -> Image.Image:
    """One cell of a genotype drawn by the pure-Python renderer as an RGB PIL image."""
    _check_cell_type(cell_type)
    return graph_image(genotype_graph(genotype, cell_type))


def cell_image_array(genotype: Genotype, cell_type: str) -> np.ndarray:
    """One cell of a genotype as an ``(H, W, 3)`` uint8 array."""
    return np.asarray(cell_image(genotype, cell_type), dtype=np.uint8)


# -- files ---------------------------------------------------------------------
def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _render_with_dot(dot_text: str, fmt: str) -> bytes:
    try:
        proc = subprocess.run(["dot", f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True,
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"graphviz dot failed: {exc}") from None
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"graphviz dot -T{fmt} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def render_cell(genotype: Genotype, cell_type: str, path_stem: Union[str, Path],
                fmt: Union[str, Iterable[str]] = ("png", "svg"), use_dot: Optional[bool] = None) -> List[Path]:
    """Draw one cell (``"normal"`` or ``"reduce"``) of a genotype; see :func:`render_graph`."""
    _check_cell_type(cell_type)
    return render_graph(genotype_graph(genotype, cell_type), path_stem, fmt, use_dot, name=cell_type)


def render_graph(graph: CellGraph, path_stem: Union[str, Path], fmt: Union[str, Iterable[str]] = ("png", "svg"),
                 use_dot: Optional[bool] = None, name: str = "cell") -> List[Path]:
    """Draw one cell graph to ``<path_stem>.<fmt>`` for each format.

    Args:
        graph: the cell (``space.graphs(arch)[cell]``).
        path_stem: output path without extension; parent folders are created.
        fmt: one format or several. The pure-Python renderer writes ``png``
            and ``svg``; graphviz accepts its own formats too (``pdf``...).
        use_dot: True requires graphviz ``dot``; False never uses it; None
            uses it when it is on PATH and falls back if it fails.

    Returns:
        The written paths, in ``fmt`` order.

    Raises:
        UserError: ``use_dot=True`` without a working ``dot``, or a format the
            chosen renderer cannot write.
    """
    formats = [fmt] if isinstance(fmt, str) else list(fmt)
    for f in formats:
        if not re.fullmatch(r"[a-z0-9]+", f):
            raise UserError(f"invalid image format {f!r}")
    have_dot = shutil.which("dot") is not None
    if use_dot and not have_dot:
        raise UserError("graphviz 'dot' is not on PATH; install graphviz or draw without it (use_dot=False)")
    dot = have_dot and use_dot is not False
    dot_text = graph_to_dot(graph, name)
    font, layout, written = None, None, []
    for f in formats:
        path = Path(f"{path_stem}.{f}")
        data = None
        if dot:
            try:
                data = _render_with_dot(dot_text, f)
            except RuntimeError as exc:
                if use_dot:
                    raise UserError(str(exc)) from None
                logger.warning("%s; using the built-in renderer", exc)
        if data is None:
            if f not in ("png", "svg"):
                raise UserError(f"the built-in renderer writes png or svg, not {f!r} (graphviz can)")
            if layout is None:
                font = _font()
                layout = _layout(graph, font)
            if f == "svg":
                data = _svg(layout, font).encode("utf-8")
            else:
                buf = io.BytesIO()
                _draw_pil(layout, font).save(buf, format="PNG")
                data = buf.getvalue()
        _atomic_write(path, data)
        written.append(path)
        logger.debug("wrote %s", path)
    return written
