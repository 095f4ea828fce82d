"""Layered layout of a cell graph for the built-in renderer (no graphviz needed).

The classic Sugiyama scheme that graphviz ``dot`` also follows, left to right:

1. every node gets a column by its longest path from the inputs (outputs last);
2. an edge that spans columns gets one virtual item per column it crosses, so
   it runs through its own free lane instead of through the boxes in between;
   a labelled edge's op label is such an item too, in the lane just before its
   target, so labels never overlap a box, another label or a line;
3. the items of each column are ordered by the barycentre of their neighbours
   (fewest crossings kept) and placed vertically by isotonic regression (pool
   adjacent violators: as close to their neighbours as the spacing allows);
4. each edge is a chain of horizontal runs through its items joined by
   S-shaped cubic curves in the gaps between columns, where nothing else is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from shared_model.spaces import CellGraph

Point = Tuple[float, float]
#: A piece of an edge: ``("L", a, b)`` a straight line, ``("C", a, c1, c2, b)`` a cubic curve.
Segment = Tuple

BOX_H, BOX_PAD, ITEM_GAP, COL_GAP, LANE_H, MARGIN = 40.0, 14.0, 14.0, 46.0, 6.0, 20.0
LANE_GAP = 12.0  # between the skip buses of a chain layout


@dataclass
class Item:
    """One slot of a column: a node box, an op label or a bare lane of a long edge."""

    kind: str  # "node" | "label" | "lane"
    w: float
    h: float
    node: int = -1  # graph node of a box
    edge: int = -1  # graph edge of a label or lane
    text: str = ""
    y: float = 0.0  # centre
    x: float = 0.0  # centre
    col: Tuple[float, float] = (0.0, 0.0)  # left and right edge of its column
    prev: List[int] = field(default_factory=list)  # neighbouring item ids in the column before
    next: List[int] = field(default_factory=list)  # ... and after


@dataclass
class Layout:
    width: float
    height: float
    title: str
    items: List[Item]
    node_kinds: List[str]
    edges: List[Tuple[List[Segment], Optional[str], Point]]  # segments, label, arrow tip
    dots: List[Point] = field(default_factory=list)  # junctions of a chain layout's skip buses


def _levels(graph: CellGraph) -> List[int]:
    level: List[int] = []
    for i, kind in enumerate(graph.kinds):
        preds = [level[s] for s, d, _ in graph.edges if d == i and s < i]
        level.append(0 if kind == "input" else 1 + max(preds, default=0))
    last = max((lv for lv, k in zip(level, graph.kinds) if k != "output"), default=0) + 1
    return [max(lv, last) if k == "output" else lv for lv, k in zip(level, graph.kinds)]


def _pack(desired: Sequence[float], sizes: Sequence[float]) -> List[float]:
    """Centres closest (least squares) to ``desired`` keeping the order and the spacing."""
    offsets = [0.0]
    for a, b in zip(sizes, sizes[1:]):
        offsets.append(offsets[-1] + (a + b) / 2 + ITEM_GAP)
    target = [d - o for d, o in zip(desired, offsets)]
    blocks: List[List[float]] = []  # [mean, count]
    for t in target:
        blocks.append([t, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, n2 = blocks.pop()
            m1, n1 = blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    xs = [m for m, n in blocks for _ in range(int(n))]
    return [x + o for x, o in zip(xs, offsets)]


def _crossings(cols: List[List[int]], items: List[Item]) -> int:
    """Edge crossings between neighbouring columns; those right before a box count triple
    (a crossing where edges arrive is the one that makes a drawing misread)."""
    pos = {i: k for col in cols for k, i in enumerate(col)}
    total = 0
    for col in cols:
        pairs = [(pos[a], pos[b], 3 if items[b].kind == "node" else 1) for a in col for b in items[a].next]
        total += sum(max(w1, w2) for i, (a1, b1, w1) in enumerate(pairs) for a2, b2, w2 in pairs[i + 1:]
                     if (a1 - a2) * (b1 - b2) < 0)
    return total


def _order(cols: List[List[int]], items: List[Item]) -> List[List[int]]:
    """Barycentre sweeps, then swaps of neighbours while they remove crossings; the first
    column (the inputs) keeps the graph's order."""
    best, best_cross = [list(c) for c in cols], _crossings(cols, items)
    for sweep in range(12):
        down = sweep % 2 == 0
        rng = range(1, len(cols)) if down else range(len(cols) - 2, 0, -1)
        for r in rng:
            ref = {i: k for k, i in enumerate(cols[r - 1] if down else cols[r + 1])}

            def key(i: int, k: int) -> float:
                near = [ref[j] for j in (items[i].prev if down else items[i].next) if j in ref]
                return sum(near) / len(near) if near else float(k)
            cols[r] = [i for _, i in sorted(((key(i, k), i) for k, i in enumerate(cols[r])),
                                            key=lambda t: t[0])]
        cross = _crossings(cols, items)
        if cross < best_cross:
            best, best_cross = [list(c) for c in cols], cross
    improved = True
    while improved and best_cross:
        improved = False
        for col in best[1:]:
            for k in range(len(col) - 1):
                col[k], col[k + 1] = col[k + 1], col[k]
                cross = _crossings(best, items)
                if cross < best_cross:
                    best_cross, improved = cross, True
                else:
                    col[k], col[k + 1] = col[k + 1], col[k]
    return best


