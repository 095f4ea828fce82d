"""Cell drawings: DOT text, the pure-Python renderer and graphviz."""
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from enas.runs import draw
from enas.runs.draw import cell_image_array, cell_to_dot, render_cell
from enas.errors import UserError
from shared_model.zoo import ZOO

HAVE_DOT = shutil.which("dot") is not None


def _check_files(paths):
    png, svg = paths
    assert png.suffix == ".png" and svg.suffix == ".svg"
    with Image.open(png) as img:
        img.load()
        assert img.width > 50 and img.height > 50
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    return ET.tostring(root, encoding="unicode")


def test_dot_text_has_nodes_and_labelled_edges():
    g = ZOO["ENAS_RELEASED"]
    text = cell_to_dot(g, "reduce")
    assert text.startswith("digraph reduce {") and text.rstrip().endswith("}")
    for name in ("c_{k-2}", "c_{k-1}", "node 2", "node 6", "c_{k}"):
        assert f'"{name}"' in text
    assert text.count("->") == len(g.reduce) + len(g.reduce_concat)
    assert text.count("label=") == len(g.reduce)
    assert '"c_{k-2}" -> "node 3" [label="max_pool_3x3"]' in text


@pytest.mark.parametrize("name,cell", [("DARTS_V2", "normal"), ("AmoebaNet", "reduce"), ("ENAS_RELEASED", "normal")])
def test_builtin_renderer_writes_valid_png_and_svg(tmp_path, name, cell):
    paths = render_cell(ZOO[name], cell, tmp_path / "sub" / f"{name}_{cell}", use_dot=False)
    svg_text = _check_files(paths)
    for op, _ in ZOO[name].cell(cell)[0]:
        assert op in svg_text
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == sorted(p.name for p in paths)  # no temp files


@pytest.mark.skipif(not HAVE_DOT, reason="graphviz dot not installed")
def test_graphviz_renderer_writes_valid_png_and_svg(tmp_path):
    paths = render_cell(ZOO["DARTS_V2"], "normal", tmp_path / "cell", use_dot=True)
    assert "sep_conv_3x3" in _check_files(paths)


def test_use_dot_true_without_dot_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="dot"):
        render_cell(ZOO["DARTS_V2"], "normal", tmp_path / "cell", use_dot=True)
    # Auto mode silently uses the built-in renderer.
    _check_files(render_cell(ZOO["DARTS_V2"], "normal", tmp_path / "cell"))


def test_dot_failure_falls_back_in_auto_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(draw.shutil, "which", lambda name: "/usr/bin/dot")

    def broken(text, fmt):
        raise RuntimeError("graphviz dot failed: boom")

    monkeypatch.setattr(draw, "_render_with_dot", broken)
    _check_files(render_cell(ZOO["PDARTS"], "reduce", tmp_path / "cell"))
    with pytest.raises(UserError, match="boom"):
        render_cell(ZOO["PDARTS"], "reduce", tmp_path / "cell", use_dot=True)


def test_builtin_renderer_rejects_other_formats(tmp_path):
    with pytest.raises(UserError, match="png or svg"):
        render_cell(ZOO["DARTS_V2"], "normal", tmp_path / "cell", fmt="pdf", use_dot=False)
    with pytest.raises(ValueError):
        render_cell(ZOO["DARTS_V2"], "reduction", tmp_path / "cell", use_dot=False)


def test_cell_image_array_is_hwc_uint8():
    arr = cell_image_array(ZOO["NASNet"], "normal")
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    assert arr.min() < 100 and arr.max() == 255  # something dark drawn on white


# ----------------------------------------------------------------------------- layout geometry

NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _all_graphs():
    from shared_model.spaces import get_space, space_for_arch

    for name, g in ZOO.items():
        for cell, graph in space_for_arch(g).graphs(g).items():
            yield f"{name}/{cell}", graph
    nb = get_space("nb201")
    yield "nb201", nb.graphs(nb.arch_from_string(NB201_ARCH))["cell"]


def _box(it, pad=0.0):
    return (it.x - it.w / 2 - pad, it.y - it.h / 2 - pad, it.x + it.w / 2 + pad, it.y + it.h / 2 + pad)


def _inside(p, box):
    return box[0] < p[0] < box[2] and box[1] < p[1] < box[3]


