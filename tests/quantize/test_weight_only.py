"""--quantize wint8: the weight-only int8 kernel, the Relax rewrite, the per-layer budget, and the entry points.

Kernel parity is against float64 numpy on the *dequantized* weight (what the kernel multiplies
by), so the only error left is fp32 summation: |got - ref| <= 2 K eps32 (|x| @ |W|), with
eps32 = 2**-24 (a K-term fp32 dot product's rounding bound, doubled for the final scale
multiply). Targets are pinned: AVX2 (8 lanes, 64-column panels) and AVX2-planning-for-512
(16 lanes, 128-column panels) both run on any AVX2 host; the AVX-512 target is compiled
only and its assembly inspected.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from _onnx_builders import make_model
from onnx import helper

import tvm
from tvm import relax

from tvm_autoglm.errors import AutoGLMError
from tvm_autoglm.quantize import weight_only, weight_only_budget, wint8_kernel
from tvm_autoglm.targets import load_target

PARITY_TARGETS = ("cpu-x86-avx2", "tests/targets/cpu-x86-avx2-plan512.json")


def _target(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / name if name.endswith(".json") else name
    return load_target(str(path)).tvm_target()


def _compile_kernel(target, rows, k, n):
    width = wint8_kernel.panel_width(target)
    func = wint8_kernel.wint8_matmul_func(rows, k, -(-n // width), width)
    return tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target), width


@pytest.mark.parametrize("target_name", PARITY_TARGETS)
@pytest.mark.parametrize("rows,k,n", [(1, 64, 64), (1, 37, 75), (3, 129, 200), (1, 1, 8), (5, 96, 513), (2, 300, 17),
                                      (8, 70, 130), (16, 33, 64)])  # rows 8, 16: 4-row tiles (prefill)
def test_kernel_matches_float64_on_dequantized_weight(target_name, rows, k, n):
    target = _target(target_name)
    ex, width = _compile_kernel(target, rows, k, n)
    rng = np.random.default_rng(rows * 1000 + k + n)
    w = rng.standard_normal((k, n)).astype(np.float32)
    w[:, 0] = 0.0  # an all-zero column (scale 1, all-zero int8)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    wq, scale = wint8_kernel.quantize_per_channel(w)
    panels, scale_padded = wint8_kernel.pack_panels(wq, scale, width)
    assert np.array_equal(wint8_kernel.unpack_panels(panels, n), wq)
    dev = tvm.cpu()
    out = tvm.runtime.empty((rows, panels.shape[0] * width), "float32", dev)
    ex.mod["main"](*[tvm.runtime.tensor(a, dev) for a in (x, panels, scale_padded)], out)
    deq = wint8_kernel.dequantize(wq, scale)
    ref = x.astype(np.float64) @ deq
    bound = 2 * k * 2.0**-24 * (np.abs(x).astype(np.float64) @ np.abs(deq)) + 1e-30
    got = out.numpy()
    assert np.all(np.abs(got[:, :n] - ref) <= bound), float(np.max(np.abs(got[:, :n] - ref) / bound))
    assert np.all(got[:, n:] == 0.0)  # padded columns: zero weights, zero scales
    # the dequantized weight is within half a step of the fp32 one (the quantizer, not the kernel)
    assert np.all(np.abs(deq - w) <= scale[None, :] / 2 + 1e-7)


def _hot_loop(asm: str) -> str:
    """The assembly block (label to next label) that holds the most vfmadd instructions."""
    blocks = re.split(r"\n\.LBB\d+_\d+:", asm)
    return max(blocks, key=lambda b: b.count("vfmadd"))


def test_kernel_hot_loop_converts_in_registers_avx2():
    ex, _ = _compile_kernel(_target("cpu-x86-avx2"), 1, 256, 128)
    loop = _hot_loop(ex.mod.inspect_source("asm"))
    assert re.search(r"vpmovsxbd\s+-?\d*\(%\w+[^)]*\), %ymm", loop), "int8 loads should sign-extend straight from memory"
    assert "vcvtdq2ps" in loop and re.search(r"vfmadd\d+ps\s+.*%ymm", loop)
    assert loop.count("vfmadd") >= 8  # eight independent accumulators (64-column panel / 8 lanes)
    assert not re.search(r"vmovups\s+%ymm\d+, -?\d*\(%rsp\)", loop), "accumulators spilled to the stack in the hot loop"


def test_prefill_tile_reuses_each_converted_weight_for_four_rows():
    ex, _ = _compile_kernel(_target("cpu-x86-avx2"), 16, 256, 128)
    loop = _hot_loop(ex.mod.inspect_source("asm"))
    assert loop.count("vfmadd") >= 4 * loop.count("vcvtdq2ps") > 0
    assert not re.search(r"vmovups\s+%ymm\d+, -?\d*\(%rsp\)", loop), "accumulators spilled to the stack in the hot loop"


def test_kernel_avx512_uses_zmm():
    ex, width = _compile_kernel(_target("targets/cpu-x86-avx512.json"), 1, 256, 256)
    assert width == 128
    loop = _hot_loop(ex.mod.inspect_source("asm"))
    assert re.search(r"vpmovsxbd\s+.*%zmm", loop) and re.search(r"vcvtdq2ps\s+%zmm", loop) and re.search(r"vfmadd\d+ps\s+.*%zmm", loop)


# --- the Relax rewrite -------------------------------------------------------------------------------------------


def _matmul_module(x_ty, w, **matmul_attrs):
    bb = relax.BlockBuilder()
    x = relax.Var("x", x_ty)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(w), **matmul_attrs))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("shape,transposed", [((1, 1, 40), False), ((40,), False), ((3, 40), True)])
def test_rewrite_structure(shape, transposed):
    target = _target("cpu-x86-avx2")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 70)).astype(np.float32)
    if transposed:  # ONNX Gemm transB: the matmul reads permute_dims(W^T)
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType(shape, "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                wt = bb.emit(relax.op.permute_dims(relax.const(np.ascontiguousarray(w.T)), [1, 0]))
                out = bb.emit_output(bb.emit(relax.op.matmul(x, wt)))
            bb.emit_func_output(out)
        before = bb.get()
    else:
        before = _matmul_module(relax.TensorType(shape, "float32"), w)
    after, sites = weight_only.rewrite(before, None, target)
    assert [s["precision"] for s in sites["main"]] == ["wint8"]
    assert sites["main"][0]["key"] == weight_only.weight_key(w)

    width = wint8_kernel.panel_width(target)
    wq, scale = wint8_kernel.quantize_per_channel(w)
    panels, scale_padded = wint8_kernel.pack_panels(wq, scale, width)
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        gv = bb.add_func(wint8_kernel.wint8_matmul_func(rows, 40, panels.shape[0], width), f"wint8_matmul_{rows}x40x{panels.shape[0] * width}")
        with bb.dataflow():
            if transposed:
                bb.emit(relax.op.permute_dims(relax.const(np.ascontiguousarray(w.T)), [1, 0]))
            x2 = bb.emit(relax.op.reshape(x, [rows, 40]))
            y = bb.emit(relax.call_tir(gv, [x2, relax.const(panels, "int8"), relax.const(scale_padded, "float32")],
                                       relax.TensorType((rows, panels.shape[0] * width), "float32")))
            y = bb.emit(relax.op.strided_slice(y, axes=[1], begin=[0], end=[70]))
            out = bb.emit_output(bb.emit(relax.op.reshape(y, [*shape[:-1], 70])))
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(after["main"], bb.get()["main"], map_free_vars=True)


def _assert_unchanged(before, reason_part):
    after, sites = weight_only.rewrite(before, None, _target("cpu-x86-avx2"))
    tvm.ir.assert_structural_equal(after["main"], before["main"])
    assert len(sites["main"]) == 1 and sites["main"][0]["precision"] == "fp32"
    assert reason_part in sites["main"][0].get("declined", "not allowed"), sites["main"][0]


def test_declines_non_float32_out_dtype():
    w = np.ones((8, 16), np.float32)
    _assert_unchanged(_matmul_module(relax.TensorType((2, 8), "float32"), w, out_dtype="float16"), "out_dtype float16")


def test_declines_symbolic_activation():
    n = tvm.tirx.Var("n", "int64")
    _assert_unchanged(_matmul_module(relax.TensorType((n, 8), "float32"), np.ones((8, 16), np.float32)), "not static")


def test_declines_activation_of_unknown_dtype():
    _assert_unchanged(_matmul_module(relax.TensorType((2, 8), ""), np.ones((8, 16), np.float32)), "not float32")


def test_leaves_weights_outside_the_allowed_set():
    w = np.ones((8, 16), np.float32)
    before = _matmul_module(relax.TensorType((2, 8), "float32"), w)
    after, sites = weight_only.rewrite(before, {"8x16:not-this-weight"}, _target("cpu-x86-avx2"))
    tvm.ir.assert_structural_equal(after["main"], before["main"])
    assert sites["main"][0]["precision"] == "fp32" and "declined" not in sites["main"][0]


# --- the per-layer budget ----------------------------------------------------------------------------------------


def test_row_error_is_one_minus_worst_row_cosine():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((2, 5, 32))
    got = ref + 0.1 * rng.standard_normal(ref.shape)
    rows_r, rows_g = ref.reshape(-1, 32), got.reshape(-1, 32)
    cos = (rows_r * rows_g).sum(1) / np.linalg.norm(rows_r, axis=1) / np.linalg.norm(rows_g, axis=1)
    assert weight_only_budget.row_error([ref], [got]) == pytest.approx(1 - cos.min(), rel=1e-12)
    assert weight_only_budget.row_error([ref], [ref]) == 0.0


def _sensitive_model():
    """X[4,32] -> MatMul A -> Gemm(transB) B -> MatMul C. A's column 0 is zero, so h[:, 0] == 0 and B's row 0 (1000s)
    never contributes in fp32; per-channel int8 of B then rounds every other row of B to 0: B alone breaks any budget."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((32, 40)).astype(np.float32)
    a[:, 0] = 0.0
    b = rng.standard_normal((40, 48)).astype(np.float32)
    b[0, :] = 1000.0
    c = rng.standard_normal((48, 24)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "A"], ["h"], name="layer_a"),
             helper.make_node("Gemm", ["h", "Bt", "bias"], ["y"], name="layer_b", transB=1),
             helper.make_node("MatMul", ["y", "C"], ["out"], name="layer_c")]
    model = make_model(nodes, {"x": [4, 32]}, {"out": [4, 24]},
                       {"A": a, "Bt": np.ascontiguousarray(b.T), "bias": rng.standard_normal(48).astype(np.float32), "C": c})
    return model, a, b, c


