"""convert_layout_nhwc: conv2d in NHWC on CPU, same numbers."""

from __future__ import annotations

from helpers import relax_calls

import numpy as np
import pytest
from onnx import helper, numpy_helper
from passes_helpers import assert_parity, import_model, make_model, op_counts
import tvm
from tvm import relax

from tvm_autoglm.passes.convert_layout import convert_layout_nhwc, layout_safe
from tvm_autoglm.passes.registry import get_pass


def _model():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["c2", "r1"], ["y"])]
    inits = {"w1": rng.standard_normal((8, 3, 3, 3)), "b1": rng.standard_normal(8), "w2": rng.standard_normal((8, 8, 3, 3))}
    return make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 8, 8, 8]}, inits)


def test_convs_become_nhwc_with_boundary_transforms_only():
    model = _model()
    mod = convert_layout_nhwc()(import_model(model))
    layouts = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.conv2d":
            layouts.append((expr.attrs.data_layout, expr.attrs.kernel_layout))

    relax.analysis.post_order_visit(mod["main"].body, visit)
    assert layouts == [("NHWC", "OHWI"), ("NHWC", "OHWI")]
    # one transform in, one out: the region between the convs stays NHWC
    assert op_counts(mod).get("permute_dims", 0) == 2
    assert_parity(mod, model, {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype("float32")})


def test_registered_for_cpu_only_at_o3():
    from tvm_autoglm.passes.plan import pass_plan

    get_pass("convert_layout_nhwc")
    assert "convert_layout_nhwc" in pass_plan("cpu", 3) and "convert_layout_nhwc" not in pass_plan("cpu", 2)
    assert all("convert_layout_nhwc" not in pass_plan(b, 3) for b in ("cuda", "npu"))


# --- ops ConvertLayout crashed on (issue #20, item 3): the pass now leaves them as they were ---------

def _conv_then(tail_nodes, tail_inits=None, opset=17, channels=8):
    """Conv 4->8 (3x3, pad 1) + Relu on [1, 4, 6, 6] -> ``r``, then ``tail_nodes`` ending in ``y``."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]), *tail_nodes]
    inits = {"w": rng.standard_normal((channels, 4, 3, 3)) * 0.3, **(tail_inits or {})}
    return make_model(nodes, {"x": [1, 4, 6, 6]}, {"y": None}, inits, opset=opset)


def _shape_const(name, values):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(values, dtype="int64"), name))


CRASHERS = {
    # Max/Sum/Mean of three inputs import as stack (5-D) + reduce: "can't find S in source layout ABCDE"
    "multi_input_max_sum_mean": ([helper.make_node("Max", ["c", "r", "c"], ["m"]), helper.make_node("Sum", ["m", "r", "c"], ["s"]),
                                  helper.make_node("Mean", ["s", "m", "r"], ["y"])], "stack"),
    # Dropout returns a tuple: "Expected nested to match tuple"; LRN imports as expand_dims + avg_pool3d
    "lrn_dropout": ([helper.make_node("LRN", ["r"], ["l"], size=3), helper.make_node("Dropout", ["l"], ["y"])], "nn.avg_pool3d"),
    # channel shuffle through a 5-D reshape + transpose
    "channel_shuffle": ([_shape_const("s5", [1, 2, 4, 6, 6]), _shape_const("s4", [1, 8, 6, 6]), helper.make_node("Reshape", ["r", "s5"], ["a"]),
                         helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1, 3, 4]), helper.make_node("Reshape", ["b", "s4"], ["y"])], "reshape"),
    # a conv feeding a ConvTranspose: NHWC conv2d_transpose has no legalization (codegen failed)
    "conv_transpose": ([helper.make_node("ConvTranspose", ["r", "wt"], ["y"], strides=[2, 2])], "nn.conv2d_transpose"),
    # a 1-D conv after a squeeze of a 4-D conv's output
    "squeeze_conv1d": ([_shape_const("ax", [2]), helper.make_node("Conv", ["r", "w2"], ["h"], kernel_shape=[6, 1]),
                        helper.make_node("Squeeze", ["h", "ax"], ["q"]), helper.make_node("Conv", ["q", "w1"], ["y"], pads=[1, 1])], "nn.conv1d"),
}
CRASHER_INITS = {"conv_transpose": {"wt": np.random.default_rng(4).standard_normal((8, 2, 2, 2))},
                 "squeeze_conv1d": {"w2": np.random.default_rng(5).standard_normal((8, 8, 6, 1)) * 0.2,
                                    "w1": np.random.default_rng(6).standard_normal((4, 8, 3)) * 0.2}}


@pytest.mark.parametrize("name", list(CRASHERS))
def test_ops_convert_layout_cannot_handle_are_left_unchanged(name):
    tail, kept_op = CRASHERS[name]
    model = _conv_then(tail, CRASHER_INITS.get(name))
    before = import_model(model)
    after = convert_layout_nhwc()(before)
    # the conv went NHWC ...
    assert [c.attrs.data_layout for c in relax_calls(after, "relax.nn.conv2d")][:1] == ["NHWC"]
    # ... and the op ConvertLayout cannot handle is still there, in its original layout
    assert op_counts(after).get(kept_op, 0) == op_counts(before)[kept_op] > 0
    for call in relax_calls(after, f"relax.{kept_op}"):
        layout = getattr(call.attrs, "data_layout", None) or getattr(call.attrs, "layout", None)
        assert layout in (None, "NCHW", "NCW", "NCDHW")
    assert not [gv for gv in after.functions if gv.name_hint.startswith("_autoglm_layout_hidden")]
    assert_parity(after, model, {"x": np.random.default_rng(7).standard_normal((1, 4, 6, 6)).astype("float32")})


def test_layout_safe_accepts_rank4_listed_ops_only():
    x4 = relax.Var("x4", relax.TensorType((1, 8, 6, 6), "float32"))
    x3 = relax.Var("x3", relax.TensorType((1, 8, 6), "float32"))
    x5 = relax.Var("x5", relax.TensorType((1, 2, 4, 6, 6), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("f", [x4, x3, x5]):
        add4 = bb.normalize(relax.op.add(x4, relax.const(1.0, "float32")))
        add3 = bb.normalize(relax.op.add(x3, x3))
        relu5 = bb.normalize(relax.op.nn.relu(x5))
        dropout = bb.normalize(relax.op.nn.dropout(x4))
        transpose = bb.normalize(relax.op.nn.conv2d_transpose(x4, relax.const(np.zeros((8, 2, 2, 2), "float32"))))
        bb.emit_func_output(x4)
    assert layout_safe(add4)
    assert not layout_safe(add3)  # rank 3
    assert not layout_safe(relu5)  # rank 5
    assert not layout_safe(dropout)  # tuple result
    assert not layout_safe(transpose)  # not on the list (no NHWC legalization)


def test_declines_when_convert_layout_itself_fails(monkeypatch):
    """A TVM check failure inside ConvertLayout leaves the module as it was (NCHW), not a failed compile."""
    model = _model()
    before = import_model(model)

    def failing(_layouts):
        def apply(_mod):
            raise tvm.error.InternalError("Check failed: simulated layout inference failure")
        return apply

    monkeypatch.setattr(relax.transform, "ConvertLayout", failing)
    after = convert_layout_nhwc()(before)
    tvm.ir.assert_structural_equal(after, before)
    assert [c.attrs.data_layout for c in relax_calls(after, "relax.nn.conv2d")] == ["NCHW", "NCHW"]
