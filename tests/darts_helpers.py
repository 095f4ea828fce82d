"""Shared parts of the DARTS tests (test_darts.py, test_darts_unrolled.py): a cut-down DARTS
space, fixed batches and a small strategy."""
import pytest
import torch

from enas.flat_sgd import FlatSGD
from enas.search.darts import DartsStrategy, build_darts_strategy
from enas.search.trainer import ChildTrainer
from shared_model.arch_params import ArchParameters
from shared_model.spaces import make_space
from shared_model.supernet import Supernet

# A cut-down DARTS space (2 nodes, 4 ops with ``none``) keeps the numeric tests fast.
SMALL_OPS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny convolutions: a second thread only adds contention on a busy 2-core machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Batches:
    """Fixed batches with the ``DeviceLoader`` iteration interface."""

    def __init__(self, n: int, seed: int, batch: int = 8, classes: int = 5, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, batch, 1, 8, 8, generator=g).to(dtype)  # (n, B, 1, 8, 8)
        self.y = torch.randint(classes, (n, batch), generator=g)

    def __len__(self):
        return len(self.x)

    def epoch_batches(self, epoch, start=0):
        for i in range(start, len(self)):
            yield self.x[i], self.y[i]


def make_strategy(order=1, arch_optimizer=None, seed=0, dtype=torch.float32, unrolled_r=0.01, flat=False):
    space = make_space("darts", num_nodes=2, ops=SMALL_OPS)
    torch.manual_seed(seed)
    model = Supernet(space.ops, space.num_nodes, 4, 3, 5, in_channels=1, image_size=8).to(dtype)
    options = dict(lr=0.05, momentum=0.9, weight_decay=3e-4)
    # flat: the weight optimizer enas search builds (its buffers take the virtual step)
    opt = FlatSGD(list(model.parameters()), **options) if flat else torch.optim.SGD(model.parameters(), **options)
    trainer = ChildTrainer(model, opt, torch.device("cpu"), grad_clip=5.0)
    arch = ArchParameters.for_space(space, generator=torch.Generator().manual_seed(seed)).to(dtype)
    train, valid = Batches(3, 1, dtype=dtype), Batches(2, 2, dtype=dtype)
    if arch_optimizer is None:
        return build_darts_strategy(space, model, arch, trainer, train, valid, order=order,
                                    unrolled_r=unrolled_r)
    return DartsStrategy(space, model, arch, trainer, train, valid, arch_optimizer(arch.parameters()),
                         order=order, unrolled_r=unrolled_r)


def train_one_weight_step(s):
    x, y = s.train_loader.x[2], s.train_loader.y[2]
    s.trainer.train_step(x, y, s.arch.mixed(detach=True))  # fills the momentum buffers
