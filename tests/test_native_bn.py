"""The compiled batch norm (+ ReLU) kernels: nn.BatchNorm2d's results and fallbacks.

Building, caching and loading the library: ``test_native_build.py``.

The numerical checks run in a child process (a kernel bug may crash it), once per
build: the normal one, whose ``target_clones`` pick this CPU's level, and builds
pinned to AVX2 and to baseline x86-64, so an AVX-512 machine also runs the loops an
AVX2 laptop gets.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import enas.native as native
import shared_model.batch_norm as bn_module
import shared_model.native_bn as native_bn
from shared_model.batch_norm import BatchNorm2d
from shared_model.kernels import reference_kernels
from shared_model.native_bn import native_fold, native_kernels
from shared_model.ops import make_op

from kink_helpers import SAFE_MARGIN, kink_margin

ROOT = Path(__file__).resolve().parents[1]
CL = torch.channels_last

needs_kernels = pytest.mark.skipif(not native.load_native_kernels(), reason="no C compiler / not Linux x86-64")

CHILD = r"""
import ctypes, json, sys
from pathlib import Path
import torch
import enas.native as native
from shared_model.batch_norm import BatchNorm2d
import shared_model.native_bn
from shared_model.native_bn import native_fold, set_native_kernels

shared_model.native_bn.NATIVE_MIN_NUMEL = shared_model.native_bn.NATIVE_MIN_NUMEL_RELU = 0  # small shapes too
path, threads = Path(sys.argv[1]), int(sys.argv[2])
set_native_kernels(native._Kernels(ctypes.CDLL(str(path)), path))
torch.set_num_threads(threads)
torch.manual_seed(0)

def rel(a, b):
    return float((a.double() - b).norm() / (b.norm() + 1e-12))

worst = {}
# (B, C, H, W): C 8 (k 2), 36 (k 4), 16 (k 1), 20 with an odd pixel count (k 1 fallback), 3 (k 16);
# per-sample factors need k | H*W: (3, 20, 15, 15) takes them at k 1
for shape in [(4, 8, 16, 16), (4, 36, 8, 8), (2, 16, 16, 16), (3, 20, 15, 15), (4, 3, 32, 32)]:
    for affine in (True, False):
        for relu in (False, True):
            for momentum, per_sample in ((0.1, False), (None, False), (0.1, True)):
                c = shape[1]
                bn = BatchNorm2d(c, affine=affine, momentum=momentum)
                ref = torch.nn.BatchNorm2d(c, affine=affine, momentum=momentum).double()  # the exact answer
                if affine:
                    with torch.no_grad():
                        bn.weight.uniform_(0.5, 1.5), bn.bias.normal_()
                ref.load_state_dict(bn.state_dict())
                for step in range(2):
                    # a large offset: the statistics must not cancel
                    x = (3 * torch.randn(shape) + 50).contiguous(memory_format=torch.channels_last)
                    assert native_fold(x) > 0
                    x.requires_grad_()
                    xr = x.detach().double().requires_grad_()
                    # per-sample factors (a drop-path mask / keep): one sample dropped, the others kept
                    ss = torch.tensor([0.0] + [1.25] * (shape[0] - 1)) if per_sample else None
                    out = bn(x, ss, relu=relu)
                    out_ref = ref(xr)
                    out_ref = torch.relu(out_ref) if relu else out_ref
                    if per_sample:
                        out_ref = out_ref * ss.double().view(-1, 1, 1, 1)
                    assert out.is_contiguous(memory_format=torch.channels_last)
                    g = torch.randn(shape).contiguous(memory_format=torch.channels_last)
                    # the reference takes the mask of our output: elements at 0 may round either way
                    gm = (g * (out.detach() > 0) if relu else g).double()
                    if per_sample:
                        gm = gm * ss.double().view(-1, 1, 1, 1)
                    grads = torch.autograd.grad(out, [x, *bn.parameters()], g)
                    ref_pre = torch.nn.functional.batch_norm(xr, None, None, ref.weight, ref.bias, True, 0.0, ref.eps)
                    grads_ref = torch.autograd.grad(ref_pre, [xr, *ref.parameters()], gm)
                    key = f"{shape} affine={affine} relu={relu} momentum={momentum} per_sample={per_sample}"
                    errs = [rel(out, out_ref)] + [rel(a, b) for a, b in zip(grads, grads_ref)]
                    errs += [rel(bn.running_mean, ref.running_mean), rel(bn.running_var, ref.running_var)]
                    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
                    worst[key] = max(worst.get(key, 0.0), *errs)
