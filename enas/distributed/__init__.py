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
  ``batch_size / WORLD_SIZE`` images of it (:class:`~enas.data.augment.DeviceLoader` ``shard``).
* Process 0 alone writes the run folder; the others write nothing.
* Whatever all processes must agree on is computed identically by all of them and
  checked bitwise (:meth:`Dist.check_same`); a user error met by any process during
  set-up ends every process with that one message (:meth:`Dist.agree`).

Modules: :mod:`~enas.distributed.group` (joining and leaving the process group,
failures), :mod:`~enas.distributed.dist` (:class:`Dist`: collectives, agreement, checks,
random state), :mod:`~enas.distributed.grads` (gradient averaging).
"""
from enas.distributed.dist import CollectiveError, Dist, digest
from enas.distributed.grads import GradientAverager
from enas.distributed.group import comm_failure, exit_worker, launched, session

__all__ = ["CollectiveError", "Dist", "GradientAverager", "comm_failure", "digest", "exit_worker", "launched",
           "session"]
