"""Each of our passes on symbolic dims: it either handles them (applies, parity at several shapes
from one build) or declines (leaves the module unchanged). Each pass is run on the same model
static (where it applies) and dynamic, so a decline cannot hide behind a pattern that never matched.

Tolerances: fp32, rtol 1e-4 / atol 1e-5 against onnxruntime.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import FP32_ATOL, FP32_RTOL, assert_close, conv_model, mlp_model, ort_run
from onnx import helper

import tvm_autoglm
from tvm_autoglm.pipeline import build_relax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "passes"))
from passes_helpers import const_node, make_model  # noqa: E402


def _changed(model, shapes, pass_name: str, dynamic_dims=None) -> bool:
    """Did ``pass_name`` change the op histogram of main in an O3 CPU build?"""
    build = build_relax(model, "cpu", 3, shapes, dynamic_dims=dynamic_dims)
    (report,) = [r for r in build.pass_reports if r.name == pass_name]
    return report.ops_before != report.ops_after


def _layer_norm(shape):
    nodes = [
        const_node("two", 2.0),
        const_node("eps", 1e-5),
        helper.make_node("ReduceMean", ["x"], ["u"], axes=[-1], keepdims=1),
        helper.make_node("Sub", ["x", "u"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]),
        helper.make_node("ReduceMean", ["d2"], ["v"], axes=[-1], keepdims=1),
        helper.make_node("Add", ["v", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["s"]),
        helper.make_node("Div", ["d", "s"], ["y"]),
    ]
    return make_model(nodes, {"x": shape}, {"y": shape})


def _rms_norm(shape):
    rng = np.random.default_rng(0)
    nodes = [
        const_node("two", 2.0),
        const_node("eps", 1e-6),
        helper.make_node("Pow", ["x", "two"], ["x2"]),
        helper.make_node("ReduceMean", ["x2"], ["m"], axes=[-1], keepdims=1),
        helper.make_node("Add", ["m", "eps"], ["me"]),
        helper.make_node("Sqrt", ["me"], ["s"]),
        helper.make_node("Div", ["x", "s"], ["n"]),
        helper.make_node("Mul", ["w", "n"], ["y"]),
    ]
    return make_model(nodes, {"x": shape}, {"y": shape}, {"w": rng.random(16) + 0.5})


@pytest.mark.parametrize("make, pass_name", [(_layer_norm, "rewrite_layer_norm"), (_rms_norm, "rewrite_rms_norm")])
def test_norm_rewrites_handle_symbolic_rows(make, pass_name):
    """Only the normalized (last) dim has to be a number; batch and seq can be symbolic."""
    assert _changed(make(["batch", "seq", 16]), {}, pass_name, {"batch": (1, 4), "seq": (1, 64)})
    model_proto = make(["batch", "seq", 16])
    model = tvm_autoglm.compile(model_proto, "cpu", 3, dynamic_dims={"batch": (1, 4), "seq": (1, 64)})
    for shape in ((1, 1, 16), (3, 17, 16), (4, 64, 16)):
        x = {"x": np.random.default_rng(shape[1]).standard_normal(shape).astype(np.float32) * 2 + 1}
        assert_close(model.run(x), ort_run(model_proto, x), FP32_RTOL, FP32_ATOL)


@pytest.mark.parametrize("make, pass_name", [(_layer_norm, "rewrite_layer_norm")])
def test_norm_rewrites_decline_a_symbolic_normalized_dim(make, pass_name):
    assert _changed(make([2, 16]), {}, pass_name)
    assert not _changed(make([2, "width"]), {}, pass_name, {"width": (1, 32)})


def test_rms_norm_declines_a_symbolic_normalized_dim():
    nodes = [
        const_node("two", 2.0),
        const_node("eps", 1e-6),
        helper.make_node("Pow", ["x", "two"], ["x2"]),
        helper.make_node("ReduceMean", ["x2"], ["m"], axes=[-1], keepdims=1),
        helper.make_node("Add", ["m", "eps"], ["me"]),
        helper.make_node("Sqrt", ["me"], ["s"]),
        helper.make_node("Div", ["x", "s"], ["y"]),
    ]
    assert _changed(make_model(nodes, {"x": [2, 16]}, {"y": [2, 16]}), {}, "rewrite_rms_norm")
    assert not _changed(make_model(nodes, {"x": [2, "width"]}, {"y": [2, "width"]}), {}, "rewrite_rms_norm", {"width": (1, 32)})


def test_pack_dense_weights_packs_symbolic_rows_and_stays_correct():
    """Symbolic rows are packed too (the panel width is the rule's tile at symbolic_rows.NOMINAL_ROWS;
    the packed kernel pads the rows to its tile): one build right at lengths around the tile."""
    assert _changed(mlp_model(batch=3), {}, "pack_dense_weights")
    dynamic = mlp_model(batch="batch")
    assert _changed(dynamic, {}, "pack_dense_weights", {"batch": (1, 64)})
    model = tvm_autoglm.compile(dynamic, "cpu", 3, dynamic_dims={"batch": (1, 64)})
    for batch in (1, 3, 4, 5, 6, 7, 13, 64):
        inputs = {"x": np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32), "scale": np.array([0.5], np.float32)}
        assert_close(model.run(inputs), ort_run(dynamic, inputs), FP32_RTOL, FP32_ATOL)


def _conv(size, channels=4):
    model = conv_model(channels=channels, size=8)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[2:], size):
        if isinstance(value, str):
            dim.ClearField("dim_value")
            dim.dim_param = value
        else:
            dim.dim_value = value
    return model


def test_winograd_declines_symbolic_height_and_width():
    """Winograd tiles the image into 2x2 output tiles counted at compile time: symbolic H/W decline."""
    assert _changed(_winograd_conv([1, 8, 14, 14]), {}, "winograd_conv")
    assert not _changed(_winograd_conv([1, 8, "h", "w"]), {}, "winograd_conv", {"h": (3, 24), "w": (3, 24)})


def _winograd_conv(shape):
    """A conv winograd_conv takes statically (8 -> 16 channels, 3x3, stride 1, pad 1)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    return make_model(nodes, {"x": shape}, {"y": None}, {"w": rng.standard_normal((16, 8, 3, 3)), "b": rng.standard_normal(16)})


