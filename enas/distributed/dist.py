"""This process's place in a torch.distributed run and the collectives the stages use.

Every method of :class:`Dist` is the identity in one process, so the code paths of a
single process are exactly those without torch.distributed.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from enas.errors import UserError

logger = logging.getLogger(__name__)


class CollectiveError(UserError):
    """An error all processes raise together; only the process named by ``report`` prints it."""

    def __init__(self, message: str, report: bool):
        super().__init__(message)
        self.report = report


def _seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (independent streams per key tuple)."""
    state = np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(2, dtype=np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) & (2**63 - 1)


def digest(obj: Any) -> int:
    """A 63-bit hash of nested dicts / lists of tensors, numbers and strings (bitwise for tensors)."""
    h = hashlib.blake2b(digest_size=8)

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for k, v in x.items():
                feed(str(k))
                feed(v)
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    feed(obj)
    return int.from_bytes(h.digest(), "little") & (2**63 - 1)


class Dist:
    """This process's place in the run and the collectives the stages use.

    Attributes:
        rank, world: this process and the number of processes.
        device: where this process trains (and where NCCL collectives run).
        seed: the run seed (per-process random streams are derived from it).
    """

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device = torch.device("cpu"),
                 seed: int = 0):
        self.rank, self.world, self.device, self.seed = rank, world, torch.device(device), int(seed)
        self.local_rank = 0

    def configure(self, device: str, seed: int) -> torch.device:
        """Set the run seed and this process's device from the config (``run.device``, ``run.seed``).

        One process: :func:`enas.runtime.resolve_device`. Several: ``cuda:LOCAL_RANK`` for
        ``auto``/``cuda`` where GPUs exist, else the CPU; another device is one error on all.
        """
        from enas.distributed.group import process_device
        from enas.runtime import resolve_device

        self.seed = int(seed)
        if self.world == 1:
            self.device = resolve_device(device)
        else:
            self.device = self.agree(lambda: process_device(device, self.local_rank))
        return self.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Dist(rank={self.rank}, world={self.world}, device={self.device})"

    # -- collectives ---------------------------------------------------------
    def all_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum over the processes (a tensor on :attr:`device`)."""
        if self.world > 1:
            torch.distributed.all_reduce(tensor)
        return tensor

    def mean(self, tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The element-wise mean over the processes of each tensor, in one flat all-reduce."""
        tensors = list(tensors)
        if self.world == 1 or not tensors:
            return tensors
        flat = torch.cat([t.detach().reshape(-1).to(self.device, torch.float32) for t in tensors])
        self.all_sum_(flat).div_(self.world)
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset:offset + t.numel()].view(t.shape).to(t.device, t.dtype))
            offset += t.numel()
        return out

    def broadcast(self, obj: Any) -> Any:
        """Process 0's ``obj`` on every process."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> List[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if self.world == 1:
            return [obj]
        out: List[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Process 0's buffers (BatchNorm running statistics) on every process, one broadcast per dtype."""
        if self.world == 1:
            return
        by_dtype: Dict[torch.dtype, List[torch.Tensor]] = {}
        for b in module.buffers():
            by_dtype.setdefault(b.dtype, []).append(b)
        for buffers in by_dtype.values():
            flat = torch.cat([b.detach().reshape(-1).to(self.device) for b in buffers])
            torch.distributed.broadcast(flat, src=0)
            for b, part in zip(buffers, torch.split(flat, [b.numel() for b in buffers])):
                b.copy_(part.view(b.shape))

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any."""
        if self.world == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    # -- agreement -------------------------------------------------------------
    def agree(self, fn: Callable[[], Any], main_only: bool = False, share: bool = True) -> Any:
        """Run ``fn`` on every process (``main_only``: on process 0, its result broadcast when
        ``share``); a failure on any process raises the same error on all of them.

        A :class:`~enas.errors.UserError` becomes one :class:`CollectiveError` that process 0
        prints (naming the process that met it); any other exception is re-raised with its
        traceback on the process that met it.
        """
        result, own, message = None, None, None
        if self.is_main or not main_only:
            try:
                result = fn()
            except Exception as exc:  # noqa: BLE001 - reported to every process below
                own = exc
                message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        if self.world == 1:
            if own is not None:
                raise own
            return result
        failed = [(r, m) for r, m in enumerate(self.gather(message)) if m is not None]
        if failed:
            if own is not None and not isinstance(own, UserError):
                raise own
            rank, text = failed[0]
            where = "" if rank == 0 or len(failed) == self.world else f"process {rank} of {self.world}: "
            raise CollectiveError(where + text, report=self.is_main)
        return self.broadcast(result) if main_only and share else result

    def check_same(self, what: str, obj: Any) -> None:
        """Raise on every process unless ``obj`` is bitwise the same on all of them."""
        if self.world == 1:
            return
        d = digest(obj)
        t = torch.tensor([d, -d], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        if int(t[0]) != -int(t[1]):
            raise CollectiveError(
                f"the {what} differ between the {self.world} processes; they must stay identical (nodes "
                "with different GPUs or library versions can round differently); the last checkpoint "
                "is intact", report=self.is_main)

    # -- work sharing and random streams --------------------------------------
    def share(self, n: int) -> range:
        """The indices of ``n`` work items this process takes (round robin)."""
        return range(self.rank, n, self.world)

    def combine(self, values: Sequence[float], mine: Sequence[int]) -> List[float]:
        """Every process's ``values[i]`` for its own ``i in mine``, exactly, on every process."""
        if self.world == 1:
            return [float(v) for v in values]
        t = torch.zeros(len(values), dtype=torch.float64, device=self.device)
        for i in mine:
            t[i] = float(values[i])
        return self.all_sum_(t).tolist()  # x + 0.0 == x: the gather is exact

    def generator(self, *keys: int) -> torch.Generator:
        """A CPU generator of this process for ``keys`` (e.g. epoch, step): independent per process,
        reproducible and free of state, so a resumed run (with any number of processes) draws anew."""
        return torch.Generator().manual_seed(_seed(self.seed, 0x5EED, self.rank, *keys))

    # -- random state and checkpoints ------------------------------------------
    def seed_processes(self) -> None:
        """Give processes 1.. their own global RNG (dropout, drop path); process 0 keeps the run's."""
        if self.rank > 0:
            torch.manual_seed(_seed(self.seed, self.rank))

    def rng_state(self, generators: Dict[str, torch.Generator]) -> Dict[str, Any]:
        """The checkpoint's random state: the shared generators plus every process's global RNG."""
        from enas.runs.checkpoint import rng_state

        state = rng_state(generators, all_cuda=self.world == 1)
        if self.world > 1:
            mine = {"torch": torch.get_rng_state()}
            if self.device.type == "cuda":
                mine["cuda"] = torch.cuda.get_rng_state(self.device)
            state["processes"] = self.gather(mine)
        return state

    def set_rng_state(self, state: Dict[str, Any], generators: Dict[str, torch.Generator], step: int) -> None:
        """Restore :meth:`rng_state`; a checkpoint of another process count reseeds processes 1.."""
        from enas.runs.checkpoint import set_rng_state

        set_rng_state(state, generators, all_cuda=self.world == 1)
        saved = state.get("processes")
        if self.world == 1:
            return
        if saved is not None and len(saved) == self.world:
            torch.set_rng_state(saved[self.rank]["torch"])
            if "cuda" in saved[self.rank] and self.device.type == "cuda":
                torch.cuda.set_rng_state(saved[self.rank]["cuda"], self.device)
        elif self.rank > 0:
            torch.manual_seed(_seed(self.seed, self.rank, step))

    def load_checkpoint(self, path: Path, kind: Optional[str] = None,
                        loader: Optional[Callable[[Path], Dict[str, Any]]] = None) -> Dict[str, Any]:
        """Process 0 reads and checks the checkpoint, every process gets the same content
        (no shared file system needed); a bad file is one error on all processes."""
        from enas.runs.checkpoint import load_checkpoint

        read = loader or (lambda p: load_checkpoint(p, kind=kind))
        return self.agree(lambda: read(path), main_only=True)

    def check_batch(self, batch: int, what: str = "data.batch_size") -> None:
        """The global batch must split into equal per-process batches of at least 2 (batch-statistics BN)."""
        if self.world == 1:
            return
        if batch % self.world or batch // self.world < 2:
            lower = batch - batch % self.world
            fits = [b for b in (lower, lower + self.world) if b // self.world >= 2]
            raise CollectiveError(
                f"{what} {batch} is the global batch of one step and must split into {self.world} equal "
                f"per-process batches of at least 2 images (e.g. {' or '.join(map(str, fits))})",
                report=self.is_main)
