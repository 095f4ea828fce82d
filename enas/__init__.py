"""enas: neural architecture search for image classification (ENAS, DARTS, random search).

The public API (documented in :mod:`enas.api` and README "Python API"); every
name loads torch only when first used, so ``import enas`` stays cheap:

* :func:`run_search` - search an architecture (``enas search``) -> :class:`SearchResult`
* :func:`derive` - re-derive a search run's genotype (``enas derive``)
* :func:`train` - retrain an architecture from scratch (``enas train``) -> :class:`TrainResult`
* :func:`evaluate` - test a retrained checkpoint (``enas evaluate``) -> dict
* :func:`export` - ONNX / TorchScript file of a retrained checkpoint (``enas export``) -> dict
* :func:`load_genotype` - a zoo name, JSON file, run folder or architecture string -> architecture
* :func:`build_child` - the network ``enas train`` builds for an architecture -> ``torch.nn.Module``
* :class:`UserError` - the one exception for bad input (one line)
"""
from enas.errors import UserError

__all__ = ["SearchResult", "TrainResult", "UserError", "build_child", "derive", "evaluate", "export",
           "load_genotype", "run_search", "train"]


def __getattr__(name: str):
    # PEP 562: the API module (and torch behind it) is imported on first use only.
    if name in __all__:
        from enas import api

        return getattr(api, name)
    raise AttributeError(f"module 'enas' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
