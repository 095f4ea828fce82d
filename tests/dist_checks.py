"""Checks of enas.distributed run inside a 2-process gloo job (started by tests/test_distributed.py
with ``python -m torch.distributed.run --nproc-per-node 2 tests/dist_checks.py``).

Each check compares what the processes compute together with what one process computes
alone; every process prints ``process R: ok NAME`` per check and ``process R: ALL OK``.
"""
import math
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from enas.distributed import CollectiveError, Dist, GradientAverager, exit_worker, session  # noqa: E402
from enas.errors import UserError  # noqa: E402
from enas.flat_sgd import FlatSGD  # noqa: E402


def ops():
    torch.manual_seed(0)
    return nn.ModuleDict({k: nn.Linear(4, 4) for k in "abcd"})


def path_loss(net, x, path):
    h = x
    for k in path:
        h = torch.tanh(net[k](h))
    return h.pow(2).mean()


def data(rank):
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(8, 4, generator=g)


PATHS = {0: "ab", 1: "bc"}  # "d" is on no process's path


def check_gradients_of_different_paths(dist: Dist) -> None:
    """Averaged gradients = (g0 + g1) / 2 with zeros off a process's path; unused by all: None."""
    for off_path_zeros, flat in ((False, False), (True, False), (True, True)):
        net = ops()
        if flat:  # the search's optimizer: gradients are views of one buffer, reduced as one
            opt = FlatSGD(list(net.parameters()), lr=0.1, momentum=0.9)
            assert opt.attach_grads()
        else:
            opt = torch.optim.SGD(net.parameters(), lr=0.1)
        if off_path_zeros and not flat:  # ChildTrainer with update_off_path: every parameter holds a zero gradient
            for p in net.parameters():
                p.grad = torch.zeros_like(p)
        path_loss(net, data(dist.rank), PATHS[dist.rank]).backward()
        stats = GradientAverager(dist)(opt, torch.tensor([float(dist.rank), 1.0]))
        assert stats.tolist() == [0.5, 1.0], stats
        expected = {}
        for r in (0, 1):  # what each process computed, recomputed here
            ref = ops()
            path_loss(ref, data(r), PATHS[r]).backward()
            for name, p in ref.named_parameters():
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                expected[name] = expected.get(name, 0) + g
        for name, p in net.named_parameters():
            if name.startswith("d.") and not off_path_zeros:
                assert p.grad is None, name  # used by no process: the optimizer skips it
            else:
                assert torch.equal(p.grad, expected[name] / 2), name
        assert not flat or opt.flat_grad() is not None  # still views: the flat step follows


def check_split_batch_equals_whole_batch(dist: Dist) -> None:
    """Without batch statistics, the mean of the processes' half-batch gradients is the whole batch's."""
    torch.manual_seed(1)
    whole = torch.randn(8, 4)
    net, ref = ops(), ops()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    path_loss(net, whole.tensor_split(dist.world)[dist.rank], "abc").backward()
    GradientAverager(dist)(opt, torch.zeros(2))
    path_loss(ref, whole, "abc").backward()
    for p, q in zip(net.parameters(), ref.parameters()):
        if q.grad is not None:
            assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def tiny_search(dist=None):
    from enas.search.build import build_search
    from enas.config.search import build_search_config

    cfg = build_search_config("enas", "quick", None, {
        "epochs": 1, "data.batch_size": 16, "model.channels": 4, "model.layers": 3, "data.limit": 200,
        "controller.samples_per_update": 5, "run.device": "cpu"})
    torch.manual_seed(0)
    return build_search(cfg, torch.device("cpu"), dist=dist)


def check_controller_update_split_equals_one_process(dist: Dist) -> None:
    """5 rewards split 3 + 2 and gathered: the same REINFORCE step, baseline and validation draws."""
    together, alone = tiny_search(dist), tiny_search()
    assert together.strategy.dist is dist and alone.strategy.dist.world == 1
    rows = [next(s.strategy.phases(0)[1].run(0)) for s in (together, alone)]
    assert rows[0] == rows[1], rows
    for p, q in zip(together.strategy.policy.parameters(), alone.strategy.policy.parameters()):
        assert torch.equal(p, q)
    assert together.strategy.reinforce.baseline == alone.strategy.reinforce.baseline
    assert torch.equal(together.generators["valid"].get_state(), alone.generators["valid"].get_state())
    assert together.strategy.epoch_best == alone.strategy.epoch_best


def check_agreement(dist: Dist) -> None:
    """A user error on process 1 alone: one error on both, printed by process 0 only."""
    def fail_on_1():
        if dist.rank == 1:
            raise UserError("data folder /nowhere not found")
        return "fine"

    try:
        dist.agree(fail_on_1)
        raise AssertionError("no error")
    except CollectiveError as exc:
        assert str(exc) == "process 1 of 2: data folder /nowhere not found" and exc.report == dist.is_main
    assert dist.agree(lambda: f"only {dist.rank}", main_only=True) == "only 0"
    dist.check_same("nothing", [torch.ones(3), 0.5])
    try:
        dist.check_same("weights", torch.full((2,), float(dist.rank)))
        raise AssertionError("no error")
    except CollectiveError as exc:
        assert "weights differ between the 2 processes" in str(exc) and exc.report == dist.is_main
    values = [math.nan, 1.0, float(dist.rank), 0.25]
    got = dist.combine(values, dist.share(4))  # 0 scores items 0 and 2, process 1 items 1 and 3
    assert math.isnan(got[0]) and got[1:] == [1.0, 0.0, 0.25], got


def check_random_state(dist: Dist) -> None:
    """Every process's global RNG is saved and restored; another process count reseeds 1.."""
    dist.seed_processes()
    gens = {"shared": torch.Generator().manual_seed(5)}
    state = dist.rng_state(gens)
    assert len(state["processes"]) == 2
    mine = torch.rand(3)
    torch.rand(7), gens["shared"].seed()
    dist.set_rng_state(state, gens, step=0)
    assert torch.equal(torch.rand(3), mine)
    assert torch.equal(gens["shared"].get_state(), state["shared"])
    other = dict(state, processes=state["processes"][:1])
    dist.set_rng_state(other, gens, step=9)  # a 1-process checkpoint: process 1 draws anew
    draws = dist.gather(torch.rand(2))
    assert not torch.equal(draws[0], draws[1])


def main() -> None:
    with session() as dist:
        dist.configure("cpu", seed=0)
        assert dist.world == 2
        for check in (check_gradients_of_different_paths, check_split_batch_equals_whole_batch,
                      check_controller_update_split_equals_one_process, check_agreement, check_random_state):
            check(dist)
            print(f"process {dist.rank}: ok {check.__name__}", flush=True)
        print(f"process {dist.rank}: ALL OK", flush=True)


if __name__ == "__main__":
    main()
    exit_worker(0)  # as the enas CLI's workers do: no interpreter shutdown racing gloo's threads
