"""convert_layout_nhwc: conv2d in NHWC on CPU, same numbers."""

from __future__ import annotations

import numpy as np
from onnx import helper
from passes_helpers import assert_parity, import_model, make_model, op_counts
from tvm import relax

from tvm_autoglm.passes.convert_layout import convert_layout_nhwc
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
    spec = get_pass("convert_layout_nhwc")
    assert spec.opt_level == 3 and spec.target_kinds == ("cpu",)
