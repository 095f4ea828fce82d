"""Joining and leaving the process group torchrun describes; failures of other processes.

``torchrun`` starts one process per device and tells each its ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` (PyTorch docs, "torchrun (Elastic Launch)").
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import sys
from typing import Iterator, NoReturn

import torch

from enas.distributed.dist import CollectiveError, Dist
from enas.errors import UserError

#: How long a process waits for the others in one collective (torch's default for gloo).
TIMEOUT = datetime.timedelta(minutes=30)


def launched() -> bool:
    """Whether ``torchrun`` started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_device(setting: str, local_rank: int) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` for ``auto`` / ``cuda`` with GPUs, else the CPU."""
    from enas.runtime import resolve_device

    if setting not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {setting}: under torchrun every process uses cuda:LOCAL_RANK; "
                        "pass --device cuda (or auto, or cpu)")
    device = resolve_device(setting)
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"this node has {torch.cuda.device_count()} GPU(s), fewer than its processes "
                        "(--nproc-per-node); start at most one process per GPU")
    return torch.device("cuda", local_rank)


def comm_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says another process is gone (killed, crashed, network down, timed out)."""
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(m in text for m in (
        "Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out", "timed out",
        "NCCL communicator was aborted", "gloo/transport", "ProcessGroup"))


def _first_sentence(exc: BaseException) -> str:
    """``Read error [127.0.0.1]:25512: Connection reset by peer`` of a gloo / NCCL message."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    return (text.split(". ")[0] or type(exc).__name__)[:200]


@contextlib.contextmanager
def session() -> Iterator[Dist]:
    """This process's :class:`Dist` for one command: joins the process group torchrun describes
    and leaves it on exit. Call :meth:`Dist.configure` once the config is known.

    The group has gloo for CPU tensors and, where CUDA exists, NCCL for CUDA tensors
    (``cpu:gloo,cuda:nccl``), so the collectives of a run use NCCL when it trains on GPUs
    and gloo when it trains on CPUs, whatever the saved config of a resumed run says.
    A collective that fails because another process is gone becomes one line that
    process 0 prints.
    """
    if not launched():
        yield Dist()
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda and local < torch.cuda.device_count():
        torch.cuda.set_device(local)  # NCCL's communicator and every CUDA tensor of this process
    torch.distributed.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=TIMEOUT)
    dist = Dist(rank, world)
    dist.local_rank = local
    try:
        yield dist
        torch.distributed.barrier()  # no process leaves while another still talks to it
    except Exception as exc:
        if not isinstance(exc, UserError) and comm_failure(exc):
            raise CollectiveError(
                "lost contact with another process of the run (it failed or was killed; its own message, if "
                f"any, is above: {_first_sentence(exc)}); the last checkpoint is intact, continue with --resume",
                report=rank == 0) from None
        raise
    finally:
        with contextlib.suppress(Exception):
            torch.distributed.destroy_process_group()


def exit_worker(code: int) -> NoReturn:
    """End a torchrun worker with ``code`` now, without Python's interpreter finalization.

    ``destroy_process_group`` leaves gloo's worker threads running; one of them can still be
    releasing a finished collective (a barrier keeps the earlier all-gather's tensors, which
    Python owns) while the interpreter shuts down, and its GIL acquire then aborts the process
    (``terminate called without an active exception``, SIGABRT; seen in about 1 of 25 runs of a
    2-process job, PyTorch PR 179291). Output is flushed first; every file of the run is
    already closed when the command returns.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
