"""shared_model.batch_norm.BatchNorm2d gives nn.BatchNorm2d's results on every path it takes."""
import pytest
import torch

import enas.native
import shared_model.batch_norm as bn_module
import shared_model.native_bn as native_bn
from shared_model.batch_norm import BatchNorm2d
from shared_model.kernels import reference_kernels

CL = torch.channels_last


@pytest.fixture(autouse=True)
def no_native():
    """These tests check the ATen-based paths; tests/test_native_bn.py checks the compiled kernels."""
    native_bn.set_native_kernels(None)  # tests/conftest.py restores the session's kernels afterwards


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the other paths are taken only with more than one thread
    yield
    assert torch.get_num_threads() == 2  # the serial path restores the thread count
    torch.set_num_threads(threads)


@pytest.fixture(params=["serial", "folded"])
def path(request, monkeypatch):
    monkeypatch.setattr(bn_module, "FOLD_MIN_NUMEL", 1 << 62 if request.param == "serial" else 0)
    return request.param


def rel(a, b):
    return float((a - b).detach().norm() / (b.detach().norm() + 1e-12))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("channels", [6, 20])
def test_matches_nn_batch_norm_with_two_threads(two_threads, path, affine, channels):
    torch.manual_seed(5)
    bn, ref = BatchNorm2d(channels, affine=affine), torch.nn.BatchNorm2d(channels, affine=affine)
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5), bn.bias.normal_()
    ref.load_state_dict(bn.state_dict())
    for training in (True, True, False):
        bn.train(training), ref.train(training)
        x = (3 * torch.randn(4, channels, 4, 4) + 1).contiguous(memory_format=CL).requires_grad_()
        assert bn._path(x) == (-1 if path == "serial" else {6: 8, 20: 4}[channels])
        xr = x.detach().clone().requires_grad_()
        probe = torch.randn(4, channels, 4, 4)
        out, out_ref = bn(x), ref(xr)
        assert out.is_contiguous(memory_format=CL) and rel(out, out_ref) < 1e-6
        assert torch.allclose(out, out_ref, atol=1e-5)
        # Second order (DARTS's exact Hessian test goes through it): d/dx of |grad_x|^2.
        (g,) = torch.autograd.grad((out * probe).sum(), x, create_graph=True)
        (gr,) = torch.autograd.grad((out_ref * probe).sum(), xr, create_graph=True)
        assert rel(g, gr) < 1e-5 and torch.allclose(g, gr, atol=1e-5)
        (gg,) = torch.autograd.grad(g.square().sum(), x, allow_unused=True)
        (ggr,) = torch.autograd.grad(gr.square().sum(), xr, allow_unused=True)
        if training:
            assert rel(gg, ggr) < 1e-4 and torch.allclose(gg, ggr, atol=1e-4)
        else:  # running statistics: the input gradient does not depend on the input
            assert gg is None or not gg.abs().max() > 0
        # First order without create_graph: the folded backward proper.
        for p in (x, xr, *bn.parameters(), *ref.parameters()):
            p.grad = None
        (bn(x) * probe).sum().backward(), (ref(xr) * probe).sum().backward()
        assert x.grad.is_contiguous(memory_format=CL) and rel(x.grad, xr.grad) < 1e-5
        for p, q in zip(bn.parameters(), ref.parameters()):
            assert rel(p.grad, q.grad) < 1e-5
    for key, value in ref.state_dict().items():
        assert torch.allclose(bn.state_dict()[key].float(), value.float(), rtol=0, atol=1e-6), key


def test_cumulative_average_and_untracked_statistics(two_threads, path):
    torch.manual_seed(6)
    for kwargs in ({"momentum": None}, {"track_running_stats": False}):
        bn, ref = BatchNorm2d(12, **kwargs), torch.nn.BatchNorm2d(12, **kwargs)
        for _ in range(3):
            x = torch.randn(4, 12, 4, 4).contiguous(memory_format=CL)
            assert rel(bn(x), ref(x)) < 1e-6
        bn.eval(), ref.eval()
        assert rel(bn(x), ref(x)) < 1e-6
        for key, value in ref.state_dict().items():
            assert torch.allclose(bn.state_dict()[key].float(), value.float(), atol=1e-6), key


