"""Int8MatmulAVX2: the packed int16 matmul tensorized with vpmaddwd is bit-exact and really tensorized."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te

from tvm_autoglm.quantize.pack import pack_weight, packed_matmul_te, target_has_avx2
from tvm_autoglm.schedule_rules import DEFAULT_RULES, schedule_func
from tvm_autoglm.schedule_rules.int8_matmul import Int8MatmulAVX2, choose_tile

from sched_helpers import workspace_allocations


@pytest.fixture(scope="module")
def avx2_target(target):
    if not target_has_avx2(target):
        pytest.skip("host CPU target has no AVX2")
    return target


def _kernel(lead: tuple, k: int, n: int):
    x = te.placeholder((*lead, k), "int16", "x")
    wp = te.placeholder((n // 8, k // 2, 8, 2), "int16", "wp")
    return te.create_prim_func([x, wp, packed_matmul_te(x, wp)])


def _run(func, target, x: np.ndarray, wq: np.ndarray) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func}), target)
    out = tvm.runtime.tensor(np.zeros((*x.shape[:-1], wq.shape[1]), np.int32))
    lib(tvm.runtime.tensor(x), tvm.runtime.tensor(pack_weight(wq)), out)
    return out.numpy(), lib


@pytest.mark.parametrize("lead,k,n", [((128,), 64, 48), ((2, 6), 100, 24), ((3,), 18, 8), ((1, 8), 384, 16), ((1,), 64, 32), ((1, 1), 32, 16)])
def test_vpmaddwd_kernel_is_bit_exact(avx2_target, lead, k, n):
    # int8-range values stored as int16, extremes included: vpmaddwd must neither saturate nor round
    rng = np.random.default_rng(k + n)
    x = rng.integers(-128, 128, size=(*lead, k)).astype(np.int16)
    x.reshape(-1, k)[0, :] = 127
    x.reshape(-1, k)[-1, :] = -128
    wq = rng.integers(-128, 128, size=(k, n)).astype(np.int8)
    wq[:, 0] = -128
    wq[:, -1] = 127
    func, rule = schedule_func(_kernel(lead, k, n), avx2_target, (Int8MatmulAVX2(),))
    assert rule == "Int8MatmulAVX2"
    got, _ = _run(func, avx2_target, x, wq)
    expected = x.astype(np.int64) @ wq.astype(np.int64)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


def test_rule_tensorizes_with_pmaddwd(avx2_target):
    func, rule = schedule_func(_kernel((64,), 96, 32), avx2_target, (Int8MatmulAVX2(),) + DEFAULT_RULES)
    assert rule == "Int8MatmulAVX2"  # it wins over the generic Matmul rule when placed first
    text = func.script()
    assert "llvm.x86.avx2.pmadd.wd" in text
    rng = np.random.default_rng(0)
    _, lib = _run(func, avx2_target, rng.integers(-127, 128, (64, 96)).astype(np.int16), rng.integers(-127, 128, (96, 32)).astype(np.int8))
    assert "vpmaddwd" in lib.mod.inspect_source("asm")


@pytest.mark.parametrize("lead,k,n", [((128,), 96, 256), ((128,), 96, 32)])
def test_accumulators_are_stack_registers_not_workspace(avx2_target, lead, k, n):
    # wide output: parallel over column panels; narrow: over panels x row tiles. Either way
    # the tile's int32 accumulators (and the intrinsic's operands) must not be runtime
    # workspace allocations, which cost a call pair per tile (1/6 of the kernel's time).
    func, _ = schedule_func(_kernel(lead, k, n), avx2_target, (Int8MatmulAVX2(),))
    lib = tvm.compile(tvm.IRModule({"main": func}), avx2_target)
    assert workspace_allocations(lib) == []


def test_rule_declines_other_contractions(avx2_target):
    a = te.placeholder((16, 32), "float32", "a")
    b = te.placeholder((32, 24), "float32", "b")
    k = te.reduce_axis((0, 32), "k")
    fp32 = te.compute((16, 24), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k))
    assert Int8MatmulAVX2().apply(te.create_prim_func([a, b, fp32]), avx2_target, False) is None
    # the plain int8 R.matmul kernel (int8 operands, unpacked weight) is not ours either
    a8 = te.placeholder((16, 32), "int8", "a8")
    b8 = te.placeholder((32, 24), "int8", "b8")
    i8 = te.compute((16, 24), lambda i, j: te.sum(a8[i, k].astype("int32") * b8[k, j].astype("int32"), axis=k))
    assert Int8MatmulAVX2().apply(te.create_prim_func([a8, b8, i8]), avx2_target, False) is None


def test_rule_is_off_without_avx2():
    sse = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64"})
    assert Int8MatmulAVX2().apply(_kernel((8,), 16, 8), sse, False) is None


def test_choose_tile_divides_the_extents():
    assert choose_tile(128, 96) == (4, 2)
    assert choose_tile(7, 5) == (1, 1)
    for rows, groups in [(6, 9), (1, 48), (12, 3)]:
        mr, nv = choose_tile(rows, groups)
        assert rows % mr == 0 and groups % nv == 0


def test_schedule_trace_replays_exactly(avx2_target):
    # the tuner commits each default schedule's trace as a baseline record; it must replay to the same kernel
    from tvm import s_tir

    func = _kernel((1, 32), 64, 32)
    sch = Int8MatmulAVX2().apply(func, avx2_target, False)
    assert sch is not None
    replay = s_tir.Schedule(func)
    sch.trace.apply_to_schedule(replay, remove_postproc=False)
    tvm.ir.assert_structural_equal(replay.mod, sch.mod)
