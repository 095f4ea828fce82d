"""Spaces, controllers and generators the controller and REINFORCE tests share."""
import torch

from controller import Controller
from shared_model.spaces import enas_op_bias, make_space

SPACES = {
    "micro": make_space("micro"),
    "darts": make_space("darts"),
    "tiny": make_space("micro", num_nodes=3, ops=("sep_conv_3x3", "max_pool_3x3", "skip_connect")),
}


def make_controller(space, seed=0, official=True, **kw):
    torch.manual_seed(seed)
    if official:
        bias, prior = enas_op_bias(space.sample_ops)
        kw.setdefault("op_bias_init", bias)
        kw.setdefault("normal_op_prior", prior)
    return Controller(space.decisions, len(space.sample_ops), **kw)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def op_positions(space, cell=None):
    return [i for i, d in enumerate(space.decisions) if d.kind == "op" and cell in (None, d.cell)]
