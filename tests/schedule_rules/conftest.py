"""Fixtures for the schedule-rule tests (helpers live in sched_helpers.py)."""

import pytest


@pytest.fixture(scope="session")
def target():
    """AVX2 (haswell), not the host: the tile sizes, vector widths and instructions these tests
    check depend on the ISA, and the build boxes change CPU (Zen 3, 4 and 5 have all been
    seen). Every x86-64 box in the fleet runs AVX2 code, so the kernels still run here;
    the AVX-512 choices are checked compile-only in test_avx512_compile_only.py."""
    from tvm_autoglm.targets import load_target

    return load_target("cpu-x86-avx2").tvm_target()
