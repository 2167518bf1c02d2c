"""Int8MatmulVNNI: the uint8 x int8 matmul of quantize/pack_vnni.py, tensorized with vpdpbusd.

The AVX-512 VNNI kernels are checked three ways so that every host checks something real:
compiled for the pinned VNNI targets and inspected (vpdpbusd on zmm); run bit-exact where the
host has avx512vnni (skipped elsewhere, with the reason); and the same schedule with the dot
product in portable vector ops (Int8MatmulVNNIPortable) run bit-exact on any host, which checks
the packing, the K padding, the +128 shift's compensation, the tiling and the epilogue.
References are int64 numpy products of the same int8 integers (exact: no tolerance).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import s_tir, te

from tvm_autoglm.quantize import pack_vnni
from tvm_autoglm.quantize.pack import packed_matmul_te
from tvm_autoglm.schedule_rules import DEFAULT_RULES, Int8MatmulAVX2, Int8MatmulVNNI, Matmul, schedule_func
from tvm_autoglm.schedule_rules.vnni_matmul import Int8MatmulVNNIPortable
from tvm_autoglm.targets import load_target

from sched_helpers import workspace_allocations

VNNI_TARGETS = ["cpu-x86-avx512", "cpu-znver5"]
# rows 1..17 (prime 17 and 1 take the narrow tiles), K not a multiple of 4 or 16, N = 1 to 4 column registers
SHAPES = [((1,), 64, 16), ((17,), 30, 48), ((1, 5), 7, 32), ((2, 6), 100, 64), ((128,), 96, 64), ((3,), 5, 16), ((1, 13), 130, 16)]


def _host_target():
    return load_target("cpu").tvm_target()


HOST_HAS_VNNI = pack_vnni.target_has_vnni(_host_target())


@pytest.fixture(scope="module", params=VNNI_TARGETS)
def vnni_target(request):
    target = load_target(request.param).tvm_target()
    assert pack_vnni.target_has_vnni(target), request.param  # the pinned targets name VNNI CPUs
    return target


def _int_kernel(lead: tuple, k: int, n: int):
    """uint8 activations [.., K padded to 4] x packed int8 weight, minus the compensation: int32 [.., N]."""
    kp = pack_vnni.padded_k(k)
    x = te.placeholder((*lead, kp), "uint8", "x")
    wp = te.placeholder((n // 16, kp // 4, 16, 4), "int8", "wp")
    comp = te.placeholder((n,), "int32", "comp")
    return te.create_prim_func([x, wp, comp, pack_vnni.vnni_matmul_te(x, wp, comp)])


def _quantized_kernel(lead: tuple, k: int, n: int):
    """What quantize.int8 emits: float x -> uint8 (fused), matmul, compensation, dequantize epilogue."""
    kp = pack_vnni.padded_k(k)
    x = te.placeholder((*lead, k), "float32", "x")
    sx = te.placeholder((), "float32", "sx")
    wp = te.placeholder((n // 16, kp // 4, 16, 4), "int8", "wp")
    comp = te.placeholder((n,), "int32", "comp")
    acc = pack_vnni.quantized_vnni_matmul_te(x, sx, wp, comp)
    out = te.compute(acc.shape, lambda *i: acc[i].astype("float32") * sx[()], name="dequantize")
    return te.create_prim_func([x, sx, wp, comp, out])


def _inputs(lead: tuple, k: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, k)).astype(np.float32)
    x.reshape(-1, k)[0, 0] = 40.0  # the per-tensor max: the grid reaches +127 ...
    x.reshape(-1, k)[-1, -1] = -40.0  # ... and -127 (uint8 1 after the shift)
    sx = np.float32(40.0 / 127.0)
    wq = rng.integers(-127, 128, size=(k, n)).astype(np.int8)
    wq[:, 0] = 127  # column sums at both extremes: the compensation's largest magnitudes
    wq[:, -1] = -127
    xq = np.clip(np.rint(x / sx), -127, 127).astype(np.int64)
    return x, sx, wq, xq


def _run_quantized(func, target, lead, k, n, seed=0):
    x, sx, wq, xq = _inputs(lead, k, n, seed)
    lib = tvm.compile(tvm.IRModule({"main": func}), target)
    out = tvm.runtime.tensor(np.zeros((*lead, n), np.float32))
    lib(tvm.runtime.tensor(x), tvm.runtime.tensor(np.array(sx, np.float32)), tvm.runtime.tensor(pack_vnni.pack_weight(wq)),
        tvm.runtime.tensor(pack_vnni.compensation(wq)), out)
    expected = (xq @ wq.astype(np.int64)).astype(np.float64) * np.float64(sx)
    return out.numpy(), expected


@pytest.mark.parametrize("lead,k,n", SHAPES)
def test_portable_schedule_is_exact_on_any_host(target, lead, k, n):
    """The VNNI schedule (layout, padding, compensation, tiles, epilogue) with portable arithmetic, run here."""
    func, rule = schedule_func(_quantized_kernel(lead, k, n), target, (Int8MatmulVNNIPortable(),))
    assert rule == "Int8MatmulVNNIPortable"
    got, expected = _run_quantized(func, target, lead, k, n)
    # int32 sums exact, one float32 multiply by sx: relative error <= 2^-24 of each value
    np.testing.assert_allclose(got, expected, rtol=1.2e-7, atol=0)


@pytest.mark.skipif(not HOST_HAS_VNNI, reason="host CPU has no AVX-512 VNNI: vpdpbusd kernels are compile-checked only")
@pytest.mark.parametrize("lead,k,n", SHAPES)
def test_vpdpbusd_kernel_is_exact_where_the_host_has_vnni(lead, k, n):
    target = _host_target()
    func, rule = schedule_func(_quantized_kernel(lead, k, n), target, (Int8MatmulVNNI(),))
    assert rule == "Int8MatmulVNNI"
    got, expected = _run_quantized(func, target, lead, k, n, seed=1)
    np.testing.assert_allclose(got, expected, rtol=1.2e-7, atol=0)


@pytest.mark.parametrize("lead,k,n", [((64,), 96, 32), ((1,), 30, 48)])
def test_vnni_targets_get_vpdpbusd_on_zmm(vnni_target, lead, k, n):
    func, rule = schedule_func(_quantized_kernel(lead, k, n), vnni_target, DEFAULT_RULES)
    assert rule == "Int8MatmulVNNI"  # first in DEFAULT_RULES, ahead of the AVX2 and generic rules
    assert "llvm.x86.avx512.vpdpbusd.512" in func.script()
    lib = tvm.compile(tvm.IRModule({"main": func}), vnni_target)
    asm = lib.mod.inspect_source("asm")
    dots = re.findall(r"\bvpdpbusd\s+[^\n]*", asm)
    # one per (16-column group, 4-step group) of the K loop body at least; every one on zmm registers
    assert len(dots) >= n // 16 and all("%zmm" in d for d in dots), dots[:4]
    assert not re.search(r"\bvpmaddwd\b|\bvpmulld\b", asm)  # no widening fallback in the kernel
    # accumulators on the stack / in registers, not workspace calls; the one allocation is the
    # materialized uint8 activation (rows x K padded to 4 bytes), allocated once per call
    rows = int(np.prod(lead))
    assert workspace_allocations(lib) in ([], [rows * pack_vnni.padded_k(k)])


def test_int_kernel_alone_also_tensorizes(vnni_target):
    """Without the fused quantize step (uint8 input buffer) the rule still claims the kernel."""
    func, rule = schedule_func(_int_kernel((8,), 64, 32), vnni_target, (Int8MatmulVNNI(),))
    assert rule == "Int8MatmulVNNI" and "vpdpbusd" in func.script()


def test_rule_is_off_without_vnni():
    for name in ("cpu-x86-avx2", "cpu-znver3"):
        target = load_target(name).tvm_target()
        assert not pack_vnni.target_has_vnni(target)
        assert Int8MatmulVNNI().apply(_int_kernel((8,), 16, 16), target, False) is None


def test_rule_declines_other_contractions(vnni_target):
    k = te.reduce_axis((0, 32), "k")
    a = te.placeholder((16, 32), "float32", "a")
    b = te.placeholder((32, 32), "float32", "b")
    fp32 = te.compute((16, 32), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k))
    assert Int8MatmulVNNI().apply(te.create_prim_func([a, b, fp32]), vnni_target, False) is None
    # plain int8 x int8 R.matmul (unpacked weight, signed activations)
    a8 = te.placeholder((16, 32), "int8", "a8")
    b8 = te.placeholder((32, 32), "int8", "b8")
    i8 = te.compute((16, 32), lambda i, j: te.sum(a8[i, k].astype("int32") * b8[k, j].astype("int32"), axis=k))
    assert Int8MatmulVNNI().apply(te.create_prim_func([a8, b8, i8]), vnni_target, False) is None
    # the AVX2 rule's int16 [N/8, K/2, 8, 2] kernel: Int8MatmulAVX2's, not ours (and vice versa)
    x16 = te.placeholder((8, 32), "int16", "x16")
    w16 = te.placeholder((4, 16, 8, 2), "int16", "w16")
    avx2_kernel = te.create_prim_func([x16, w16, packed_matmul_te(x16, w16)])
    assert Int8MatmulVNNI().apply(avx2_kernel, vnni_target, False) is None
    assert Int8MatmulAVX2().apply(_int_kernel((8,), 64, 32), vnni_target, False) is None


def test_rule_declines_a_layout_other_than_16x4(vnni_target):
    """uint8 x int8 in 8-column x 4-step blocks: the operand is not one zmm of weights."""
    x = te.placeholder((8, 32), "uint8", "x")
    wp = te.placeholder((4, 8, 8, 4), "int8", "wp")
    comp = te.placeholder((32,), "int32", "comp")
    func = te.create_prim_func([x, wp, comp, pack_vnni.vnni_matmul_te(x, wp, comp)])
    assert Int8MatmulVNNI().apply(func, vnni_target, False) is None
    assert schedule_func(func, vnni_target, DEFAULT_RULES)[1] == "Matmul"  # the generic rule still schedules it


def test_rule_declines_a_single_group_reduction(vnni_target):
    """K <= 4 (pack_vnni.packable refuses it): the reduction's outer loop has extent 1 and is normalized away."""
    assert not pack_vnni.packable(4, 16) and pack_vnni.packable(5, 16)
    assert Int8MatmulVNNI().apply(_int_kernel((8,), 4, 16), vnni_target, False) is None


def test_register_tiles_fit_the_stack_limit():
    from tvm_autoglm.schedule_rules.vnni_matmul import _TILES, MAX_TILE_BYTES

    assert all(mr * nv * pack_vnni.LANES * 4 <= MAX_TILE_BYTES for mr, nv in _TILES)


def test_rule_order_in_default_rules():
    kinds = [type(rule) for rule in DEFAULT_RULES]
    assert kinds.index(Int8MatmulVNNI) < kinds.index(Int8MatmulAVX2) < kinds.index(Matmul)
    assert Int8MatmulVNNIPortable not in kinds  # the portable variant is for tests on non-VNNI hosts


def test_schedule_trace_replays_exactly(vnni_target):
    func = _quantized_kernel((1, 17), 30, 48)
    sch = Int8MatmulVNNI().apply(func, vnni_target, False)
    assert sch is not None
    replay = s_tir.Schedule(func)
    sch.trace.apply_to_schedule(replay, remove_postproc=False)
    tvm.ir.assert_structural_equal(replay.mod, sch.mod)
