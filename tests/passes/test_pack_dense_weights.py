"""pack_dense_weights: constant [K, N] matmul weights stored as [N/width, K, width] panels, same numbers.

Tolerances: fp32 rtol 1e-4 / atol 1e-5 against onnxruntime (K <= 48 sums).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from onnx import helper
from passes_helpers import FP32_ATOL, FP32_RTOL, import_model, make_model, op_counts, run_ort
from passes_helpers import dense_mlp as _mlp
from tvm import relax, s_tir, tirx
from tvm.ir.expr import Constant

from tvm_autoglm.passes.pack_dense_weights import pack_dense_weights, packed_weight, panel_width
from tvm_autoglm.passes import get_pass, passes_for

from schedule_rules.sched_helpers import assert_parallel_vectorized, prim_funcs  # noqa: E402


# The panel widths and kernel shapes follow the SIMD width, so these tests pin AVX2 (which
# every build box runs) instead of the host; the AVX-512 widths are checked compile-only in
# tests/schedule_rules/test_avx512_compile_only.py.
AVX2 = "cpu-x86-avx2"


@pytest.fixture(scope="module")
def target():
    from tvm_autoglm.targets import load_target

    return load_target(AVX2).tvm_target()


def _packed_weights(mod, func="main"):
    shapes = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            shapes.extend(tuple(int(d) for d in a.value.shape) for a in expr.args[1].fields if isinstance(a, Constant))

    relax.analysis.post_order_visit(mod[func].body, visit)
    return shapes


def test_packed_weight_layout():
    w = np.arange(5 * 48, dtype="float32").reshape(5, 48)
    p = packed_weight(w, 24)
    assert p.shape == (2, 5, 24) and p.flags.c_contiguous
    assert p[1, 3, 7] == w[3, 24 + 7]


def test_width_is_the_matmul_rule_tile():
    # rows 8, 48 columns, 8 lanes / 16 registers: the rule's best tile is 4 rows x 3 vectors -> 24 columns
    assert panel_width((1, 8, 32), 48, 8, 16) == 24
    assert panel_width((1, 8, 48), 16, 8, 16) == 16  # 2 vectors is all there is
    assert panel_width((1, 8, 32), 96, 8, 16, segment=32) == 16  # a 24-wide tile would straddle 32-wide heads
    assert panel_width((1, 8, 32), 6, 8, 16) is None  # no vector tile: nothing to pack for


def test_both_constant_matmuls_become_packed_calls():
    mod = import_model(_mlp())
    assert op_counts(mod).get("matmul") == 2
    out = pack_dense_weights()(mod)
    counts = op_counts(out)
    assert counts.get("matmul", 0) == 0 and counts.get("call_tir") == 2
    assert sorted(_packed_weights(out)) == sorted([(2, 32, 24), (2, 48, 16)])
    # bias and relu are untouched graph ops, so FuseOps still fuses them into the packed kernel
    assert counts.get("add") == 1 and counts.get("nn.relu") == 1


def test_leaves_other_matmuls_alone():
    odd = import_model(_mlp(n_hidden=6))  # 6 columns: no vector tile for the first matmul
    assert op_counts(pack_dense_weights()(odd)).get("matmul") == 1
    # activation x activation (no constant weight) and a batched 3-D constant weight
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("MatMul", ["x", "y"], ["xy"]), helper.make_node("MatMul", ["xy", "w"], ["z"])]
    model = make_model(nodes, {"x": [2, 8, 16], "y": [2, 16, 32]}, {"z": None}, {"w": rng.standard_normal((2, 32, 16))})
    mod = import_model(model)
    out = pack_dense_weights()(mod)
    assert op_counts(out).get("matmul") == 2
    tvm.ir.assert_structural_equal(out["main"], mod["main"])


def test_compiled_model_matches_onnxruntime_and_skips_the_in_kernel_copy():
    import tvm_autoglm

    model = _mlp()
    x = np.random.default_rng(2).standard_normal((1, 8, 32)).astype("float32")
    (expected,) = run_ort(model, {"x": x})
    packed = tvm_autoglm.compile(model, AVX2, 3)
    plain = tvm_autoglm.compile(model, AVX2, 3, disabled_passes=("pack_dense_weights",))
    assert "pack_dense_weights" in packed.build.passes
    np.testing.assert_allclose(packed.run(x=x)["y"], expected, rtol=FP32_RTOL, atol=FP32_ATOL)
    np.testing.assert_allclose(plain.run(x=x)["y"], expected, rtol=FP32_RTOL, atol=FP32_ATOL)

    def matmul_kernels(m):
        from tvm_autoglm.pipeline import schedule

        return {name: f for name, f in prim_funcs(schedule(m.build, None, False).mod).items() if "matmul" in name}

    with_pack, without = matmul_kernels(packed), matmul_kernels(plain)
    assert len(with_pack) == 2 and all("packed" in name for name in with_pack), with_pack.keys()
    for func in with_pack.values():
        assert_parallel_vectorized(func)
        assert _copy_buffers(func) == []
    # the in-kernel panel copy the pass replaces (proves the check above can fail)
    assert any(_copy_buffers(f) for f in without.values())


def _copy_buffers(func: tirx.PrimFunc) -> list[str]:
    """Names of the buffers inside ``func`` that a plain copy block fills (the rule's cache_read panel copy).

    Not every allocated buffer: the register tile's accumulator is a global-scope
    allocation too (``schedule_rules._common.ACC_SCOPE``).
    """
    import tvm_ffi
    from tvm.ir.expr import TensorLoad

    allocated, copied = [], set()

    def visit(block):
        allocated.extend(b.name for b in block.alloc_buffers)
        body = block.body
        if isinstance(body, tirx.BufferStore) and isinstance(body.value, TensorLoad):
            copied.add(body.buffer.name)

    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, visit), order="post")
    return [name for name in allocated if name in copied]


def test_packs_inside_head_split_epilogue_composite(target):
    """fuse_epilogue's matmul + bias + reshape-to-heads composite takes the packed constant too."""
    from tvm_autoglm.passes.fuse_epilogue import fuse_epilogue
    from tvm_autoglm.schedule_rules import apply_default_schedules

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((32, 96)) / 6).astype("float32")
    b = rng.standard_normal(96).astype("float32")
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((1, 16, 32), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(bb.emit(relax.op.matmul(xv, relax.const(w))), relax.const(b)))
            heads = bb.emit(relax.op.reshape(y, (1, 16, 3, 32)))
            out = bb.emit_output(relax.op.permute_dims(heads, [0, 2, 1, 3]))
        bb.emit_func_output(out)
    grouped = fuse_epilogue()(bb.get())
    with target:
        packed = pack_dense_weights()(grouped)
    composites = [(gv.name_hint, f) for gv, f in packed.functions.items() if isinstance(f, relax.Function) and f.attrs and "Composite" in f.attrs]
    assert len(composites) == 1 and composites[0][0].endswith("_packed")  # the unpacked original is gone
    # 32-wide heads: the 24-column tile would straddle them, so the panel is the 16-column tile the rule fuses into
    assert [int(d) for d in composites[0][1].params[1].ty.shape.values] == [6, 32, 16]
    assert op_counts(packed, composites[0][0]).get("matmul", 0) == 0
    with target:
        scheduled = apply_default_schedules(relax.get_pipeline("zero")(packed), target)
    (func,) = prim_funcs(scheduled).values()
    assert_parallel_vectorized(func)
    vm = relax.VirtualMachine(tvm.compile(scheduled, target), tvm.cpu())
    x = rng.standard_normal((1, 16, 32)).astype("float32")
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    ref = (x.astype("float64") @ w + b).reshape(1, 16, 3, 32).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(got, ref, rtol=FP32_RTOL, atol=FP32_ATOL)