@pytest.mark.parametrize("name,graph", list(_all_graphs()), ids=lambda v: v if isinstance(v, str) else "")
def test_edges_never_cross_boxes_and_labels_never_overlap(name, graph):
    from enas.runs.draw_layout import sample

    lay = draw._layout(graph, draw._font())
    boxes = [it for it in lay.items if it.kind in ("node", "label")]
    for a in range(len(boxes)):  # boxes and labels are pairwise apart
        for b in range(a + 1, len(boxes)):
            x0, y0, x1, y1 = _box(boxes[a])
            u0, v0, u1, v1 = _box(boxes[b])
            assert min(x1, u1) <= max(x0, u0) or min(y1, v1) <= max(y0, v0), (name, boxes[a].text, boxes[b].text)
    for e, (segs, label, tip) in enumerate(lay.edges):
        src, dst, op = graph.edges[e]
        own = {graph.labels[src], graph.labels[dst]}
        points = [p for seg in segs for p in sample(seg, 60)]
        for it in boxes:
            if it.kind == "node" and it.text in own or it.kind == "label" and it.edge == e:
                continue
            hits = [p for p in points if _inside(p, _box(it, -1.0))]
            assert not hits, f"{name}: edge {graph.labels[src]} -> {graph.labels[dst]} crosses {it.text!r}"
        if op:  # the label sits on its own edge, right before the target
            mine = [it for it in lay.items if it.kind == "label" and it.edge == e]
            assert len(mine) == 1 and mine[0].text == op
            assert any(_inside(p, _box(mine[0], 0.5)) for p in points)
        target = next(it for it in lay.items if it.kind == "node" and it.node == dst)
        x0, y0, x1, y1 = _box(target)
        on_side = min(abs(tip[0] - x0), abs(tip[0] - x1), abs(tip[1] - y0), abs(tip[1] - y1)) < 1e-6
        assert on_side and x0 - 1e-6 <= tip[0] <= x1 + 1e-6 and y0 - 1e-6 <= tip[1] <= y1 + 1e-6  # ends on its box


def test_drawings_number_nodes_as_the_text_does():
    from shared_model.spaces.cell import describe_cell, genotype_graph

    g = ZOO["ENAS_RELEASED"]
    graph = genotype_graph(g, "reduce")
    text = " ".join(node["text"] for node in describe_cell(g, "reduce")["nodes"])
    computed = [lb for lb, kind in zip(graph.labels, graph.kinds) if kind == "node"]
    assert computed == [f"node {i}" for i in range(2, 7)] and all(lb in text for lb in computed)
    for src, dst, op in graph.edges:  # every drawn edge is a term of the text
        if op:
            assert f"{graph.labels[dst]} = " in text and f"{op}({graph.labels[src]})" in text


def test_drawing_files_have_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path in render_cell(ZOO["DARTS_V2"], "normal", tmp_path / "cell", use_dot=False):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_chain_layout_draws_every_skip_as_a_bus_of_right_angles():
    """The macro network: each skip leaves its source on the source's own lane and enters its
    target with a junction dot on that lane; no line runs through a box."""
    from enas.runs.draw_layout import chain_layout
    from shared_model.spaces import get_space

    space = get_space("macro")
    arch = ZOO["ENAS_MACRO"]
    graph = space.graphs(arch)["network"]
    lay = chain_layout(graph, lambda text: (7.0 * len(text), 14.0))
    boxes = [(it.x - it.w / 2, it.y - it.h / 2, it.x + it.w / 2, it.y + it.h / 2) for it in lay.items]
    right = max(b[2] for b in boxes)
    skips = [(s, d) for s, d, _ in graph.edges if d - s > 1]
    assert len(skips) == arch.skip_count() > 0
    lanes = {}
    for (s, d, _), (segs, _, tip) in zip(graph.edges, lay.edges):
        if d - s <= 1:
            continue
        (_, a0, a1), (_, b0, b1), (_, c0, c1) = segs
        assert a0[1] == a1[1] and b0[0] == b1[0] and c0[1] == c1[1]  # horizontal, vertical, horizontal
        assert a0 == (right, a0[1]) and boxes[s][1] < a0[1] < boxes[s][3]  # leaves its source box
        assert tip == c1 == (right, c1[1]) and boxes[d][1] < c1[1] < boxes[d][3]  # enters its target
        assert b0[0] > right  # the lane is right of every box
        lanes.setdefault(s, b0[0])
        assert lanes[s] == b0[0]  # one lane per source
        assert (b0[0], c0[1]) in lay.dots  # the junction that says this lane feeds this layer
    assert len(set(lanes.values())) == len(lanes)
    assert lay.width > max(lanes.values())
