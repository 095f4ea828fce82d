"""Draw a cell as a graph (DARTS Fig. 4/5 style, ENAS Fig. 7).

Any space hands over its cells as :class:`~shared_model.spaces.CellGraph`
objects (``space.graphs(arch)``): labelled nodes (inputs, computed nodes, the
output) and edges labelled with their op. For a genotype the nodes are the cell
inputs ``c_{k-2}`` and ``c_{k-1}``, the computed nodes ``node 2 .. node n+1``
(the genotype's indices, as ``enas show`` prints them) and the output ``c_{k}``;
each genotype entry is an edge labelled with its op and every concatenated
node has an unlabelled edge to ``c_{k}``.

Rendering uses graphviz ``dot`` when it is on PATH. Otherwise a pure-Python
layered layout (:mod:`enas.runs.draw_layout`: every edge in its own lane, op labels
in their own slots, never through a box; a ``"chain"`` graph such as the macro
network is one box per row with its skips as buses on the right) is drawn with PIL (PNG) and as
hand-written SVG, so drawing never needs a system binary. Files are written
atomically with the usual permissions of new files (``0644`` under umask 022).
"""
from __future__ import annotations

import io
import logging
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, List, Optional, Tuple, Union
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from enas.runs.checkpoint import atomic_write_bytes
from enas.runs.draw_layout import MARGIN, Layout, chain_layout, layout, sample
from enas.errors import UserError
from shared_model.genotype import CELL_TYPES, Genotype
from shared_model.spaces import CellGraph
from shared_model.spaces.cell import genotype_graph

logger = logging.getLogger(__name__)

_IN_FILL, _NODE_FILL, _OUT_FILL = "#c1ffc1", "#add8e6", "#eee8aa"
_FONT_SIZE = 14
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


# -- built-in renderer (layout: enas.runs.draw_layout) -----------------------------
_FILLS = {"input": _IN_FILL, "node": _NODE_FILL, "output": _OUT_FILL}
_SCALE = 2  # PNGs are drawn at twice the size and scaled down: smooth lines and text
_DOT = 3.5  # radius of a skip-bus junction dot


def _font(size: int = _FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed bitmap font
        return ImageFont.load_default()


def _text_size(font, text: str) -> Tuple[int, int]:
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _arrow_head(segs: List, size: float = 9.0) -> List[Point]:
    """A filled triangle at the end of the last segment, pointing along it."""
    last = segs[-1]
    (bx, by), (ax, ay) = last[-1], last[-2]
    norm = math.hypot(bx - ax, by - ay) or 1.0
    dx, dy = (bx - ax) / norm, (by - ay) / norm
    return [(bx, by), (bx - size * dx + 0.45 * size * dy, by - size * dy - 0.45 * size * dx),
            (bx - size * dx - 0.45 * size * dy, by - size * dy + 0.45 * size * dx)]


def _layout(graph: CellGraph, font) -> Layout:
    place = chain_layout if graph.layout == "chain" else layout
    return place(graph, lambda text: _text_size(font, text))


def _draw_pil(lay: Layout) -> Image.Image:
    k = _SCALE
    font = _font(_FONT_SIZE * k)
    img = Image.new("RGB", (int(lay.width * k), int(lay.height * k)), "white")
    d = ImageDraw.Draw(img)
    d.text((MARGIN * k, MARGIN * k), lay.title, fill="black", font=font)
    for segs, label, tip in lay.edges:
        color = "black" if label else "#777777"
        for seg in segs:
            d.line([(x * k, y * k) for x, y in sample(seg)], fill=color, width=2 * k, joint="curve")
        d.polygon([(x * k, y * k) for x, y in _arrow_head(segs)], fill=color)
    for x, y in lay.dots:
        d.ellipse(((x - _DOT) * k, (y - _DOT) * k, (x + _DOT) * k, (y + _DOT) * k), fill="#444444")
    for it in lay.items:
        x0, y0, x1, y1 = ((it.x - it.w / 2) * k, (it.y - it.h / 2) * k, (it.x + it.w / 2) * k, (it.y + it.h / 2) * k)
        if it.kind == "node":
            d.rounded_rectangle((x0, y0, x1, y1), radius=8 * k, fill=_FILLS[lay.node_kinds[it.node]],
                                outline="black", width=2 * k)
        elif it.kind == "label":
            d.rounded_rectangle((x0, y0, x1, y1), radius=4 * k, fill="white", outline="#999999", width=k)
        if it.text:
            d.text((it.x * k, it.y * k), it.text, fill="black", font=font, anchor="mm")
    return img.resize((int(lay.width), int(lay.height)), Image.LANCZOS)


def _svg(lay: Layout) -> str:
    fmt = "{:.1f}".format
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
           f'width="{fmt(lay.width)}" height="{fmt(lay.height)}" viewBox="0 0 {fmt(lay.width)} {fmt(lay.height)}" '
           f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="{_FONT_SIZE}">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{MARGIN}" y="{MARGIN}" dominant-baseline="hanging">{escape(lay.title)}</text>']
    for segs, label, tip in lay.edges:
        color = "black" if label else "#777777"
        path = []
        for seg in segs:
            pts = " ".join(f"{fmt(x)},{fmt(y)}" for x, y in seg[2:])
            path.append(f"M {fmt(seg[1][0])},{fmt(seg[1][1])} {seg[0]} {pts}")
        head = " ".join(f"{fmt(x)},{fmt(y)}" for x, y in _arrow_head(segs))
        out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.append(f'<polygon points="{head}" fill="{color}"/>')
    for x, y in lay.dots:
        out.append(f'<circle cx="{fmt(x)}" cy="{fmt(y)}" r="{_DOT}" fill="#444444"/>')
    for it in lay.items:
        x0, y0 = it.x - it.w / 2, it.y - it.h / 2
        if it.kind == "node":
            out.append(f'<rect x="{fmt(x0)}" y="{fmt(y0)}" width="{fmt(it.w)}" height="{fmt(it.h)}" rx="8" '
                       f'fill="{_FILLS[lay.node_kinds[it.node]]}" stroke="black" stroke-width="2"/>')
        elif it.kind == "label":
            out.append(f'<rect x="{fmt(x0)}" y="{fmt(y0)}" width="{fmt(it.w)}" height="{fmt(it.h)}" rx="4" '
                       'fill="white" stroke="#999999" stroke-width="1"/>')
        if it.text:
            out.append(f'<text x="{fmt(it.x)}" y="{fmt(it.y)}" text-anchor="middle" '
                       f'dominant-baseline="central">{escape(it.text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def graph_image(graph: CellGraph) -> Image.Image:
    """A cell graph drawn by the pure-Python renderer as an RGB PIL image."""
    return _draw_pil(_layout(graph, _font()))


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
    lay, written = None, []
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
            if lay is None:
                lay = _layout(graph, _font())
            if f == "svg":
                data = _svg(lay).encode("utf-8")
            else:
                buf = io.BytesIO()
                _draw_pil(lay).save(buf, format="PNG")
                data = buf.getvalue()
        atomic_write_bytes(path, data)
        written.append(path)
        logger.debug("wrote %s", path)
    return written