def layout(graph: CellGraph, text_size: Callable[[str], Tuple[float, float]]) -> Layout:
    """Place the boxes, labels and edge paths of ``graph`` (sizes from ``text_size``)."""
    level = _levels(graph)
    box_w = max(text_size(s)[0] for s in graph.labels) + 2 * BOX_PAD
    outs = {i: sum(1 for s, _, _ in graph.edges if s == i) for i in range(len(graph.labels))}
    ins = {i: sum(1 for _, d, _ in graph.edges if d == i) for i in range(len(graph.labels))}
    items: List[Item] = []
    cols: Dict[int, List[int]] = {}

    def add(item: Item, col: int) -> int:
        items.append(item)
        cols.setdefault(col, []).append(len(items) - 1)
        return len(items) - 1

    node_item = {}
    for i, label in enumerate(graph.labels):
        ports = max(outs[i], ins[i])
        node_item[i] = add(Item("node", box_w, max(BOX_H, 9.0 * (ports + 1)), node=i, text=label), 2 * level[i])
    chains: List[List[int]] = []
    for e, (s, d, op) in enumerate(graph.edges):
        chain = [node_item[s]]
        for col in range(2 * level[s] + 1, 2 * level[d]):
            if op and col == 2 * level[d] - 1:
                tw, th = text_size(op)
                chain.append(add(Item("label", tw + 10, th + 8, edge=e, text=op), col))
            else:
                chain.append(add(Item("lane", 0.0, LANE_H, edge=e), col))
        chain.append(node_item[d])
        for a, b in zip(chain, chain[1:]):
            items[a].next.append(b)
            items[b].prev.append(a)
        chains.append(chain)
    ordered = _order([cols[c] for c in sorted(cols)], items)
    # Vertical placement: start stacked, then pull every item towards its neighbours.
    for col in ordered:
        ys = _pack([0.0] * len(col), [items[i].h for i in col])
        shift = (ys[0] + ys[-1]) / 2
        for i, y in zip(col, ys):
            items[i].y = y - shift
    for sweep in range(30):
        for col in (ordered if sweep % 2 == 0 else ordered[::-1]):
            desired = []
            for i in col:
                near = [items[j].y for j in items[i].prev + items[i].next]
                desired.append(sum(near) / len(near) if near else items[i].y)
            for i, y in zip(col, _pack(desired, [items[i].h for i in col])):
                items[i].y = y
    # Columns left to right; a column of bare lanes still gets a little width. A gap that
    # edges cross steeply is widened, so that crossing curves stay easy to follow.
    x = MARGIN
    for col in ordered:
        width = max([items[i].w for i in col] + [16.0])
        for i in col:
            items[i].x, items[i].col = x + width / 2, (x, x + width)
        rise = max([abs(items[j].y - items[i].y) for i in col for j in items[i].next] + [0.0])
        x += width + min(max(COL_GAP, 0.4 * rise), 3 * COL_GAP)
    title_h = text_size(graph.title or "Ag")[1] + 14
    top = min(it.y - it.h / 2 for it in items)
    for it in items:
        it.y += MARGIN + title_h - top
    edges = _route(graph, items, chains, node_item)
    height = max(it.y + it.h / 2 for it in items) + MARGIN
    return Layout(x - COL_GAP + MARGIN, height, graph.title, items, list(graph.kinds), edges)