def test_registered_cpu_o3_after_epilogue_fusion():
    get_pass("pack_dense_weights")
    plan = [p.name for p in passes_for(3, "cpu")]
    assert plan.index("pack_dense_weights") > max(plan.index("fuse_epilogue"), plan.index("merge_parallel_matmul"))
    assert "pack_dense_weights" not in [p.name for p in passes_for(2, "cpu")]
    for kind in ("cuda", "npu"):
        assert "pack_dense_weights" not in [p.name for p in passes_for(3, kind)]


@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_quantize_still_finds_every_matmul(mode):
    """The precision rewrites look for R.matmul sites, so compile() turns the pass off for them."""
    import tvm_autoglm

    q = tvm_autoglm.compile(_mlp(), "cpu", 3, quantize=mode)
    assert "pack_dense_weights" not in q.build.passes
    if mode == "int8":
        assert [row["precision"] for row in q.manifest["quantization"]["layers"]] == ["int8", "int8"]
    else:  # ToMixedPrecision: both matmuls get their operands cast (a packed call_tir would get none)
        (note,) = [n for n in q.build.notes if n.startswith("precision: fp16")]
        assert int(re.search(r"(\d+) casts", note).group(1)) >= 4, note


def test_symbolic_rows_are_packed_and_match_onnxruntime_at_every_length():
    """A dynamic build (rows = seq in 1..64): the weights are packed for the rule's symbolic-row
    tile too (no in-kernel panel copy), and one build matches onnxruntime at 1, tile-1, tile,
    tile+1, odd and long lengths (fp32 rtol 1e-4 / atol 1e-5)."""
    import tvm_autoglm
    from tvm_autoglm.pipeline import schedule
    from tvm_autoglm.schedule_rules import _common as C
    from tvm_autoglm.schedule_rules.matmul import tile_candidates
    from tvm_autoglm.schedule_rules.symbolic_rows import NOMINAL_ROWS

    model = _mlp(rows="seq")
    from tvm_autoglm.targets import load_target

    built = tvm_autoglm.compile(model, AVX2, 3, input_shapes={"x": [1, (1, 64), 32]})
    tvm_target = load_target(AVX2).tvm_target()
    lanes, nregs = C.vector_lanes(tvm_target, "float32"), C.num_vector_registers(tvm_target)
    mr = tile_candidates(NOMINAL_ROWS, 48, lanes, nregs)[0][0]
    kernels = {name: f for name, f in prim_funcs(schedule(built.build, None, False).mod).items() if "matmul" in name}
    assert len(kernels) == 2 and all("packed" in name for name in kernels), kernels.keys()
    from schedule_rules.sched_helpers import symbolic_tile_structure

    for func in kernels.values():
        assert _copy_buffers(func) == []
        # the packed kernel pads its rows itself: full mr-row tiles, no bounds check in the hot loop
        n = int(func.params[-1].shape[-1])
        symbolic_tile_structure(func, tvm_target, tile_candidates(NOMINAL_ROWS, n, lanes, nregs)[0][0],
                                panel_width((1, -1, 32), n, lanes, nregs))
    rng = np.random.default_rng(3)
    for rows in (1, mr - 1, mr, mr + 1, 13, 64):
        x = rng.standard_normal((1, rows, 32)).astype("float32")
        (expected,) = run_ort(model, {"x": x})
        np.testing.assert_allclose(built.run(x=x)["y"], expected, rtol=FP32_RTOL, atol=FP32_ATOL, err_msg=f"rows={rows}")


def test_symbolic_contraction_dim_is_not_packed():
    """A symbolic K (the weight's rows) gives no static panel: the pass leaves the matmul alone."""
    from tvm_autoglm.passes.pack_dense_weights import _row_shape

    seq = tirx.Var("seq", "int64")
    assert _row_shape(relax.Var("x", relax.TensorType([1, 8, seq], "float32"))) is None
    assert _row_shape(relax.Var("x", relax.TensorType([1, seq, 8], "float16"))) is None
    assert _row_shape(relax.Var("x", relax.TensorType([1, seq, 8], "float32"))) == (1, -1, 8)
    assert panel_width((1, -1, 32), 48, 8, 16) == panel_width((1, 720720, 32), 48, 8, 16)
