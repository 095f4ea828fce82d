"""Cell drawings: DOT text, the pure-Python renderer and graphviz."""
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from enas import draw
from enas.draw import cell_image_array, cell_to_dot, render_cell
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
    for name in ("c_{k-2}", "c_{k-1}", "0", "4", "c_{k}"):
        assert f'"{name}"' in text
    assert text.count("->") == len(g.reduce) + len(g.reduce_concat)
    assert text.count("label=") == len(g.reduce)
    assert '"c_{k-2}" -> "1" [label="max_pool_3x3"]' in text


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