# the depthwise weight gradient: C 8, 20, 36 (tails of 16-channel blocks), kernels 3 / 5, dilation 1 / 2
kernels = native._Kernels(ctypes.CDLL(str(path)), path)
for shape, k, d in [((2, 8, 12, 12), 5, 1), ((2, 20, 9, 11), 3, 2), ((2, 36, 8, 8), 5, 2), ((1, 3, 7, 7), 7, 1)]:
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    g = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape[1], 1, k, k)
    p = d * (k - 1) // 2
    ref = torch.ops.aten.convolution_backward(g.double(), x.double(), w.double(), None, [1, 1], [p, p], [d, d], False,
                                              [0, 0], shape[1], [False, True, False])[1]
    out = kernels.depthwise_weight_grad(g, x, (k, k), (p, p), (d, d))
    worst[f"dw {shape} k={k} d={d}"] = rel(out, ref)
print(json.dumps(worst))
"""


def _child(lib: Path, threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(lib), str(threads)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("build", ["clones", "avx2", "baseline"])
def test_kernels_match_nn_batch_norm_in_a_child_process(tmp_path, build):
    flags = {"clones": (), "avx2": ("-DENAS_NO_CLONES", "-march=x86-64-v3"),
             "baseline": ("-DENAS_NO_CLONES", "-march=x86-64")}[build]
    if build == "avx2" and not _cpu_has("avx2"):
        pytest.skip("this CPU has no AVX2")
    try:
        lib = native.build(extra_flags=flags, directory=tmp_path)
    except OSError as exc:
        pytest.skip(f"cannot build: {exc}")
    for threads in (1, 2):
        worst = _child(lib, threads)
        bad = {k: v for k, v in worst.items() if not v < 5e-6}  # ATen in float32: up to 2.5e-5
        assert len(worst) == 64 and not bad, bad


WIDE = r"""
import ctypes, sys
from pathlib import Path
import torch
import enas.native as native
from shared_model.batch_norm import BatchNorm2d
from shared_model.native_bn import native_fold, set_native_kernels

