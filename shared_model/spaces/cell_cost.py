"""Cost blocks of the cell spaces' child network (:class:`~shared_model.child.ChildNetwork`).

The blocks mirror ``ChildNetwork.forward`` in eval mode: the stem, then per
cell its two preprocessing blocks (a factorized reduction after a reduction
cell), the ENAS ``base_conv`` when asked for, one ``op`` block per genotype
entry (stride 2 and the input's size for an op reading a cell input in a
reduction cell), one two-input sum per node, the factorized reduction of
unread inputs (``loose_inputs``, reduction cells), the concatenation, and the
head. Options that only act in training (auxiliary head, dropout, drop path,
BN epsilon) change nothing here.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Sequence, Tuple

from shared_model.cost_blocks import HW, Block, NetSpec, half, op_block, shape
from shared_model.genotype import CELL_TYPES, Entry, Genotype

#: ``build_child`` options that change the eval-mode network (with the ChildNetwork defaults).
EVAL_OPTIONS = {"stem_multiplier": 3, "base_conv": False, "loose_inputs": False, "final_relu": False,
                "classifier_bias": True}
#: Options that only act in training.
TRAIN_OPTIONS = ("auxiliary", "dropout", "drop_path_prob", "drop_path_depth_scaled", "aux_position",
                 "drop_path_exempt", "aux_same_padding", "bn_eps", "aux_trainable")


def _check(spec: NetSpec) -> None:
    unknown = [k for k, _ in spec.options if k not in EVAL_OPTIONS and k not in TRAIN_OPTIONS]
    if unknown:
        raise ValueError(f"the cell child network takes no option(s) {', '.join(unknown)}")


def positions(spec: NetSpec) -> List[Tuple[bool, int, HW, HW]]:
    """Per cell ``(reduction, C, (H, W) in, (H, W) out)`` of the child network (independent of the genotype)."""
    reductions = {spec.layers // 3, 2 * spec.layers // 3}
    out, c, size = [], spec.channels, spec.hw
    for i in range(spec.layers):
        reduction = i in reductions
        if reduction:
            if min(size) < 2:
                raise ValueError(f"image size {spec.image_size} is too small for the reduction cells")
            c *= 2
        size_out = half(size) if reduction else size
        out.append((reduction, c, size, size_out))
        size = size_out
    return out


def _op_blocks(entries: Sequence[Entry], reduction: bool, c: int, hw_in: HW, hw_out: HW) -> List[Block]:
    return [op_block(op, c, 2 if reduction and inp < 2 else 1, hw_in if inp < 2 else hw_out)
            for op, inp in entries]


def cell_blocks(genotype: Genotype, spec: NetSpec) -> List[Block]:
    """The blocks of ``genotype``'s child network at ``spec`` (see the module docstring)."""
    _check(spec)
    opt = {k: spec.option(k, v) for k, v in EVAL_OPTIONS.items()}
    c_stem = opt["stem_multiplier"] * spec.channels
    blocks = [Block("conv_bn", (spec.in_channels, c_stem, 3, 1, 1), (shape(spec.in_channels, spec.hw),))]
    s0 = s1 = shape(c_stem, spec.hw)  # shapes of the cell inputs k-2 and k-1
    reduction_prev = False
    for reduction, c, h_in, h_out in positions(spec):
        entries, concat = genotype.cell("reduce" if reduction else "normal")
        if reduction_prev:
            blocks.append(Block("factorized_reduce", (s0[0], c, True), (s0,)))
        else:
            blocks.append(Block("relu_conv_bn", (s0[0], c, 1, 1, 0), (s0,)))
        blocks.append(Block("relu_conv_bn", (s1[0], c, 1, 1, 0), (s1,)))
        if opt["base_conv"]:
            blocks.append(Block("relu_conv_bn", (c, c, 1, 1, 0), (shape(c, h_in),)))
        blocks += _op_blocks(entries, reduction, c, h_in, h_out)
        blocks += [Block("add", (), (shape(c, h_out),) * 2)] * (len(entries) // 2)
        read = {inp for _, inp in entries}
        loose = [i for i in (0, 1) if opt["loose_inputs"] and i not in read]
        if reduction:
            blocks += [Block("factorized_reduce", (c, c, False), (shape(c, h_in),))] * len(loose)
        width = len(loose) + len(concat)
        blocks.append(Block("concat", (), (shape(c, h_out),) * width))
        s0, s1 = s1, shape(width * c, h_out)
        reduction_prev = reduction
    pre = "relu" if opt["final_relu"] else "none"
    blocks.append(Block("head", (s1[0], spec.num_classes, bool(opt["classifier_bias"]), pre), (s1,)))
    return blocks


def mixing_blocks(edges: Sequence[Tuple[int, int]], ops: Sequence[str],
                  spec: NetSpec) -> Dict[str, List[List[List[Block]]]]:
    """Per cell type, edge and op the op blocks that choice places in the child network.

    Summed over every cell of the type (all cells of a type share the genotype);
    ``none`` places nothing.
    """
    _check(spec)
    out = {cell: [[[] for _ in ops] for _ in edges] for cell in CELL_TYPES}
    for reduction, c, h_in, h_out in positions(spec):
        table = out["reduce" if reduction else "normal"]
        for e, (_, inp) in enumerate(edges):
            for k, op in enumerate(ops):
                if op != "none":
                    table[e][k] += _op_blocks([(op, inp)], reduction, c, h_in, h_out)
    return out


def _cover_cell(num_nodes: int, op: str, loose: int, unread: int) -> List[Entry]:
    """A cell with ``loose`` loose-end nodes and ``unread`` (0 or 1) unread cell inputs.

    The first ``num_nodes - loose`` nodes form a chain (each read by the next),
    so some op reads a node (stride 1 in a reduction cell) whenever ``loose <
    num_nodes``; the other reads are cell inputs (stride 2 there).
    """
    second = 1 if unread == 0 else 0
    chain = num_nodes - loose  # nodes 2 .. chain + 1 are read by their successor
    entries = [(op, 0), (op, second)]
    for node in range(3, num_nodes + 2):
        first = node - 1 if node - 1 <= chain + 1 else 0
        entries += [(op, first), (op, second)]
    return entries


def cover(num_nodes: int, sample_ops: Sequence[str], concat_for, distinct_inputs: bool) -> Iterator[Genotype]:
    """Genotypes whose child networks together place every block any genotype can place.

    Every op at every stride and size (each op in a chain cell), and every
    output width of a normal and a reduction cell in combination (the
    preprocessing and head read them): loose ends 1..n and 0 or 1 unread inputs.
    Two distinct inputs per node leave no input unread.
    """
    unreads = (0,) if distinct_inputs else (0, 1)
    for op in sample_ops:
        cell = _cover_cell(num_nodes, op, 1, 0)
        yield Genotype(cell, concat_for(cell), cell, concat_for(cell))
    shapes = [(k, u) for k in range(1, num_nodes + 1) for u in unreads]
    for k_n, u_n in shapes:
        for k_r, u_r in shapes:
            normal = _cover_cell(num_nodes, sample_ops[0], k_n, u_n)
            reduce = _cover_cell(num_nodes, sample_ops[0], k_r, u_r)
            yield Genotype(normal, concat_for(normal), reduce, concat_for(reduce))