def test_conv_passes_on_symbolic_image_keep_parity():
    """fold_conv_bn and convert_layout_nhwc handle symbolic H/W (they do not read the image size)."""
    proto = _conv(("h", "w"))
    ranges = {"h": (3, 24), "w": (3, 24)}
    assert _changed(proto, {}, "fold_conv_bn", ranges)
    assert _changed(proto, {}, "convert_layout_nhwc", ranges)
    model = tvm_autoglm.compile(proto, "cpu", 3, dynamic_dims=ranges)
    for h, w in ((3, 3), (5, 11), (24, 24)):
        x = {"image": np.random.default_rng(h + w).standard_normal((1, 3, h, w)).astype(np.float32)}
        assert_close(model.run(x), ort_run(proto, x), FP32_RTOL, FP32_ATOL)


def test_matmul_rule_schedules_symbolic_rows_without_bounds_checks():
    """x[1, seq, 96] @ W[96, 64] + b: the Matmul rule takes the symbolic-row kernel (rows padded to full
    register tiles: no predicate in the contraction, one row test in the write-back) and matches float64
    numpy at odd and even lengths."""
    import tvm
    from tvm import relax, tirx

    from tvm_autoglm.schedule_rules import default_schedule
    from tvm_autoglm.scheduling import schedule_module
    from tvm_autoglm.targets import load_target

    spec = load_target("cpu-x86-avx2")
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((96, 64)).astype("float32"), rng.standard_normal(64).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, tirx.Var("seq", "int64"), 96), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.add(bb.emit(relax.op.matmul(x, relax.const(w))), relax.const(b)))
        bb.emit_func_output(out)
    mod = relax.get_pipeline("zero")(bb.get())
    (kernel,) = [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
    sch, rule = default_schedule(kernel, spec.tvm_target())
    assert rule == "Matmul"
    from schedule_rules.sched_helpers import walk

    import tvm.s_tir.stmt  # noqa: F401  (SBlock, SBlockRealize)

    blocks = {blk.name_hint: blk for blk in walk(sch.mod["main"].body, tvm.s_tir.stmt.SBlock)}
    realizes = walk(sch.mod["main"].body, tvm.s_tir.stmt.SBlockRealize)
    predicated = {r.block.name_hint for r in realizes if not (isinstance(r.predicate, tirx.IntImm) and int(r.predicate) == 1)}
    contraction = {name for name in blocks if name.endswith(("_update", "_init"))}
    assert contraction and not predicated & contraction, (predicated, contraction)
    scheduled, _ = schedule_module(mod, spec, 3, None, False)
    vm = relax.VirtualMachine(tvm.compile(scheduled, spec.tvm_target()), tvm.cpu())
    for seq in (1, 7, 64, 131):
        xv = rng.standard_normal((1, seq, 96)).astype("float32")
        got = vm["main"](tvm.runtime.tensor(xv)).numpy()
        np.testing.assert_allclose(got, xv.astype(np.float64) @ w + b, rtol=FP32_RTOL, atol=1e-4)
