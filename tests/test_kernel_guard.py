"""Channels-last gradients of every candidate op equal the NCHW ones, in a child process.

The same child also checks the CPU fast paths of ``shared_model.kernels`` (pointwise convs
as matrix products, the depthwise input gradient by the flipped kernel) and
``shared_model.batch_norm`` (the folded view, at 2 threads) against the plain PyTorch path,
so they are exercised on AVX2 kernels too.

oneDNN's 1x1 stride-2 backward-weights kernel on channels-last inputs with fewer
channels than its SIMD block corrupts the heap (1 thread) or returns wrong weight
gradients (2+ threads) on AVX2 CPUs (uxlfoundation/oneDNN#6035). The check runs in a
child process so that a crash fails this test instead of killing pytest, once with the
CPU's own instruction set and once capped to AVX2 with ``ONEDNN_MAX_CPU_ISA`` so that
an AVX-512 machine also exercises the AVX2 kernels. The old ``FactorizedReduce``
(stride-2 1x1 convs) fails it: 16-20 of 20 draws wrong at 2 threads.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import contextlib, json, sys
import torch
import shared_model.batch_norm
import shared_model.kernels
from shared_model.kernels import reference_kernels
from shared_model.ops import FactorizedReduce, ReLUConvBN, make_op

threads, stride_ops = int(sys.argv[1]), sys.argv[2].split(",")
torch.set_num_threads(threads)
shared_model.batch_norm.FOLD_MIN_NUMEL = 0  # the folded batch norm at these small shapes too
shared_model.kernels._SPLIT_MIN_NUMEL = 0  # and the 5x5 weight gradient in column blocks
worst = {}

def compare(key, build, c_in, seed):
    # Channels-last (fast kernels) against NCHW, and channels-last fast against the reference path.
    torch.manual_seed(seed)
    module = build()
    for m in module.modules():  # the flipped-kernel input gradient at these small shapes too
        if hasattr(m, "min_numel"):
            m.min_numel = 0
    x = torch.randn(16, c_in, 8, 8)
    grads, probe = [], None
    for channels_last, reference in ((False, False), (True, False), (True, True)):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        m = module.to(memory_format=fmt)
        xi = x.clone().contiguous(memory_format=fmt).requires_grad_()
        for p in m.parameters():
            p.grad = None
        with reference_kernels() if reference else contextlib.nullcontext():
            out = m(xi)
        if probe is None:  # a random projection: sum(out**2) after BN is nearly constant
            probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
        with reference_kernels() if reference else contextlib.nullcontext():
            (out * probe).sum().backward()
        grads.append([xi.grad.clone()] + [p.grad.clone() for p in m.parameters()])
    for name, (a_set, b_set) in (("layout", grads[:2]), ("kernels", grads[1:])):
        err = max(float((a - b).norm() / (a.norm() + 1e-12)) for a, b in zip(a_set, b_set))
        worst[f"{name}:{key}"] = max(worst.get(f"{name}:{key}", 0.0), err)

for seed in range(4):
    for c_in in (2, 4, 6):
        compare(f"factorized_reduce/{c_in}", lambda: FactorizedReduce(c_in, 8), c_in, seed)
        compare(f"relu_conv_bn_1x1/{c_in}", lambda: ReLUConvBN(c_in, 8, 1, 1, 0), c_in, seed)
        for name in stride_ops:
            for stride in (1, 2):
                compare(f"{name}/s{stride}/{c_in}", lambda: make_op(name, c_in, stride), c_in, seed)
print(json.dumps(worst))
"""

# Dilated 5x5 kernels run the same oneDNN kernels as their 3x3 twins; the undilated 5x5
# weight gradient is computed in column blocks (shared_model.kernels._depthwise_weight_grad).
OPS = ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "avg_pool_3x3", "max_pool_3x3",
       "conv_7x1_1x7")


@pytest.mark.parametrize("isa", ["native", "AVX2"])
@pytest.mark.parametrize("threads", [1, 2])
def test_channels_last_gradients_match_nchw_in_a_child_process(threads, isa):
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa != "native":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(threads), ",".join(OPS)], env=env,
                              capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the kernel check hung (threads={threads}, isa={isa})")
    assert proc.returncode == 0, (
        f"the kernel check crashed (exit {proc.returncode}, threads={threads}, isa={isa}): "
        f"{proc.stderr.strip()[-600:]}")
    worst = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = {k: v for k, v in worst.items() if v > 1e-3}
    assert not bad, f"channels-last gradients differ from NCHW (threads={threads}, isa={isa}): {bad}"
    assert len(worst) == 2 * 3 * (2 + 2 * len(OPS))