path = Path(sys.argv[1])
set_native_kernels(native._Kernels(ctypes.CDLL(str(path)), path))
torch.set_num_threads(2)
# 32,769 channels (odd: 16 pixels per super-row), so one super-row is 524,304 floats (2 MiB)
x = torch.randn(1, 32769, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
assert native_fold(x, True) == 16
bn = BatchNorm2d(32769)
out = bn(x, relu=True)
g = torch.randn_like(out)
gx, = torch.autograd.grad(out, [x], g)
xr = x.detach().double().requires_grad_()
ref = torch.relu(torch.nn.functional.batch_norm(xr, None, None, training=True))
gr, = torch.autograd.grad(ref, [xr], g.double() * (out.detach() > 0))
assert torch.allclose(out.double(), ref, atol=1e-5), float((out.double() - ref).abs().max())
assert torch.allclose(gx.double(), gr, atol=1e-4), float((gx.double() - gr).abs().max())
print("ok")
"""


@needs_kernels
def test_a_very_wide_layer_keeps_its_sums_off_the_thread_stacks():
    # Per-thread block sums of one super-row each: on a 4 MiB stack (the threads' default follows
    # it) two 2 MiB arrays would overflow it; they are on the heap.
    import resource

    def small_stack():
        resource.setrlimit(resource.RLIMIT_STACK, (4 << 20, resource.getrlimit(resource.RLIMIT_STACK)[1]))

    lib = native_kernels().path
    proc = subprocess.run([sys.executable, "-c", WIDE, str(lib)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, preexec_fn=small_stack)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def _cpu_has(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


@needs_kernels
def test_fused_relu_zeroes_the_gradient_exactly_where_the_output_is_zero():
    torch.manual_seed(1)
    bn = BatchNorm2d(8)
    x = torch.randn(8, 8, 16, 16).contiguous(memory_format=CL).requires_grad_()
    out = bn(x, relu=True)
    assert native_fold(x, relu=True) == 2 and out.grad_fn.name() == "NativeBatchNormBackward"
    assert (out == 0).any() and (out >= 0).all()
    (gx,) = torch.autograd.grad(out, x, torch.ones_like(out))
    ref = torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    (gr,) = torch.autograd.grad(ref, x, (out > 0).float())
    assert torch.allclose(gx, gr, atol=1e-5)


@needs_kernels
def test_double_backward_takes_the_differentiable_path():
    torch.manual_seed(2)
    bn = BatchNorm2d(8)
    x = torch.randn(2, 8, 32, 32).contiguous(memory_format=CL).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    probe = torch.randn_like(x)
    (g,) = torch.autograd.grad((bn(x, relu=True) * probe).sum(), x, create_graph=True)
    ref = torch.relu(torch.nn.functional.batch_norm(xr, None, None, bn.weight, bn.bias, True, 0.0, bn.eps))
    (gr,) = torch.autograd.grad((ref * probe).sum(), xr, create_graph=True)
    (gg,), (ggr,) = torch.autograd.grad(g.square().sum(), x), torch.autograd.grad(gr.square().sum(), xr)
    assert torch.allclose(g, gr, atol=1e-5) and torch.allclose(gg, ggr, atol=1e-4, rtol=1e-3)


@needs_kernels
def test_which_inputs_take_the_native_path():
    big = torch.randn(8, 8, 32, 32)
    assert native_fold(big) == 0  # NCHW
    assert native_fold(big.contiguous(memory_format=CL)) == 2
    assert native_fold(big.double().contiguous(memory_format=CL)) == 0
    small = torch.randn(2, 8, 32, 32).contiguous(memory_format=CL)  # 2^14: enough with a fused ReLU only
    assert native_fold(small) == 0 and native_fold(small, relu=True) == 2
    assert native_fold(torch.randn(1, 8, 4, 4).contiguous(memory_format=CL), relu=True) == 0
    bn = BatchNorm2d(8).eval()  # running statistics: ATen (eval graphs get traced and exported)
    x = big.contiguous(memory_format=CL).requires_grad_()
    assert bn(x).grad_fn.name() != "NativeBatchNormBackward"
    assert bn.train()(x).grad_fn.name() == "NativeBatchNormBackward"
    with pytest.raises(RuntimeError):  # float64 parameters: ATen's own error, the kernels never read them
        BatchNorm2d(8).double()(x)


@needs_kernels
@pytest.mark.parametrize("name", ["sep_conv_3x3", "sep_conv_5x5"])
def test_sep_conv_with_the_fused_relu_equals_the_reference_path(name):
    torch.manual_seed(4)
    op = make_op(name, 8, 1, True)
    x = torch.randn(2, 8, 32, 32)
    x = x + 0.01 * x.sign()  # the input's own ReLU off its kink; the seed keeps the inner one off (kink_helpers)
    assert kink_margin(op, lambda reference: reference(x.double())) > SAFE_MARGIN
    x = x.contiguous(memory_format=CL).requires_grad_()
    probe = torch.randn(2, 8, 32, 32)  # not out.square(): a batch-normalised output's square sums to ~constant
    out = op(x)
    grads = torch.autograd.grad((out * probe).sum(), [x, *op.parameters()])
    with reference_kernels():
        out_ref = op(x)
        grads_ref = torch.autograd.grad((out_ref * probe).sum(), [x, *op.parameters()])
    assert torch.allclose(out, out_ref, atol=1e-4)
    for a, b in zip(grads, grads_ref):
        assert float((a - b).norm() / b.norm()) < 1e-4


@needs_kernels
def test_sep_conv_keeps_its_relu_modules_where_the_kernels_cannot_run():
    # Cost tracing hooks every leaf module on the meta device: both ReLUs must still be called there.
    calls = []

    def hooked():
        op = make_op("sep_conv_3x3", 8, 1, True)
        for m in op.modules():
            if isinstance(m, torch.nn.ReLU):
                m.register_forward_hook(lambda *_: calls.append(1))
        return op

    hooked().to("meta")(torch.empty(2, 8, 32, 32, device="meta").contiguous(memory_format=CL))
    assert len(calls) == 2
    calls.clear()
    hooked()(torch.randn(2, 8, 32, 32).contiguous(memory_format=CL))  # fused: the inner ReLU in the BN
    assert len(calls) == 1


@needs_kernels
@pytest.mark.parametrize("shape", [(4, 8, 16, 16), (4, 8, 15, 16)])  # k 2 divides H*W / does not (ATen then)
def test_per_sample_factors_equal_the_product(shape, monkeypatch):
    monkeypatch.setattr(native_bn, "NATIVE_MIN_NUMEL", 0)
    monkeypatch.setattr(native_bn, "NATIVE_MIN_NUMEL_RELU", 0)
    torch.manual_seed(9)
    bn = BatchNorm2d(8)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.normal_()
    x = torch.randn(shape).contiguous(memory_format=CL).requires_grad_()
    ss = torch.tensor([2.0, 0.0, 2.0, 2.0])
    probe = torch.randn(shape)
    for relu in (False, True):
        out = bn(x, ss, relu=relu)
        native = out.grad_fn.name() == "NativeBatchNormBackward"
        assert native == (shape[2] * shape[3] % 2 == 0)
        grads = torch.autograd.grad((out * probe).sum(), [x, *bn.parameters()])
        with reference_kernels():
            ref = bn(x)
            ref = (torch.relu(ref) if relu else ref) * ss.view(-1, 1, 1, 1)
            grads_ref = torch.autograd.grad((ref * probe).sum(), [x, *bn.parameters()])
        assert torch.allclose(out, ref, atol=1e-5) and not out[1].any()
        for a, b in zip(grads, grads_ref):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="per-sample"):
        bn(x, ss.clone().requires_grad_())


@needs_kernels
def test_child_network_with_drop_path_matches_the_reference_path(monkeypatch):
    # The cell hands each conv op's drop-path factors to its final BN (child.drop_path_factors);
    # with the same random stream the reference path multiplies the op's output instead.
    from shared_model.child import ChildNetwork
    from shared_model.zoo import get_genotype

    monkeypatch.setattr(native_bn, "NATIVE_MIN_NUMEL", 0)
    monkeypatch.setattr(native_bn, "NATIVE_MIN_NUMEL_RELU", 0)
    # Small enough (23k ReLU inputs) that a seed keeps every ReLU input off its kink (kink_helpers):
    # the earlier (4, 8, 16) network had one within 2e-6 of zero and failed on an AVX2 CPU.
    torch.manual_seed(2)
    net = ChildNetwork(get_genotype("DARTS_V2"), 4, 3, 10, image_size=8, drop_path_prob=0.4).train()
    net = net.to(memory_format=CL)
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=CL)
    probe = torch.randn(2, 10)

    def forward64(reference):
        torch.manual_seed(11)
        reference(x.double())

    assert kink_margin(net, forward64) > SAFE_MARGIN

    def step():
        torch.manual_seed(11)  # the same drop-path masks on both paths
        for p in net.parameters():
            p.grad = None
        xx = x.clone().requires_grad_()
        out = net(xx)[0]
        (out * probe).sum().backward()
        return [out.detach(), xx.grad] + [p.grad for p in net.parameters()]

    calls = []

    class Spy:
        @staticmethod
        def apply(*args):
            calls.append(args[-1] is not None)  # per-sample factors passed
            return native_bn.NativeBatchNorm.apply(*args)

    monkeypatch.setattr(bn_module, "NativeBatchNorm", Spy)
    fast = step()
    assert sum(calls) == 6 and not all(calls)  # the normal cell's 5 sep convs and dil conv take them
    with reference_kernels():
        ref = step()
    for a, b in zip(fast, ref):
        if b is None:
            assert a is None
            continue
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-5