def test_budget_keeps_the_sensitive_layer_fp32():
    model, *_ = _sensitive_model()
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)}
    choice = weight_only_budget.choose(model, feeds, 0.01)
    precision = {row["layer"]: row["precision"] for row in choice["layers"]}
    assert precision == {"layer_a": "wint8", "layer_b": "fp32", "layer_c": "wint8"}
    assert choice["error_all_int8"] > 0.01 >= choice["error"]
    alone = {row["layer"]: row["error_alone"] for row in choice["layers"]}
    assert alone["layer_b"] > 0.01 and alone["layer_a"] < 0.01


def test_probe_quantizes_only_the_measured_node_of_a_shared_weight():
    """W is read by the measured MatMul and by an Add: a trial swaps W for its int8 value in the MatMul alone."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((16, 16)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="layer"),
             helper.make_node("Add", ["h", "W"], ["out"], name="reuse")]
    model = make_model(nodes, {"x": [16, 16]}, {"out": [16, 16]}, {"W": w})
    layers = weight_only_budget.onnx_layers(model)
    assert [layer.node for layer in layers] == ["layer"]
    probe = weight_only_budget.OrtProbe(model, layers)
    x = rng.standard_normal((16, 16)).astype(np.float32)
    fp32 = probe.run({"x": x})["out"]
    int8 = probe.run({"x": x}, ["layer"])["out"]
    w64 = w.astype(np.float64)
    np.testing.assert_allclose(fp32, x.astype(np.float64) @ w64 + w64, rtol=1e-5, atol=1e-5)
    deq = wint8_kernel.dequantize(*wint8_kernel.quantize_per_channel(w))
    np.testing.assert_allclose(int8, x.astype(np.float64) @ deq + w64, rtol=1e-5, atol=1e-5)  # the Add reads fp32 W
    assert np.abs(int8 - fp32).max() > 1e-4  # the trial did change the MatMul
    np.testing.assert_array_equal(probe.run({"x": x})["out"], fp32)  # and the next fp32 run is fp32 again


def test_budget_measures_only_the_named_outputs():
    """outputs=[...] restricts the worst-row cosine to those outputs (a decoder: its logits, not its K/V cache)."""
    model, *_ = _sensitive_model()
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)}
    everything = weight_only_budget.choose(model, feeds, 0.01)
    named = weight_only_budget.choose(model, lambda run: feeds, 0.01, outputs=["out"])
    assert named["error"] == pytest.approx(everything["error"], abs=1e-9)
    assert "of out vs fp32" in named["measure"] and "x[4, 32]" in named["measure"]


def test_approval_of_column_concatenated_weights():
    """merge_parallel_matmul's [Wq | Wk] may go int8 only if every part was measured and chosen."""
    rng = np.random.default_rng(2)
    wq, wk, wv = (rng.standard_normal((16, n)).astype(np.float32) for n in (8, 4, 4))
    layers = [weight_only_budget.Layer(name, name, weight_only.weight_key(w), False, w.shape, weight_only.weight_key(w[:, :1]))
              for name, w in (("q", wq), ("k", wk), ("v", wv))]
    approve = weight_only_budget.Approval(layers, {layers[0].key, layers[1].key})  # v stays fp32
    merged = np.concatenate([wq, wk], axis=1)
    assert approve(weight_only.weight_key(merged), merged)
    assert approve.merged_into == {layers[0].key: weight_only.weight_key(merged), layers[1].key: weight_only.weight_key(merged)}
    with_v = np.concatenate([wq, wk, wv], axis=1)
    assert not approve(weight_only.weight_key(with_v), with_v)
    shifted = np.concatenate([wk, wq[:, 1:]], axis=1)  # wk then a partial q: no exact decomposition
    assert not approve(weight_only.weight_key(shifted), shifted)


