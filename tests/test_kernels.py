"""The CPU fast paths of shared_model.kernels give the plain PyTorch results (values and gradients)."""
import contextlib

import pytest
import torch

from shared_model.child import ChildNetwork
from shared_model.kernels import (DepthwiseConv2d, PointwiseConv2d, cat_channels, even_odd_pixels,
                                  fast_kernels_enabled, reference_kernels)
from shared_model.nb201 import NB201Supernet
from shared_model.ops import DARTS_OPS, ENAS_MICRO_OPS, make_op, takes_relu, takes_scale
from shared_model.spaces import make_space
from shared_model.supernet import MixedArch, Supernet
from shared_model.zoo import get_genotype

CL = torch.channels_last


def grads_of(module, x, probe, run):
    """Output and gradients (input first, then parameters) of ``run(module, x)`` against ``probe``."""
    for p in module.parameters():
        p.grad = None
    x = x.detach().clone().requires_grad_()
    out = run(module, x)
    (out * probe).sum().backward()
    return [out.detach()] + [x.grad] + [p.grad for p in module.parameters()]


def assert_close(fast, ref, rtol=1e-4):
    assert len(fast) == len(ref)
    assert [a is None for a in fast] == [b is None for b in ref]  # same parameters off the path
    for a, b in zip(fast, ref):
        if a is None:
            continue
        # Round-off only: relative to the tensor, or absolute for gradients that are ~0 anyway.
        assert (a - b).norm() <= rtol * b.norm() + 1e-5, float((a - b).norm() / (b.norm() + 1e-12))


def compare(module, x, run=lambda m, x: m(x), rtol=1e-4):
    for m in module.modules():  # the flipped-kernel path at test size too
        if isinstance(m, DepthwiseConv2d):
            m.min_numel = 0
    torch.manual_seed(0)
    probe = torch.randn_like(run(module, x).detach())
    fast = grads_of(module, x, probe, run)
    with reference_kernels():
        assert not fast_kernels_enabled()
        ref = grads_of(module, x, probe, run)
    assert fast_kernels_enabled()
    assert_close(fast, ref, rtol)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("name", sorted(set(DARTS_OPS + ENAS_MICRO_OPS) - {"none"}))
@pytest.mark.parametrize("stride", [1, 2])
def test_every_cell_op_matches_the_reference_path(name, stride, layout):
    torch.manual_seed(1)
    op = make_op(name, 6, stride, affine=False)
    x = torch.randn(4, 6, 9, 9)
    if layout == "channels_last":
        op, x = op.to(memory_format=CL), x.contiguous(memory_format=CL)
    compare(op, x)
    if takes_relu(op):  # the cell passes a state's ReLU once: same op, relu_done=True
        compare(op, x, run=lambda m, x: m(torch.relu(x), relu_done=True))
        compare(op, x, run=lambda m, x: m(x))
    if takes_scale(op):  # the DARTS mixing weight as the final BN's weight: op(x, scale=s) == s * op(x)
        s = torch.tensor(0.37)
        compare(op, x, run=lambda m, x: m(x, scale=s) if fast_kernels_enabled() else s * m(x))
        if takes_relu(op):
            compare(op, x, run=lambda m, x: m(torch.relu(x), relu_done=True, scale=s) if fast_kernels_enabled()
                    else s * m(x))


