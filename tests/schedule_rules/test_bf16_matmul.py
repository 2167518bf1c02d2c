"""BF16MatmulAVX512: the packed bf16 matmul of quantize/pack_bf16.py, tensorized with vdpbf16ps.

As for VNNI: compiled for the pinned AVX512-BF16 targets and inspected (vdpbf16ps on zmm); run
where the host has avx512bf16 (skipped elsewhere, with the reason); and the same schedule with
the dot product in fp32 vector ops (BF16MatmulPortable) run on any host. The reference is float64
numpy of the bf16-rounded operands (ml_dtypes); the tolerance is fp32 accumulation error,
stated per test.
"""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest
import tvm
from tvm import s_tir, te

from tvm_autoglm.quantize import pack_bf16, pack_vnni
from tvm_autoglm.quantize.pack import packed_matmul_te
from tvm_autoglm.schedule_rules import DEFAULT_RULES, BF16MatmulAVX512, Int8MatmulAVX2, Int8MatmulVNNI, Matmul, schedule_func
from tvm_autoglm.schedule_rules.bf16_matmul import BF16MatmulPortable
from tvm_autoglm.targets import cpu_has_feature, load_target

from sched_helpers import workspace_allocations

BF16_TARGETS = ["cpu-x86-avx512-bf16", "cpu-znver5"]
# rows 1..17, K even (odd K is refused by pack_bf16.packable), N = 1 to 4 column registers
SHAPES = [((1,), 64, 16), ((17,), 30, 48), ((1, 5), 6, 32), ((2, 6), 100, 64), ((128,), 96, 64), ((1, 13), 130, 16)]
HOST_HAS_BF16 = cpu_has_feature(load_target("cpu"), "avx512bf16")


@pytest.fixture(scope="module", params=BF16_TARGETS)
def bf16_target(request):
    spec = load_target(request.param)
    assert cpu_has_feature(spec, "avx512bf16"), request.param
    return spec.tvm_target()


def _kernel(lead: tuple, k: int, n: int, x_dtype: str = "float32"):
    """float32 (or bf16) x -> bf16 bits in the kernel, times the packed bf16 weight, then an epilogue."""
    x = te.placeholder((*lead, k), x_dtype, "x")
    wp = te.placeholder((n // 16, k // 2, 16, 2), "bfloat16", "wp")
    acc = pack_bf16.packed_bf16_matmul_te(x, wp)
    out = te.compute(acc.shape, lambda *i: acc[i] * 0.5, name="epilogue")
    return te.create_prim_func([x, wp, out])


def _run(func, target, lead, k, n, x_dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    x_in = x.astype(ml_dtypes.bfloat16) if x_dtype == "bfloat16" else x
    lib = tvm.compile(tvm.IRModule({"main": func}), target)
    out = tvm.runtime.tensor(np.zeros((*lead, n), np.float32))
    lib(tvm.runtime.tensor(x_in), tvm.runtime.tensor(pack_bf16.pack_weight(w).astype(ml_dtypes.bfloat16)), out)
    xb = x.astype(ml_dtypes.bfloat16).astype(np.float64)
    wb = w.astype(ml_dtypes.bfloat16).astype(np.float64)
    return out.numpy(), 0.5 * (xb @ wb), 0.5 * (np.abs(xb) @ np.abs(wb))


def _assert_fp32_accumulation(got, ref, scale, k):
    # products of bf16 values are exact in fp32; K fp32 additions add at most K * 2^-24 of sum |x w|
    np.testing.assert_array_less(np.abs(got - ref), (k + 1) * 2.0**-24 * scale + 1e-30)


@pytest.mark.parametrize("lead,k,n", SHAPES)
@pytest.mark.parametrize("x_dtype", ["float32", "bfloat16"])
def test_portable_schedule_matches_float64_on_any_host(target, lead, k, n, x_dtype):
    func, rule = schedule_func(_kernel(lead, k, n, x_dtype), target, (BF16MatmulPortable(),))
    assert rule == "BF16MatmulPortable"
    got, ref, scale = _run(func, target, lead, k, n, x_dtype)
    _assert_fp32_accumulation(got, ref, scale, k)


@pytest.mark.skipif(not HOST_HAS_BF16, reason="host CPU has no AVX512-BF16: vdpbf16ps kernels are compile-checked only")
@pytest.mark.parametrize("lead,k,n", SHAPES)
def test_vdpbf16ps_kernel_matches_float64_where_the_host_has_bf16(lead, k, n):
    target = load_target("cpu").tvm_target()
    func, rule = schedule_func(_kernel(lead, k, n), target, (BF16MatmulAVX512(),))
    assert rule == "BF16MatmulAVX512"
    got, ref, scale = _run(func, target, lead, k, n, seed=1)
    _assert_fp32_accumulation(got, ref, scale, k)  # normal inputs: vdpbf16ps's denormal flushing does not arise


def test_bf16_bits_round_like_ml_dtypes(target):
    """The in-kernel fp32 -> bf16 rounding (nearest even, NaN kept) equals ml_dtypes' on ties, extremes, inf, NaN."""
    vals = np.array([1.0, 1.00390625, 1.01171875, -1.00390625, 3.4e38, -3.4e38, 1e-40, np.inf, -np.inf, np.nan, 0.0, -0.0]
                    + list(np.random.default_rng(0).standard_normal(20)), np.float32)
    x = te.placeholder(vals.shape, "float32", "x")
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([x, pack_bf16.bf16_bits_te(x)])}), target)
    out = tvm.runtime.tensor(np.zeros(vals.shape, np.uint16))
    lib(tvm.runtime.tensor(vals), out)
    want = vals.astype(ml_dtypes.bfloat16).view(np.uint16)
    got = out.numpy()
    finite = ~np.isnan(vals)
    np.testing.assert_array_equal(got[finite], want[finite])
    assert np.isnan(got[~finite].view(ml_dtypes.bfloat16).astype(np.float32)).all()


