"""Gradient averaging over the processes of a torch.distributed run (one flat all-reduce)."""
from __future__ import annotations

import torch

from enas.distributed.dist import Dist
from enas.flat_sgd import FlatSGD


class GradientAverager:
    """:class:`~enas.search.trainer.ChildTrainer`'s ``reducer``: gradients and step statistics
    averaged over the processes.

    Every optimizer parameter goes into one flat all-reduce, with zeros where this process
    has no gradient (its architecture did not use the weight), so all processes run the
    same collective whatever path each one trained: no ``find_unused_parameters`` search,
    no hang. The sum is divided by the number of processes, not by how many used the
    weight: the result is the gradient of the mean of the processes' losses, so a weight
    on one process's path only gets ``1 / WORLD_SIZE`` of its gradient, that path's share
    of the step. A weight no process used keeps no gradient (the optimizer skips it, as
    with ``optim.update_off_path`` off in one process). ``grads=False`` averages only the
    statistics (DistributedDataParallel already averaged the gradients). With the optimizer's
    gradients the views of one buffer (:class:`enas.flat_sgd.FlatSGD`) the buffer itself is
    reduced, with the same result (every process then holds every gradient, zeros off its path).
    """

    def __init__(self, dist: Dist, grads: bool = True):
        self.dist, self.grads = dist, grads

    def __call__(self, optimizer: torch.optim.Optimizer, stats: torch.Tensor) -> torch.Tensor:
        if not self.grads:
            return self.dist.mean([stats])[0]
        flat = optimizer.flat_grad() if isinstance(optimizer, FlatSGD) else None
        if flat is not None:
            # Every parameter holds a gradient, a view of one buffer (zeros off this process's
            # path): one copy in, one all-reduce, one copy out; every parameter counts as used.
            k = stats.numel()
            both = torch.cat([flat.float(), stats.float().reshape(-1).to(flat.device)])
            self.dist.all_sum_(both).div_(self.dist.world)
            flat.copy_(both[:-k])
            return both[-k:].to(stats.device).view(stats.shape)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.dist.device)
        k = stats.numel()
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                          for p in params] + [used, stats.float().reshape(-1).to(self.dist.device)])
        self.dist.all_sum_(flat).div_(self.dist.world)
        users = flat[-len(params) - k:-k].tolist()  # > 0: some process used the parameter
        parts = torch.split(flat[:-len(params) - k], [p.numel() for p in params])
        into, values = [], []
        for p, part, n in zip(params, parts, users):
            if n == 0:
                p.grad = None
            elif p.grad is None:
                p.grad = torch.empty_like(p).copy_(part.view(p.shape))
            else:
                into.append(p.grad)
                values.append(part.view(p.shape))
        if into:
            torch._foreach_copy_(into, values)
        return flat[-k:].to(stats.device).view(stats.shape)
