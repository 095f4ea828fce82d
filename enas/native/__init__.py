"""Build, cache and register the compiled CPU kernels (``kernels.c``).

The kernels: the batch norm of :mod:`shared_model.native_bn` (with a fused ReLU
and per-sample factors) and the depthwise weight gradient that
:func:`shared_model.kernels._depthwise_weight_grad` takes for 5x5 and dilated
kernels. :func:`load_native_kernels` compiles ``kernels.c`` once with the system C
compiler (``$CC``, else ``cc``) into ``$ENAS_CACHE_DIR`` (default
``$XDG_CACHE_HOME/enas`` or ``~/.cache/enas``), loads it with :mod:`ctypes`
and registers it with :func:`shared_model.native_bn.set_native_kernels`. The
library is named after a hash of the source, the flags and the compiler, is
written to a temporary name and renamed into place (concurrent ranks cannot
see a partial file), and carries one copy of each loop per x86-64 level
(``target_clones``), so one cached build serves AVX-512, AVX2 and older CPUs.
It links OpenMP, which resolves to the ``libgomp`` torch has already loaded:
one thread pool, sized per call to ``torch.get_num_threads()``.

Anything that fails (not Linux x86-64, no compiler, no OpenMP, a read-only
cache) leaves the kernels unregistered and the batch norms on ATen's paths;
``ENAS_NATIVE_KERNELS=0`` does the same on purpose. Called by
``enas.runtime.configure_threads`` (every ``enas search`` / ``enas train``)
and the benchmarks.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import torch

from shared_model.native_bn import native_kernels, set_native_kernels

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.c")
#: -ffp-contract=off: the backward recomputes the forward's ReLU mask with bit-identical arithmetic.
#: -fno-trapping-math: lets GCC turn that mask into a vector select in the AVX2 clone. Without it only
#: the AVX-512 clone (masked loads) vectorized the fused-ReLU backward; on an AMD EPYC (AVX2) it ran
#: scalar with a branch per element, 12x slower: 32 against 2.7 ms at (96, 36, 32, 32). Same results.
CFLAGS = ("-O3", "-std=gnu11", "-fPIC", "-shared", "-fopenmp", "-ffp-contract=off", "-fno-math-errno",
          "-fno-trapping-math")
_P, _I, _N, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _per(x: torch.Tensor, k: int) -> int:
    """Super-rows per sample (the caller checks that ``k`` divides ``H * W`` when it passes sample factors)."""
    return max(x.shape[2] * x.shape[3] // k, 1)


class _Kernels:
    """The loaded library, called on tensors (:class:`shared_model.native_bn.NativeKernels`)."""

    def __init__(self, lib: ctypes.CDLL, path: Path):
        self.path = path
        self._fwd, self._bwd = lib.enas_bn_forward, lib.enas_bn_backward
        self._fwd.argtypes = [_P, _P, _I, _I, _I, _P, _P, _P, _P, _N, _D, _D, _N, _P, _I, _P, _P, _P, _P, _N]
        self._bwd.argtypes = [_P, _P, _P, _I, _I, _I, _P, _P, _P, _P, _N, _N, _P, _I, _P, _P, _N]
        self._dw = lib.enas_dw_wgrad
        self._dw.argtypes = [_P, _P, _P] + [_I] * 10 + [_N]
        self._fwd.restype = self._bwd.restype = self._dw.restype = _N

    def forward(self, x, y, k, weight, bias, running_mean, running_var, use_batch, momentum, eps, relu,
                sample_scale, save_mean, save_invstd, a, b) -> None:
        c = x.shape[1]
        rc = self._fwd(x.data_ptr(), y.data_ptr(), x.numel() // c, c, k, _ptr(weight), _ptr(bias),
                       _ptr(running_mean), _ptr(running_var), int(use_batch), float(momentum), float(eps),
                       int(relu), _ptr(sample_scale), _per(x, k), save_mean.data_ptr(), save_invstd.data_ptr(),
                       a.data_ptr(), b.data_ptr(), torch.get_num_threads())
        if rc:
            raise MemoryError("native batch norm: out of memory")

    def backward(self, g, x, dx, k, mean, invstd, a, b, use_batch, relu, sample_scale, grad_weight,
                 grad_bias) -> None:
        c = x.shape[1]
        rc = self._bwd(g.data_ptr(), x.data_ptr(), _ptr(dx), x.numel() // c, c, k, mean.data_ptr(),
                       invstd.data_ptr(), a.data_ptr(), b.data_ptr(), int(use_batch), int(relu),
                       _ptr(sample_scale), _per(x, k), _ptr(grad_weight), _ptr(grad_bias), torch.get_num_threads())
        if rc:
            raise MemoryError("native batch norm: out of memory")

    def depthwise_weight_grad(self, g, x, kernel, padding, dilation) -> torch.Tensor:
        n, c, h, w = x.shape
        gw = x.new_empty(c, 1, *kernel)
        rc = self._dw(g.data_ptr(), x.data_ptr(), gw.data_ptr(), n, c, h, w, kernel[0], kernel[1], dilation[0],
                      dilation[1], padding[0], padding[1], torch.get_num_threads())
        if rc:
            raise MemoryError("native depthwise weight gradient: out of memory")
        return gw


def cache_dir() -> Path:
    """Where built libraries are kept: ``$ENAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/enas`` or ``~/.cache/enas``."""
    if os.environ.get("ENAS_CACHE_DIR"):
        return Path(os.environ["ENAS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "enas"


def build(compiler: Optional[str] = None, extra_flags: tuple = (), directory: Optional[Path] = None) -> Path:
    """Compile ``kernels.c`` into the cache (once per source, flags and compiler); returns its path.

    Raises:
        OSError: no compiler, or the compiler failed (its message in the exception).
    """
    cc = compiler or os.environ.get("CC") or "cc"
    exe = shutil.which(cc)
    if exe is None:
        raise OSError(f"no C compiler {cc!r} on PATH")
    flags = CFLAGS + tuple(extra_flags)
    key = hashlib.sha256(SOURCE.read_bytes() + repr((flags, exe, os.path.getmtime(exe))).encode()).hexdigest()[:16]
    out_dir = directory or cache_dir()
    target = out_dir / f"enas_kernels_{key}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        try:
            proc = subprocess.run([exe, *flags, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True,
                                  timeout=300)
        except subprocess.TimeoutExpired:
            raise OSError(f"{cc} took more than 300 s") from None
        if proc.returncode:
            raise OSError(f"{cc} failed: {proc.stderr.strip()[:500]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_native_kernels() -> bool:
    """Build (if needed), load and register the kernels; returns whether they are registered.

    Idempotent. Never raises: a failed build or load is logged (info level) and
    the batch norms keep ATen's paths.
    """
    if native_kernels() is not None:
        return True
    if os.environ.get("ENAS_NATIVE_KERNELS", "1").strip().lower() in ("0", "off", "false", "no"):
        log.debug("native kernels off (ENAS_NATIVE_KERNELS)")
        return False
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        log.debug("native kernels: only built on Linux x86-64")
        return False
    try:
        path = build()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:  # a damaged cached file: build it again, once
            path.unlink(missing_ok=True)
            path = build()
            lib = ctypes.CDLL(str(path))
        set_native_kernels(_Kernels(lib, path))
    except (OSError, AttributeError) as exc:  # AttributeError: a library without the entry points
        log.info("compiled CPU kernels unavailable (%s); using PyTorch's kernels", exc)
        return False
    log.debug("native kernels loaded from %s", path)
    return True