@pytest.mark.parametrize("lead,k,n", [((64,), 96, 32), ((1,), 30, 48)])
def test_bf16_targets_get_vdpbf16ps_on_zmm(bf16_target, lead, k, n):
    func, rule = schedule_func(_kernel(lead, k, n), bf16_target, DEFAULT_RULES)
    assert rule == "BF16MatmulAVX512"  # ahead of the generic Matmul rule
    lib = tvm.compile(tvm.IRModule({"main": func}), bf16_target)
    asm = lib.mod.inspect_source("asm")
    dots = re.findall(r"\bvdpbf16ps\s+[^\n]*", asm)
    assert len(dots) >= n // 16 and all("%zmm" in d for d in dots), dots[:4]
    assert "autoglm_dpbf16ps_512" not in asm  # the imported wrapper was inlined, no call left
    rows = int(np.prod(lead))
    assert workspace_allocations(lib) in ([], [rows * k * 2])  # only the activation's bf16 bits, once per call


def test_rule_is_off_without_bf16():
    for name in ("cpu-x86-avx2", "cpu-x86-avx512"):  # cascadelake: AVX-512 and VNNI, no BF16
        target = load_target(name).tvm_target()
        assert BF16MatmulAVX512().apply(_kernel((8,), 32, 16), target, False) is None


def test_rule_declines_other_contractions(bf16_target):
    k = te.reduce_axis((0, 32), "k")
    a = te.placeholder((16, 32), "float32", "a")
    b = te.placeholder((32, 32), "float32", "b")
    fp32 = te.compute((16, 32), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k))
    assert BF16MatmulAVX512().apply(te.create_prim_func([a, b, fp32]), bf16_target, False) is None
    # the generic bf16 matmul of --quantize bf16 without packing (plain casts, [K, N] weight)
    a16 = te.placeholder((16, 32), "bfloat16", "a16")
    b16 = te.placeholder((32, 32), "bfloat16", "b16")
    plain = te.compute((16, 32), lambda i, j: te.sum(a16[i, k].astype("float32") * b16[k, j].astype("float32"), axis=k))
    assert BF16MatmulAVX512().apply(te.create_prim_func([a16, b16, plain]), bf16_target, False) is None
    # the int8 rules' kernels, and ours is not theirs
    x16 = te.placeholder((8, 32), "int16", "x16")
    w16 = te.placeholder((4, 16, 8, 2), "int16", "w16")
    assert BF16MatmulAVX512().apply(te.create_prim_func([x16, w16, packed_matmul_te(x16, w16)]), bf16_target, False) is None
    xu = te.placeholder((8, 32), "uint8", "xu")
    wv = te.placeholder((2, 8, 16, 4), "int8", "wv")
    comp = te.placeholder((32,), "int32", "comp")
    assert BF16MatmulAVX512().apply(te.create_prim_func([xu, wv, comp, pack_vnni.vnni_matmul_te(xu, wv, comp)]), bf16_target, False) is None
    for rule in (Int8MatmulAVX2(), Int8MatmulVNNI()):
        assert rule.apply(_kernel((8,), 32, 16), bf16_target, False) is None


def test_rule_declines_a_layout_other_than_16x2(bf16_target):
    x = te.placeholder((8, 32), "float32", "x")
    wp = te.placeholder((4, 16, 8, 2), "bfloat16", "wp")  # 8-column blocks: not one zmm of fp32 accumulators
    func = te.create_prim_func([x, wp, pack_bf16.packed_bf16_matmul_te(x, wp)])
    assert BF16MatmulAVX512().apply(func, bf16_target, False) is None
    assert schedule_func(func, bf16_target, DEFAULT_RULES)[1] not in (None, "BF16MatmulAVX512")  # a generic rule takes it


def test_rule_order_in_default_rules():
    kinds = [type(rule) for rule in DEFAULT_RULES]
    assert kinds.index(BF16MatmulAVX512) < kinds.index(Matmul)
    assert BF16MatmulPortable not in kinds


def test_schedule_trace_replays_exactly(bf16_target):
    func = _kernel((1, 17), 30, 48)
    sch = BF16MatmulAVX512().apply(func, bf16_target, False)
    assert sch is not None
    replay = s_tir.Schedule(func)
    sch.trace.apply_to_schedule(replay, remove_postproc=False)
    tvm.ir.assert_structural_equal(replay.mod, sch.mod)