def _route(graph: CellGraph, items: List[Item], chains: List[List[int]], node_item: Dict[int, int]
           ) -> List[Tuple[List[Segment], Optional[str], Point]]:
    """Edge paths: ports spread along the box sides in the order of where the edges go."""
    out_port: Dict[int, float] = {}
    in_port: Dict[int, float] = {}
    for n, it in ((n, items[node_item[n]]) for n in node_item):
        for side, store in (("out", out_port), ("in", in_port)):
            es = [e for e, c in enumerate(chains) if (c[0] if side == "out" else c[-1]) == node_item[n]]
            es.sort(key=lambda e: (items[chains[e][1] if side == "out" else chains[e][-2]].y, e))
            for k, e in enumerate(es):
                store[e] = it.y - it.h / 2 + it.h * (k + 1) / (len(es) + 1)
    routed = []
    for e, chain in enumerate(chains):
        segs: List[Segment] = []
        last = len(chain) - 1
        for k, (a, b) in enumerate(zip(chain, chain[1:])):
            ia, ib = items[a], items[b]
            ya = out_port[e] if k == 0 else ia.y
            yb = in_port[e] if k + 1 == last else ib.y
            # Straight along its own row to the column edges, curved only across the empty gap.
            xa, xb = ia.x + ia.w / 2, ib.x - ib.w / 2
            if ia.col[1] > xa:
                segs.append(("L", (xa, ya), (ia.col[1], ya)))
            x0, x1 = ia.col[1], ib.col[0]
            mid = (x1 - x0) / 2
            segs.append(("C", (x0, ya), (x0 + mid, ya), (x1 - mid, yb), (x1, yb)))
            if xb > x1:
                segs.append(("L", (x1, yb), (xb, yb)))
            if ib.kind != "node" and ib.w > 0:  # through the label
                segs.append(("L", (xb, yb), (ib.x + ib.w / 2, yb)))
        tip_item = items[chain[-1]]
        routed.append((segs, graph.edges[e][2], (tip_item.x - tip_item.w / 2, in_port[e])))
    return routed


def chain_layout(graph: CellGraph, text_size: Callable[[str], Tuple[float, float]]) -> Layout:
    """A layer-by-layer network (``graph.layout == "chain"``): one box per row, top to bottom.

    An edge between neighbours is a short vertical arrow. The longer ones (skips) are drawn
    as buses, the way circuit diagrams draw wires: every source with skips owns one vertical
    lane right of the boxes, entered from the upper part of its box; each target's skips
    arrive on one horizontal line into the lower part of its box, and a dot marks every lane
    that feeds it (a lane crossed without a dot does not). Lines only meet at right angles,
    so a skip can be read off however many there are.
    """
    box_w = max(text_size(s)[0] for s in graph.labels) + 2 * BOX_PAD
    title_h = text_size(graph.title or "Ag")[1] + 14
    pitch = BOX_H + 2 * ITEM_GAP
    items = [Item("node", box_w, BOX_H, node=i, text=label, x=MARGIN + box_w / 2,
                  y=MARGIN + title_h + BOX_H / 2 + i * pitch) for i, label in enumerate(graph.labels)]
    right = MARGIN + box_w
    sources = sorted({s for s, d, _ in graph.edges if abs(d - s) > 1})
    lane_x = {s: right + 18.0 + LANE_GAP * k for k, s in enumerate(sources)}

    def out_y(node: int) -> float:  # where a source's bus leaves its box
        return items[node].y - items[node].h / 4

    def in_y(node: int) -> float:  # where a target's skips enter its box
        return items[node].y + items[node].h / 4

    edges: List[Tuple[List[Segment], Optional[str], Point]] = []
    dots: List[Point] = []
    for s, d, op in graph.edges:
        a, b = items[s], items[d]
        if abs(d - s) <= 1:
            edges.append(([("L", (a.x, a.y + a.h / 2), (b.x, b.y - b.h / 2))], op, (b.x, b.y - b.h / 2)))
            continue
        x = lane_x[s]
        segs: List[Segment] = [("L", (right, out_y(s)), (x, out_y(s))), ("L", (x, out_y(s)), (x, in_y(d))),
                               ("L", (x, in_y(d)), (right, in_y(d)))]
        edges.append((segs, op, (right, in_y(d))))
        dots += [(x, out_y(s)), (x, in_y(d))]
    height = (items[-1].y + BOX_H / 2 + MARGIN) if items else 2 * MARGIN
    width = (max(lane_x.values()) if lane_x else right) + MARGIN
    return Layout(width, height, graph.title, items, list(graph.kinds), edges, dots=sorted(set(dots)))


def sample(seg: Segment, steps: int = 20) -> List[Point]:
    """Points along a segment (for raster drawing)."""
    if seg[0] == "L":
        return [seg[1], seg[2]]
    _, a, c1, c2, b = seg
    out = []
    for s in range(steps + 1):
        t = s / steps
        u = 1 - t
        out.append((u ** 3 * a[0] + 3 * u * u * t * c1[0] + 3 * u * t * t * c2[0] + t ** 3 * b[0],
                    u ** 3 * a[1] + 3 * u * u * t * c1[1] + 3 * u * t * t * c2[1] + t ** 3 * b[1]))
    return out
