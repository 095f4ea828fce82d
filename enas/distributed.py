"""One run in several processes: ``torch.distributed`` launched by ``torchrun`` (README "Several GPUs").

``torchrun`` starts one process per device and tells each its ``RANK``, ``LOCAL_RANK``
and ``WORLD_SIZE`` (PyTorch docs, "torchrun (Elastic Launch)"). :func:`session` joins
the process group those variables describe (NCCL when the process trains on CUDA,
on ``cuda:LOCAL_RANK``; gloo on the CPU), hands out a :class:`Dist` and leaves the
group on exit. Without ``torchrun`` (or with one process) it hands out the
single-process :class:`Dist`, whose every method is the identity, so the code paths
of one process are exactly those of before.

Conventions every stage follows (the maths is in the README):

* ``data.batch_size`` is the global batch of one optimizer step; each process takes
  ``batch_size / WORLD_SIZE`` images of it (:class:`~enas.augment.DeviceLoader` ``shard``).
* Process 0 alone writes the run folder; the others write nothing.
* Whatever all processes must agree on is computed identically by all of them and
  checked bitwise (:meth:`Dist.check_same`); a user error met by any process during
  set-up ends every process with that one message (:meth:`Dist.agree`).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from enas.errors import UserError

logger = logging.getLogger(__name__)

#: How long a process waits for the others in one collective (torch's default for gloo).
TIMEOUT = datetime.timedelta(minutes=30)


class CollectiveError(UserError):
    """An error all processes raise together; only the process named by ``report`` prints it."""

    def __init__(self, message: str, report: bool):
        super().__init__(message)
        self.report = report


def launched() -> bool:
    """Whether ``torchrun`` started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


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
        from enas.runtime import resolve_device

        self.seed = int(seed)
        if self.world == 1:
            self.device = resolve_device(device)
        else:
            self.device = self.agree(lambda: _device(device, self.local_rank))
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
        from enas.checkpoint import rng_state

        state = rng_state(generators, all_cuda=self.world == 1)
        if self.world > 1:
            mine = {"torch": torch.get_rng_state()}
            if self.device.type == "cuda":
                mine["cuda"] = torch.cuda.get_rng_state(self.device)
            state["processes"] = self.gather(mine)
        return state

    def set_rng_state(self, state: Dict[str, Any], generators: Dict[str, torch.Generator], step: int) -> None:
        """Restore :meth:`rng_state`; a checkpoint of another process count reseeds processes 1.."""
        from enas.checkpoint import set_rng_state

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
        from enas.checkpoint import load_checkpoint

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
    statistics (DistributedDataParallel already averaged the gradients).
    """

    def __init__(self, dist: Dist, grads: bool = True):
        self.dist, self.grads = dist, grads

    def __call__(self, optimizer: torch.optim.Optimizer, stats: torch.Tensor) -> torch.Tensor:
        if not self.grads:
            return self.dist.mean([stats])[0]
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


def _device(setting: str, local_rank: int) -> torch.device:
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
