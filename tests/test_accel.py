"""run.compile / run.cuda_graphs (shared_model.accel): what can be checked without a GPU.

The CUDA graph cache is driven by a fake capture on CPU; the real capture runs in the
CUDA-only test below and in scripts/gpu_check.sh.
"""
import logging

import pytest
import torch
from torch import nn

from enas.errors import UserError
from enas.runtime import accelerate_supernet
from enas.config.search import build_search_config
from shared_model.accel import compile_op_banks, graph_counts, graph_op_banks, op_bank_modules
from shared_model.ops import make_op
from shared_model.spaces import make_space
from shared_model.supernet import Supernet


def tiny_supernet():
    space = make_space("micro")
    torch.manual_seed(0)
    return space, Supernet(space.ops, space.num_nodes, 4, 3, 10, in_channels=3, image_size=8, loose_inputs=True)


class FakeCapture:
    """Stands in for make_graphed_callables: records each capture and runs the module eagerly."""

    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def __call__(self, module, sample_args):
        self.calls.append((module, tuple(sample_args[0].shape), sample_args[0].requires_grad))
        if self.fail:
            raise RuntimeError("capture not supported")
        return module


def loss_and_grads(net, x, arch):
    net.zero_grad(set_to_none=True)
    logits, _ = net(x, arch)
    logits.square().mean().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def test_graph_cache_captures_once_per_module_and_shape_and_changes_nothing_else():
    space, net = tiny_supernet()
    keys = set(net.state_dict())
    arch = space.decode(space.random_actions(torch.Generator().manual_seed(1)))
    x = torch.randn(4, 3, 8, 8)
    ref_logits, ref_grads = loss_and_grads(net, x, arch)
    fake = FakeCapture()
    caches = graph_op_banks(net, capture=fake, eligible=lambda t: True)
    assert len(caches) == sum(1 for m in op_bank_modules(net) if any(True for _ in m.parameters()))
    logits, grads = loss_and_grads(net, x, arch)
    first = len(fake.calls)
    assert first > 0 and all(requires for _, _, requires in fake.calls)
    assert torch.allclose(logits, ref_logits, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and all(torch.allclose(grads[k], ref_grads[k], atol=1e-6) for k in grads)
    loss_and_grads(net, x, arch)  # same path, same shapes: replay only
    assert len(fake.calls) == first and sum(graph_counts(caches)) == first
    loss_and_grads(net, torch.randn(2, 3, 8, 8), arch)  # another batch size: new graphs
    assert len(fake.calls) == 2 * first
    net.eval()
    with torch.no_grad():
        net(x, arch)  # evaluation (rewards) runs eagerly
    assert len(fake.calls) == 2 * first
    assert set(net.state_dict()) == keys


def test_relu_done_calls_get_their_own_graph_and_failures_stay_eager(caplog):
    op = make_op("sep_conv_3x3", 4, 1, affine=False)
    holder = nn.Module()
    holder.edges = nn.ModuleList([nn.ModuleList([op])])
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    expected = op(x)
    fake = FakeCapture(fail=True)
    (cache,) = graph_op_banks(holder, capture=fake, eligible=lambda t: True)
    with caplog.at_level(logging.WARNING, logger="shared_model.accel"):
        assert torch.allclose(op(x), expected)
        assert torch.allclose(op(torch.relu(x), relu_done=True), expected)
    assert len(cache.graphs) == 2 and list(graph_counts([cache])) == [0]
    assert "runs eagerly" in caplog.text
    op(x)
    assert len(fake.calls) == 2  # a failed capture is not retried


def test_cuda_graphs_refuse_the_cpu_and_exclude_compile():
    _, net = tiny_supernet()
    with pytest.raises(UserError, match="run.cuda_graphs needs a CUDA device"):
        accelerate_supernet(net, torch.device("cpu"), cuda_graphs=True)
    assert accelerate_supernet(net, torch.device("cpu")) == ""
    with pytest.raises(UserError, match="exclude each other"):
        build_search_config("enas", "quick", None, {"run.compile": True, "run.cuda_graphs": True})
    cfg = build_search_config("enas", "quick", None, {"run.compile": True})
    assert cfg.run.compile and not cfg.run.cuda_graphs


def test_compiled_op_bank_matches_eager_and_keeps_its_state_dict():
    torch.manual_seed(0)
    holder = nn.Module()
    bank = [make_op("sep_conv_3x3", 4, 1, affine=False), make_op("skip_connect", 4, 1)]
    holder.edges = nn.ModuleList([nn.ModuleList(bank)])
    op = holder.edges[0][0]
    x = torch.randn(2, 4, 6, 6)
    expected = op(x)
    keys = set(holder.state_dict())
    assert compile_op_banks(holder, torch.device("cpu")) == 1  # the identity has nothing to compile
    assert torch.allclose(op(x), expected, atol=1e-5)
    assert set(holder.state_dict()) == keys


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_graphs_match_eager_on_a_supernet_step():
    space, net = tiny_supernet()
    net = net.cuda()
    arch = space.decode(space.random_actions(torch.Generator().manual_seed(1)))
    x = torch.randn(4, 3, 8, 8, device="cuda")
    ref_logits, ref_grads = loss_and_grads(net, x, arch)
    caches = graph_op_banks(net)
    for _ in range(2):
        logits, grads = loss_and_grads(net, x, arch)
    assert sum(graph_counts(caches)) > 0
    assert torch.allclose(logits, ref_logits, atol=1e-4)
    assert all(torch.allclose(grads[k], ref_grads[k], atol=1e-4) for k in ref_grads)


def test_retain_freed_memory_is_a_harmless_process_setting():
    import sys

    from enas.runtime import retain_freed_memory

    first, second = retain_freed_memory(), retain_freed_memory()
    assert first == second and isinstance(first, bool)
    assert first or not sys.platform.startswith("linux") or "glibc" not in " ".join(__import__("platform").libc_ver())
    x = torch.ones(9_000_000)  # 36 MB: above glibc's largest mmap threshold
    del x
    assert float(torch.ones(9_000_000).sum()) == 9_000_000
