"""Gemv: one-row fp32 matmuls (LLM decode) streamed in parallel panels with split-K accumulators.

Parity is against float64 numpy with rtol 1e-4 / atol 1e-5 x sqrt(K) (fp32 sums of K
products of N(0, 1) values, accumulated in a different order). Every claim test pins
``cpu-x86-avx2`` (the ``target`` fixture: runs on every x86 build box); the AVX-512
kernels are compiled and their assembly inspected, never run.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import te, tirx

from tvm_autoglm.passes.pack_dense_weights import matmul_packed_te, packed_weight
from tvm_autoglm.schedule_rules import DEFAULT_RULES, Gemv, schedule_func
from tvm_autoglm.schedule_rules import _common as C
from tvm_autoglm.schedule_rules.gemv import FMAS_IN_FLIGHT, plan_gemv
from tvm_autoglm.targets import load_target

from sched_helpers import assert_parallel_vectorized, loop_kinds

RTOL = 1e-4


def _atol(k: int) -> float:
    return 1e-5 * np.sqrt(k)


def _gelu(v):
    """tanh GELU (what passes/fast_math makes of erf GELU), in TE or numpy."""
    if isinstance(v, np.ndarray):
        return 0.5 * v * (1.0 + np.tanh(0.7978845608 * (v + 0.044715 * v**3)))
    return 0.5 * v * (1.0 + tirx.tanh(0.7978845608 * (v + 0.044715 * v * v * v)))


def _kernel(k: int, n: int, panel: int = 0, lead: tuple = (1,), epilogue: str = ""):
    """PrimFunc of ``x[*lead, k] @ w`` (+ epilogue) and the list of its input shapes.

    ``panel``: weight packed as pack_dense_weights stores it, ``[n / panel, k, panel]``; 0: plain ``[k, n]``.
    ``epilogue``: "" | "bias" | "bias_gelu" | "bias_add" (a residual input of the output's shape).
    """
    x = te.placeholder((*lead, k), "float32", "x")
    if panel:
        w = te.placeholder((n // panel, k, panel), "float32", "w")
        mm = matmul_packed_te(x, w)
    else:
        w = te.placeholder((k, n), "float32", "w")
        r = te.reduce_axis((0, k), "r")
        mm = te.compute((*lead, n), lambda *i: te.sum(x[(*i[:-1], r)] * w[r, i[-1]], axis=r), name="matmul")
    args, out = [x, w], mm
    if epilogue:
        b = te.placeholder((n,), "float32", "b")
        args.append(b)
        out = te.compute(mm.shape, lambda *i: mm(*i) + b[i[-1]], name="bias")
        if epilogue == "bias_gelu":
            biased = out
            out = te.compute(mm.shape, lambda *i: _gelu(biased(*i)), name="gelu")
        elif epilogue == "bias_add":
            res = te.placeholder((*lead, n), "float32", "res")
            args.append(res)
            biased = out
            out = te.compute(mm.shape, lambda *i: biased(*i) + res(*i), name="residual")
    return te.create_prim_func([*args, out])


def _inputs(k: int, n: int, lead: tuple, epilogue: str, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    res = rng.standard_normal((*lead, n)).astype(np.float32)
    expected = x.astype(np.float64) @ w.astype(np.float64)
    if epilogue:
        expected = expected + b
    if epilogue == "bias_gelu":
        expected = _gelu(expected)
    if epilogue == "bias_add":
        expected = expected + res
    return x, w, b, res, expected


def _run(func, target, arrays, out_shape) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)
    out = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    lib["main"](*[tvm.runtime.tensor(a) for a in arrays], out)
    return out.numpy()


def _check(target, k, n, panel, lead=(1,), epilogue="", seed=0):
    func, rule = schedule_func(_kernel(k, n, panel, lead, epilogue), target, (Gemv(),))
    assert rule == "Gemv", (k, n, panel)
    x, w, b, res, expected = _inputs(k, n, lead, epilogue, seed)
    arrays = [x, packed_weight(w, panel) if panel else w]
    if epilogue:
        arrays.append(b)
    if epilogue == "bias_add":
        arrays.append(res)
    got = _run(func, target, arrays, expected.shape)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=_atol(k))
    return func


# (k, n, panel): panels of 4, 3, 2 and 1 AVX2 vectors, odd K (no split-K divisor), K = 2,
# a plain [K, N] weight with N a few vectors wide, a vocab-sized packed head.
SHAPES = [(64, 96, 32), (33, 72, 24), (37, 48, 16), (61, 40, 8), (2, 64, 32), (50, 24, 0), (129, 40, 0), (96, 2048, 32)]


@pytest.mark.parametrize("k,n,panel", SHAPES)
def test_parity_with_float64(target, k, n, panel):
    func = _check(target, k, n, panel)
    assert_parallel_vectorized(func)


@pytest.mark.parametrize("epilogue", ["bias", "bias_gelu", "bias_add"])
@pytest.mark.parametrize("k,n,panel", [(48, 64, 32), (35, 40, 0)])
def test_fused_epilogue(target, k, n, panel, epilogue):
    func = _check(target, k, n, panel, epilogue=epilogue, seed=1)
    # the epilogue runs inside the parallel column loop: one parallel loop in the kernel
    assert loop_kinds(func).count(tirx.ForKind.PARALLEL) == 1


@pytest.mark.parametrize("lead", [(1, 1), (1, 1, 1)])
def test_three_and_four_d_activation(target, lead):
    _check(target, 40, 64, 32, lead=lead, epilogue="bias")


def test_vocab_sized_odd_k_head(target):
    """An LM-head-like kernel: 2 vocab panels short of 50k columns, odd K."""
    _check(target, 45, 50016, 32)


def test_plan_keeps_enough_fmas_in_flight():
    lanes, nregs = 8, 16
    for panel, k in [(32, 768), (24, 768), (16, 768), (8, 768), (32, 3072)]:
        plan = plan_gemv(panel * 10, k, panel, lanes, nregs)
        vectors = plan.tile // plan.lane
        assert plan.tile == panel and plan.lane == 8
        assert vectors * plan.split_k >= FMAS_IN_FLIGHT
        assert vectors * plan.split_k + 2 <= nregs
        assert k % plan.split_k == 0
    assert plan_gemv(320, 37, 32, lanes, nregs).split_k == 1  # 37 is prime: one accumulator set
    assert plan_gemv(17, 64, 0, lanes, nregs) is None  # ragged plain N: left to Matmul
    assert plan_gemv(96, 64, 0, lanes, nregs).tile == 32


def test_split_k_accumulators_are_registers(target):
    """8 independent ymm accumulators in the hot loop (4 vectors x split-K 2), no scalar FMAs."""
    func, rule = schedule_func(_kernel(256, 512, 32), target, (Gemv(),))
    assert rule == "Gemv"
    asm = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target).mod.inspect_source("asm")
    accumulators = set(re.findall(r"vfmadd231ps\s+[^,]+,\s*%ymm\d+,\s*(%ymm\d+)", asm))
    assert len(accumulators) >= FMAS_IN_FLIGHT
    assert not re.search(r"vfmadd\d+ss", asm)


@pytest.mark.parametrize("name", ["cpu-x86-avx512", "cpu-znver5"])
def test_avx512_compiles_to_zmm_fmas(name):
    """Compile only (the host may lack AVX-512): 16-lane panels, zmm FMAs, no scalar fallback."""
    avx512 = load_target(name).tvm_target()
    lanes = C.vector_lanes(avx512, "float32")
    assert lanes == 16
    panel = 4 * lanes
    func, rule = schedule_func(_kernel(768, 20 * panel, panel, epilogue="bias"), avx512, (Gemv(),))
    assert rule == "Gemv"
    asm = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), avx512).mod.inspect_source("asm")
    fmas = re.findall(r"vfmadd\d+ps\s+[^\n]*", asm)
    assert fmas and all("zmm" in f for f in fmas), fmas[:4]
    assert len(set(re.findall(r"(%zmm\d+)$", "\n".join(fmas), re.M))) >= FMAS_IN_FLIGHT
    assert not re.search(r"vfmadd\d+ss", asm)


def test_comes_before_matmul_in_default_rules(target):
    names = [type(r).__name__ for r in DEFAULT_RULES]
    assert names.index("Gemv") < names.index("Matmul")
    _, rule = schedule_func(_kernel(64, 96, 32), target)
    assert rule == "Gemv"


# --- declines: one per branch; each kernel is still a valid matmul the Matmul rule takes ---


def test_declines_two_rows(target):
    func = _kernel(64, 96, 32, lead=(2,))
    assert Gemv().apply(func, target, False) is None
    assert schedule_func(func, target)[1] == "Matmul"


def test_declines_symbolic_rows(target):
    m = tirx.Var("m", "int64")
    x = te.placeholder((m, 64), "float32", "x")
    w = te.placeholder((64, 32), "float32", "w")
    r = te.reduce_axis((0, 64), "r")
    out = te.compute((m, 32), lambda i, j: te.sum(x[i, r] * w[r, j], axis=r), name="matmul")
    assert Gemv().apply(te.create_prim_func([x, w, out]), target, False) is None


def test_declines_batched_weight(target):
    """One row of activation against a weight per head: not a single weight stream this rule can prove."""
    x = te.placeholder((1, 64), "float32", "x")
    w = te.placeholder((4, 64, 32), "float32", "w")
    r = te.reduce_axis((0, 64), "r")
    out = te.compute((4, 32), lambda h, j: te.sum(x[0, r] * w[h, r, j], axis=r), name="matmul")
    assert Gemv().apply(te.create_prim_func([x, w, out]), target, False) is None


def test_declines_transposed_weight(target):
    x = te.placeholder((1, 64), "float32", "x")
    w = te.placeholder((32, 64), "float32", "w")
    r = te.reduce_axis((0, 64), "r")
    out = te.compute((1, 32), lambda i, j: te.sum(x[i, r] * w[j, r], axis=r), name="matmul")
    assert Gemv().apply(te.create_prim_func([x, w, out]), target, False) is None


def test_declines_int8(target):
    x = te.placeholder((1, 64), "int8", "x")
    w = te.placeholder((64, 32), "int8", "w")
    r = te.reduce_axis((0, 64), "r")
    out = te.compute((1, 32), lambda i, j: te.sum(x[i, r].astype("int32") * w[r, j].astype("int32"), axis=r), name="matmul")
    assert Gemv().apply(te.create_prim_func([x, w, out]), target, False) is None


def test_declines_ragged_plain_columns(target):
    """N = 17 in a plain [K, N] weight: no whole-vector tile (the packing pass pads such heads instead)."""
    assert Gemv().apply(_kernel(64, 17, 0), target, False) is None


def test_declines_activation_read_per_column(target):
    x = te.placeholder((4, 64), "float32", "x")
    w = te.placeholder((64, 32), "float32", "w")
    r = te.reduce_axis((0, 64), "r")
    out = te.compute((1, 32), lambda i, j: te.sum(x[j // 8, r] * w[r, j], axis=r), name="matmul")
    assert Gemv().apply(te.create_prim_func([x, w, out]), target, False) is None


def test_declines_two_reductions(target):
    """A norm feeding the matmul in one kernel (a reduction producer): not a plain GEMV."""
    x = te.placeholder((1, 64), "float32", "x")
    w = te.placeholder((64, 32), "float32", "w")
    r0 = te.reduce_axis((0, 64), "r0")
    ss = te.compute((1,), lambda i: te.sum(x[i, r0] * x[i, r0], axis=r0), name="sumsq")
    r = te.reduce_axis((0, 64), "r")
    out = te.compute((1, 32), lambda i, j: te.sum(x[i, r] * ss[i] * w[r, j], axis=r), name="matmul")
    assert Gemv().apply(te.create_prim_func([x, w, out]), target, False) is None


def test_declines_non_float32(target):
    x = te.placeholder((1, 64), "float16", "x")
    w = te.placeholder((64, 32), "float16", "w")
    r = te.reduce_axis((0, 64), "r")
    out = te.compute((1, 32), lambda i, j: te.sum(x[i, r] * w[r, j], axis=r), name="matmul")
    assert Gemv().apply(te.create_prim_func([x, w, out]), target, False) is None


# --- the decode step of a real generator ---


def test_claims_the_decode_matmuls_of_a_tiny_gpt_neox_generator(tmp_path, target):
    """Every 1-row matmul of ``main`` (QKV with its head split, attention out, FFN in with GELU, FFN out
    with the residual adds, LM head) goes to Gemv; nothing else in the step does."""
    import functools

    from tvm import relax

    from tvm_autoglm.generate import build as gen
    from tvm_autoglm.onnx_model import load_model
    from tvm_autoglm.pipeline import compile_model
    from tvm_autoglm.zoo import causal_lm

    proto, path = load_model(causal_lm.export("gpt-neox", "tiny", tmp_path / "m.onnx", seed=0))
    layout = gen.detect(proto, str(path), gen.PAST_PATTERN, gen.PRESENT_PATTERN)
    hook = functools.partial(gen._add_generation_functions, proto=proto, layout=layout, max_context=32, chunk=0, source=str(path))
    spec = load_target("cpu-x86-avx2")
    mod = compile_model(path, spec, 3, gen.decode_shapes(layout, 32), None, post_import=hook, until="relax").build.mod
    called = set()
    relax.analysis.post_order_visit(
        mod["main"].body,
        lambda e: called.add(e.args[0].name_hint) if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.call_tir" else None)
    rules = {name: schedule_func(mod[name], target, kernel=name)[1] for name in called}
    gemv = sorted(name for name, rule in rules.items() if rule == "Gemv")
    matmuls = sorted(name for name in called if "matmul" in name and "softmax" not in name)
    assert gemv == matmuls and len(gemv) == 5, rules


# --- through the graph passes: pack_dense_weights (zero-padded panels for one-row heads) + the rules ---


def _one_row_model(k: int, n: int, lead: tuple, bias: bool, seed: int):
    """Relax ``x[*lead, k] @ W (+ b)`` with constant W / b, and the float64 numpy reference."""
    from tvm import relax

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal((*lead, k)).astype(np.float32)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((*lead, k), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit(relax.op.matmul(xv, relax.const(w)))
            if bias:
                out = bb.emit(relax.op.add(out, relax.const(b)))
            out = bb.emit_output(out)
        bb.emit_func_output(out)
    expected = x.astype(np.float64) @ w.astype(np.float64) + (b if bias else 0.0)
    return bb.get(), x, expected


@pytest.mark.parametrize("k,n,lead,bias", [(64, 50, (1, 1), False), (33, 1001, (1,), True), (48, 17, (1, 1, 1), True), (40, 3, (1,), False), (40, 1, (1,), True)])
def test_odd_columns_through_the_packing_pass(target, k, n, lead, bias):
    """N not a whole number of vectors: one-row weights are zero-padded to whole panels and Gemv takes them
    (N = 3 and N = 1 are under one vector: left unpacked, to Matmul); same numbers as float64 numpy."""
    from tvm import relax

    from tvm_autoglm.passes.pack_dense_weights import pack_dense_weights
    from tvm_autoglm.schedule_rules import apply_default_schedules

    from sched_helpers import prim_funcs, run

    mod, x, expected = _one_row_model(k, n, lead, bias, seed=n)
    with target:
        mod = pack_dense_weights()(mod)
    fused = relax.get_pipeline("zero")(mod)
    rules = {name: schedule_func(f, target, kernel=name)[1] for name, f in prim_funcs(fused).items()}
    lanes = C.vector_lanes(target, "float32")
    assert ("Gemv" in rules.values()) == (n >= lanes), rules
    got = run(apply_default_schedules(fused, target), target, [x])
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=_atol(k))


def test_padded_panels_only_for_one_row(target):
    from tvm_autoglm.passes.pack_dense_weights import padded_one_row_width, panel_width

    assert panel_width((1, 1, 64), 50257, 8, 16) is None  # no vector tile divides 50257
    assert padded_one_row_width((1, 1, 64), 50257, 8) == 32
    assert padded_one_row_width((1, 2, 64), 50257, 8) is None  # two rows: Matmul's business, unchanged
    assert padded_one_row_width((1, 64), 5, 8) is None  # under one vector: nothing to stream in panels
    w = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    p = packed_weight(w, 4)
    assert p.shape == (2, 3, 4) and p[1, 2, 0] == w[2, 4] and not p[1, :, 1:].any()


@pytest.mark.parametrize("k,n,panel,epilogue", [(64, 96, 32, "bias_gelu"), (33, 72, 24, ""), (35, 40, 0, "bias_add")])
def test_trace_replays_exactly(target, k, n, panel, epilogue):
    """tuning/baseline.py commits a rule's trace as the record to beat: it must replay to the same kernel."""
    from tvm import s_tir

    from tvm_autoglm.schedule_rules import default_schedule

    func = _kernel(k, n, panel, epilogue=epilogue)
    sch, rule = default_schedule(func, target)
    assert rule == "Gemv"
    replayed = s_tir.Schedule(tvm.IRModule({"main": func}))
    sch.trace.apply_to_schedule(replayed, remove_postproc=False)
    tvm.ir.assert_structural_equal(replayed.mod["main"], sch.mod["main"])
