"""Shared test fixtures.

Real-data tests look for the read-only reference data beside the checkout
(``../shared/data``, override with ``ENAS_SHARED_DATA``) and skip when absent.
"""
import os
from pathlib import Path

import pytest
import torch

from enas.native import load_native_kernels

load_native_kernels()  # as every `enas search` / `enas train` does: the suite runs the compiled batch norm

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ENAS_SHARED_DATA", REPO.parent / "shared" / "data"))
CIFAR10_DIR = SHARED_DATA / "cifar10"


def cifar10_available() -> bool:
    return (CIFAR10_DIR / "cifar-10-batches-py" / "data_batch_1").is_file()


@pytest.fixture(autouse=True)
def _small_threads():
    torch.set_num_threads(1)  # tiny networks: more threads only add overhead
    yield


@pytest.fixture(autouse=True)
def _native_kernels_restored():
    """Tests that switch the compiled kernels (or run a CLI that loads them) leave the session's choice."""
    from shared_model.native_bn import native_kernels, set_native_kernels

    saved = native_kernels()
    yield
    set_native_kernels(saved)