def test_which_inputs_take_which_path(two_threads):
    bn = BatchNorm2d(8)
    big = torch.randn(32, 8, 32, 32)  # 2^18 elements
    assert bn._path(big.contiguous(memory_format=CL)) == 2
    assert bn._path(big) == 0  # NCHW
    assert bn._path(big[:2].contiguous(memory_format=CL)) == -1  # small: ATen on one thread
    assert bn._path(big.double().contiguous(memory_format=CL)) == 0
    assert BatchNorm2d(16)._path(torch.randn(32, 16, 32, 32).contiguous(memory_format=CL)) == 0
    odd = torch.randn(1, 8, 361, 363).contiguous(memory_format=CL)  # pixel count not divisible by 2
    assert bn._path(odd) == -1
    with reference_kernels():
        assert bn._path(big.contiguous(memory_format=CL)) == 0
    torch.set_num_threads(1)
    try:
        assert bn._path(big.contiguous(memory_format=CL)) == 0
    finally:
        torch.set_num_threads(2)


@pytest.mark.parametrize("route", ["aten", "serial", "folded", "native"])
@pytest.mark.parametrize("affine", [True, False])
def test_scale_is_the_output_factor_on_every_path(two_threads, monkeypatch, route, affine):
    # bn(x, s) == s * bn(x): values, gradients of the input, the scale and the affine parameters,
    # second order, and the same running statistics (DARTS passes its mixing weight this way).
    monkeypatch.setattr(bn_module, "FOLD_MIN_NUMEL", 1 << 62 if route == "serial" else 0)
    if route == "native":  # training steps on the compiled kernels, eval ones on the folded path
        if not enas.native.load_native_kernels():
            pytest.skip("no compiled kernels here")
        monkeypatch.setattr(native_bn, "NATIVE_MIN_NUMEL", 0)
        monkeypatch.setattr(native_bn, "NATIVE_MIN_NUMEL_RELU", 0)
    torch.manual_seed(7)
    channels = 16 if route == "aten" else 6
    bn, ref = BatchNorm2d(channels, affine=affine), BatchNorm2d(channels, affine=affine)
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5), bn.bias.normal_()
    ref.load_state_dict(bn.state_dict())
    for training in (True, False):
        bn.train(training), ref.train(training)
        x = (2 * torch.randn(4, channels, 4, 4) + 1).contiguous(memory_format=CL).requires_grad_()
        assert bn._path(x) == {"aten": 0, "serial": -1, "folded": 8, "native": 8}[route]
        assert (native_bn.native_fold(x) > 0) == (route == "native")
        xr = x.detach().clone().requires_grad_()
        s, sr = torch.tensor(0.3, requires_grad=True), torch.tensor(0.3, requires_grad=True)
        probe = torch.randn(4, channels, 4, 4)
        out = bn(x, s)
        with reference_kernels():  # ATen's batch norm times the scale, as the reference path mixes
            out_ref = sr * ref(xr)
        assert out.is_contiguous(memory_format=CL) and torch.allclose(out, out_ref, rtol=1e-5, atol=1e-6)
        grads = torch.autograd.grad((out * probe).sum(), (x, s, *bn.parameters()), create_graph=True)
        grads_ref = torch.autograd.grad((out_ref * probe).sum(), (xr, sr, *ref.parameters()), create_graph=True)
        for g, gr in zip(grads, grads_ref):
            assert torch.allclose(g, gr, rtol=1e-4, atol=1e-5)
        if training:  # d/ds of |grad_x|^2 through the batch norm's own backward
            (gs,) = torch.autograd.grad(grads[0].square().sum(), s)
            (gsr,) = torch.autograd.grad(grads_ref[0].square().sum(), sr)
            assert torch.allclose(gs, gsr, rtol=1e-4)
        # First order without create_graph: the folded (native) backward proper.
        out = bn(x, s)
        assert (out.grad_fn.name() == "NativeBatchNormBackward") == (route == "native" and training)
        grads = torch.autograd.grad((out * probe).sum(), (x, s, *bn.parameters()))
        with reference_kernels():
            grads_ref = torch.autograd.grad((sr * ref(xr) * probe).sum(), (xr, sr, *ref.parameters()))
        for g, gr in zip(grads, grads_ref):
            assert torch.allclose(g, gr, rtol=1e-4, atol=1e-5)
    for key, value in ref.state_dict().items():
        assert torch.allclose(bn.state_dict()[key].float(), value.float(), rtol=0, atol=1e-6), key
