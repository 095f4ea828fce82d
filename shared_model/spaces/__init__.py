"""Search spaces as plugins: a registry of space modules (see :mod:`.base` for the contract).

Registered here: ``micro`` (ENAS micro, Pham et al. 2018) and ``darts`` (Liu et
al. 2019), the cell spaces of :mod:`.cell`; ``nb201`` (NAS-Bench-201, Dong &
Yang 2020) in :mod:`.nb201`; ``macro`` (ENAS macro, Pham et al. 2018) in
:mod:`.macro`. A new space is one module that subclasses
:class:`Space` and registers a factory with :func:`register_space`; import it
here (or anywhere before :func:`get_space`) to make it available.
"""
from shared_model.spaces.base import CellGraph, Decision, Space, enas_op_bias
from shared_model.spaces.registry import get_space, list_spaces, register_space, space_for_arch, space_for_json
from shared_model.spaces.cell import CONCAT_RULES, SearchSpace, make_space  # registers micro, darts
from shared_model.spaces import nb201 as _nb201  # noqa: F401  registers nb201
from shared_model.spaces import macro as _macro  # noqa: F401  registers macro

__all__ = ["CONCAT_RULES", "CellGraph", "Decision", "SearchSpace", "Space", "enas_op_bias", "get_space",
           "list_spaces", "make_space", "register_space", "space_for_arch", "space_for_json"]
