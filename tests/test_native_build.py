"""Building, caching and loading the compiled kernels, and their hot loops vectorizing for every
x86-64 level the library carries a clone for.

Which loops GCC vectorizes depends on the instruction set, not on the machine running the
tests: without ``-fno-trapping-math`` the fused-ReLU batch-norm backward vectorized for
AVX-512 (masked loads) but stayed scalar, with a branch per element, for AVX2, and ran 12x
slower on an AMD EPYC while every test on the Intel machines passed. So this test asks GCC
itself, through ``-fopt-info-vec``, for each level, whatever CPU it runs on.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

import enas.native as native
from shared_model.native_bn import native_kernels, set_native_kernels

from test_native_bn import needs_kernels

GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="no gcc (the kernels are built with the system C compiler)")
LEVELS = ["x86-64-v3", "x86-64-v4"]  # the AVX2 and AVX-512 clones (kernels.c: CLONES)


def marked_lines() -> set:
    """Line numbers of the loops that kernels.c marks ``/* vectorized */``."""
    lines = native.SOURCE.read_text().splitlines()
    return {i for i, line in enumerate(lines, 1) if "/* vectorized */" in line}


def vectorized_lines(level: str, tmp_path, flags=native.CFLAGS) -> set:
    """Lines of kernels.c whose loops GCC reports vectorized when building for ``level`` alone."""
    out = tmp_path / f"{level}.so"
    cmd = [GCC, *flags, "-DENAS_NO_CLONES", f"-march={level}", "-fopt-info-vec-optimized",
           "-o", str(out), str(native.SOURCE)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    name = re.escape(native.SOURCE.name)
    return {int(m.group(1)) for m in re.finditer(name + r":(\d+):\d+: optimized: loop vectorized", done.stderr)}


@needs_gcc
@pytest.mark.parametrize("level", LEVELS)
def test_every_marked_loop_vectorizes(level, tmp_path):
    marked = marked_lines()
    assert len(marked) >= 7  # statistics, apply (ReLU or not), gradient sums and input gradient (ReLU or not)
    missing = marked - vectorized_lines(level, tmp_path)
    assert not missing, f"loops on lines {sorted(missing)} of kernels.c do not vectorize for {level}"


@needs_gcc
def test_the_check_sees_the_avx2_regression_it_guards_against(tmp_path):
    # The flags before the fix: the fused-ReLU backward loops stay scalar for AVX2 only.
    old = tuple(f for f in native.CFLAGS if f != "-fno-trapping-math")
    assert old != native.CFLAGS
    missing = marked_lines() - vectorized_lines("x86-64-v3", tmp_path, old)
    assert len(missing) == 2
    assert not marked_lines() - vectorized_lines("x86-64-v4", tmp_path, old)


def test_switched_off_or_without_a_compiler_nothing_is_registered(monkeypatch, tmp_path):
    saved = set_native_kernels(None)
    try:
        monkeypatch.setenv("ENAS_NATIVE_KERNELS", "0")
        assert not native.load_native_kernels() and native_kernels() is None
        monkeypatch.setenv("ENAS_NATIVE_KERNELS", "1")
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
        monkeypatch.setenv("ENAS_CACHE_DIR", str(tmp_path / "cache"))
        assert not native.load_native_kernels() and native_kernels() is None
        with pytest.raises(OSError, match="no C compiler"):
            native.build()
    finally:
        set_native_kernels(saved)


def test_a_failing_compiler_leaves_no_file(tmp_path):
    bad = tmp_path / "cc"
    bad.write_text("#!/bin/sh\necho 'boom' >&2\nexit 1\n")
    bad.chmod(0o755)
    with pytest.raises(OSError, match="boom"):
        native.build(compiler=str(bad), directory=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


@needs_kernels
def test_a_build_is_cached_by_source_and_flags(tmp_path):
    first = native.build(directory=tmp_path)
    stamp = os.stat(first).st_mtime_ns
    assert native.build(directory=tmp_path) == first and os.stat(first).st_mtime_ns == stamp
    other = native.build(extra_flags=("-DENAS_NO_CLONES",), directory=tmp_path)
    assert other != first and sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])


def test_a_damaged_cached_library_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("ENAS_CACHE_DIR", str(tmp_path))
    try:
        path = native.build()
    except OSError as exc:
        pytest.skip(f"cannot build: {exc}")
    path.write_bytes(b"not a shared library")
    saved = set_native_kernels(None)
    try:
        assert native.load_native_kernels() and native_kernels().path == path
        assert path.read_bytes()[:4] == b"\x7fELF"
    finally:
        set_native_kernels(saved)


def test_a_search_without_a_c_compiler_runs_on_pytorch_kernels_and_says_why(tmp_path):
    # A laptop without gcc: the run goes on with PyTorch's kernels and its log names the reason.
    env = {**os.environ, "CC": str(tmp_path / "no-cc"), "ENAS_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "enas", "search", "--preset", "quick", "--epochs", "1", "--batch-size", "32",
         "--set", "model.channels=4", "--set", "model.layers=3", "--set", "controller.updates_per_epoch=1",
         "--set", "controller.samples_per_update=2", "--set", "derive.samples=2", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compiled CPU kernels unavailable (no C compiler" in proc.stderr
    assert "compiled kernels" not in proc.stderr and (out / "genotype.json").is_file()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