def test_budget_out_of_range_is_refused():
    model, *_ = _sensitive_model()
    with pytest.raises(AutoGLMError, match="accuracy-budget must be in"):
        weight_only_budget.choose(model, {"x": np.zeros((4, 32), np.float32)}, 1.5)


def test_plain_compile_wint8_matches_dequantized_reference():
    import tvm_autoglm

    model, a, b, c = _sensitive_model()
    built = tvm_autoglm.compile(model, target="cpu-x86-avx2", quantize="wint8")
    q = built.build.quantization
    assert {row["layer"]: row["precision"] for row in q["layers"]} == {"layer_a": "wint8", "layer_b": "fp32", "layer_c": "wint8"}
    assert q["sites_per_function"] == {"main": 2}
    x = np.random.default_rng(9).standard_normal((4, 32)).astype(np.float32)
    bias = next(t for t in model.graph.initializer if t.name == "bias")
    from onnx import numpy_helper

    deq = lambda w: wint8_kernel.dequantize(*wint8_kernel.quantize_per_channel(w))  # noqa: E731
    ref = ((x.astype(np.float64) @ deq(a)) @ b.astype(np.float64) + numpy_helper.to_array(bias)) @ deq(c)
    got = built.run({"x": x})["out"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())  # fp32 sums over K <= 48


def test_wint8_refuses_calibration():
    import tvm_autoglm

    model, *_ = _sensitive_model()
    with pytest.raises(AutoGLMError, match="takes no --calibration"):
        tvm_autoglm.compile(model, target="cpu-x86-avx2", quantize="wint8", calibration={"x": np.zeros((4, 32), np.float32)})
