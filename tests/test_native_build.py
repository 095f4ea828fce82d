"""The compiled kernels' hot loops vectorize for every x86-64 level the library carries a clone for.

Which loops GCC vectorizes depends on the instruction set, not on the machine running the
tests: without ``-fno-trapping-math`` the fused-ReLU batch-norm backward vectorized for
AVX-512 (masked loads) but stayed scalar, with a branch per element, for AVX2, and ran 12x
slower on an AMD EPYC while every test on the Intel machines passed. So this test asks GCC
itself, through ``-fopt-info-vec``, for each level, whatever CPU it runs on.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import enas.native as native

GCC = shutil.which("gcc")
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


@pytest.mark.skipif(GCC is None, reason="no gcc (the kernels are built with the system C compiler)")
@pytest.mark.parametrize("level", LEVELS)
def test_every_marked_loop_vectorizes(level, tmp_path):
    marked = marked_lines()
    assert len(marked) >= 7  # statistics, apply (ReLU or not), gradient sums and input gradient (ReLU or not)
    missing = marked - vectorized_lines(level, tmp_path)
    assert not missing, f"loops on lines {sorted(missing)} of kernels.c do not vectorize for {level}"


@pytest.mark.skipif(GCC is None, reason="no gcc (the kernels are built with the system C compiler)")
def test_the_check_sees_the_avx2_regression_it_guards_against(tmp_path):
    # The flags before the fix: the fused-ReLU backward loops stay scalar for AVX2 only.
    old = tuple(f for f in native.CFLAGS if f != "-fno-trapping-math")
    assert old != native.CFLAGS
    missing = marked_lines() - vectorized_lines("x86-64-v3", tmp_path, old)
    assert len(missing) == 2
    assert not marked_lines() - vectorized_lines("x86-64-v4", tmp_path, old)