def test_pointwise_and_depthwise_modules_keep_conv2d_parameters():
    pw, dw = PointwiseConv2d(4, 6), DepthwiseConv2d(4, 5, padding=2)
    assert isinstance(pw, torch.nn.Conv2d) and pw.weight.shape == (6, 4, 1, 1) and pw.bias is None
    assert dw.weight.shape == (4, 1, 5, 5) and dw.groups == 4 and dw.same
    assert not DepthwiseConv2d(4, 3, stride=2, padding=1).same
    assert set(pw.state_dict()) == {"weight"}
    x = torch.randn(2, 4, 7, 7).contiguous(memory_format=CL)
    y = pw.to(memory_format=CL)(x)
    assert y.is_contiguous(memory_format=CL) and y.shape == (2, 6, 7, 7)
    compare(dw.to(memory_format=CL), x)
    compare(DepthwiseConv2d(4, 3, padding=2, dilation=2), torch.randn(2, 4, 7, 7))
    # The autograd function only where it pays: dilated always, undilated from a size on.
    x = x.requires_grad_()
    assert type(DepthwiseConv2d(4, 3, padding=2, dilation=2)(x).grad_fn).__name__ == "_DepthwiseSameBackward"
    for kernel, numel in ((3, 1 << 21), (5, 1 << 18)):
        small = DepthwiseConv2d(4, kernel, padding=kernel // 2)
        assert small.min_numel == numel and small(x).grad_fn.name() == "ConvolutionBackward0"


@pytest.mark.parametrize("kernel", [5, 7])
def test_wide_depthwise_weight_gradient_in_column_blocks(kernel, monkeypatch):
    import shared_model.kernels as kernels

    monkeypatch.setattr(kernels, "_SPLIT_MIN_NUMEL", 0)  # the blocks at test size
    torch.manual_seed(2)
    dw = DepthwiseConv2d(5, kernel, padding=kernel // 2).to(memory_format=CL)
    for shape in ((3, 5, 7, 9), (2, 5, 1, 2)):
        compare(dw, torch.randn(*shape).contiguous(memory_format=CL))
    # Second order goes through it too (DARTS's exact Hessian test): d/dw of |grad_w|^2.
    x = torch.randn(3, 5, 7, 9).contiguous(memory_format=CL)
    grads = []
    for reference in (False, True):
        with reference_kernels() if reference else contextlib.nullcontext():
            (g,) = torch.autograd.grad(dw(x).square().sum(), dw.weight, create_graph=True)
            grads.append(torch.autograd.grad(g.square().sum(), dw.weight)[0])
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4)


def test_cat_channels_gives_dense_gradients_in_each_inputs_layout():
    a = torch.randn(2, 3, 5, 5).contiguous(memory_format=CL).requires_grad_()
    b = torch.randn(2, 4, 5, 5).requires_grad_()
    out = cat_channels([a, b])
    assert torch.equal(out, torch.cat([a, b], 1))
    g = torch.randn(2, 7, 5, 5).contiguous(memory_format=CL)
    out.backward(g)
    assert a.grad.is_contiguous(memory_format=CL) and b.grad.is_contiguous()
    assert torch.equal(a.grad, g[:, :3]) and torch.equal(b.grad, g[:, 3:])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("size", [(6, 6), (7, 5)])
def test_even_odd_pixels_match_slicing_and_give_one_dense_gradient(size, layout):
    fmt = CL if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(2, 3, *size).contiguous(memory_format=fmt).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    even, odd = even_odd_pixels(x)
    h, w = size
    even_ref = xr[:, :, ::2, ::2]
    odd_ref = torch.nn.functional.pad(xr[:, :, 1::2, 1::2], (0, w % 2, 0, h % 2))
    assert torch.equal(even, even_ref) and torch.equal(odd, odd_ref)
    assert even.is_contiguous(memory_format=fmt) and odd.is_contiguous(memory_format=fmt)
    pe, po = torch.randn_like(even), torch.randn_like(odd)
    (g,) = torch.autograd.grad((even * pe).sum() + (odd * po).sum(), x, create_graph=True)
    (gr,) = torch.autograd.grad((even_ref * pe).sum() + (odd_ref * po).sum(), xr, create_graph=True)
    assert torch.equal(g, gr) and g.is_contiguous(memory_format=fmt)
    # Double backward (DARTS's exact Hessian test): through the backward's own ops.
    (gg,) = torch.autograd.grad((g * x).square().sum(), x)
    (ggr,) = torch.autograd.grad((gr * xr).square().sum(), xr)
    assert torch.allclose(gg, ggr)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("space_name", ["micro", "darts"])
def test_supernet_step_matches_the_reference_path(space_name, layout):
    space = make_space(space_name)
    torch.manual_seed(2)
    kwargs = dict(cell_output="concat") if space_name == "darts" else dict(loose_inputs=True, auxiliary=True)
    net = Supernet(space.ops, space.num_nodes, 4, 3, 10, in_channels=3, image_size=8, **kwargs)
    x = torch.randn(4, 3, 8, 8)
    if layout == "channels_last":
        net, x = net.to(memory_format=CL), x.contiguous(memory_format=CL)
    if space_name == "darts":
        edges = len(net.cells[0].edges)
        w = torch.softmax(torch.randn(2, edges, len(space.ops)), -1)
        arch = MixedArch(w[0], w[1])
    else:
        arch = space.decode(space.random_actions(torch.Generator().manual_seed(3)))
    compare(net, x, run=lambda m, x: m(x, arch)[0])


def test_child_network_step_matches_the_reference_path():
    torch.manual_seed(4)
    net = ChildNetwork(get_genotype("DARTS_V2"), 4, 5, 10, image_size=8).to(memory_format=CL)
    compare(net, torch.randn(4, 3, 8, 8).contiguous(memory_format=CL), run=lambda m, x: m(x)[0])


@pytest.mark.parametrize("space_name", ["darts", "nb201"])
def test_mixing_weight_gradients_match_the_reference_path(space_name):
    # The fast path applies each conv op's mixing weight inside its final BN (ops.takes_scale):
    # the architecture gradient must be the reference path's w * op(x) one.
    torch.manual_seed(8)
    if space_name == "nb201":
        net, shape = NB201Supernet(channels=4, cells_per_stage=1, num_classes=5, image_size=8), (6, 5)
    else:
        space = make_space("darts")
        net = Supernet(space.ops, space.num_nodes, 4, 3, 5, in_channels=3, image_size=8, cell_output="concat")
        shape = (2, len(net.cells[0].edges), len(space.ops))
    net = net.to(memory_format=CL)
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=CL)
    alpha = (0.5 * torch.randn(shape)).requires_grad_()
    probe = None
    grads = []
    for ctx in (contextlib.nullcontext, reference_kernels):
        with ctx():
            w = torch.softmax(alpha, -1)
            logits = net(x, w if space_name == "nb201" else MixedArch(w[0], w[1]))[0]
            probe = torch.randn_like(logits) if probe is None else probe
            (g,) = torch.autograd.grad((logits * probe).sum(), alpha)
            grads.append(g)
    fast, ref = grads
    assert ref.abs().sum() > 0
    assert (fast - ref).norm() <= 1e-4 * ref.norm() + 1e-6, float((fast - ref).norm() / ref.norm())
