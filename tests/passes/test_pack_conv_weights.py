"""pack_conv_weights: constant NHWC conv weights stored as [F/lanes, KH, KW, C, lanes], same numbers."""

from __future__ import annotations

import numpy as np
import tvm
from onnx import helper
from passes_helpers import assert_parity, import_model, make_model, op_counts
from tvm import relax
from tvm.ir.expr import Constant

from tvm_autoglm.passes.convert_layout import convert_layout_nhwc
from tvm_autoglm.passes.pack_conv_weights import pack_conv_weights, packed_weight
from tvm_autoglm.passes.registry import get_pass

LANES = 8  # no target in scope: the pass packs for 8 fp32 lanes (AVX2)


def _model(out_channels=16, group=1):
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"], strides=[2, 2], group=group),
    ]
    inits = {
        "w1": rng.standard_normal((out_channels, 3, 3, 3)),
        "b1": rng.standard_normal(out_channels),
        "w2": rng.standard_normal((out_channels, out_channels // group, 1, 1)),
    }
    return make_model(nodes, {"x": [1, 3, 10, 10]}, {"y": None}, inits)


def _packed_shapes(mod):
    shapes = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            for arg in expr.args[1].fields:
                if isinstance(arg, Constant):
                    shapes.append(tuple(arg.value.numpy().shape))

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return shapes


def test_packs_both_convs_into_blocked_layout():
    model = _model()
    mod = pack_conv_weights()(convert_layout_nhwc()(import_model(model)))
    assert op_counts(mod).get("nn.conv2d", 0) == 0
    assert sorted(_packed_shapes(mod)) == sorted([(16 // LANES, 3, 3, 3, LANES), (16 // LANES, 1, 1, 16, LANES)])
    assert_parity(mod, model, {"x": np.random.default_rng(1).standard_normal((1, 3, 10, 10)).astype("float32")}, rtol=1e-4, atol=1e-4)


def test_packed_weight_layout():
    w = np.arange(16 * 3 * 3 * 5, dtype="float32").reshape(16, 3, 3, 5)  # OHWI
    p = packed_weight(w, "OHWI", 8)
    assert p.shape == (2, 3, 3, 5, 8)
    assert p[1, 2, 0, 4, 3] == w[8 + 3, 2, 0, 4]
    np.testing.assert_array_equal(packed_weight(w.transpose(1, 2, 3, 0), "HWIO", 8), p)


def test_leaves_grouped_odd_and_nchw_convs_alone():
    grouped = convert_layout_nhwc()(import_model(_model(group=4)))  # second conv grouped
    assert op_counts(pack_conv_weights()(grouped)).get("nn.conv2d", 0) == 1
    odd = convert_layout_nhwc()(import_model(_model(out_channels=6)))  # 6 % 8 != 0
    assert op_counts(pack_conv_weights()(odd)).get("nn.conv2d", 0) == 2
    nchw = import_model(_model())  # no layout conversion: not channels-last
    out = pack_conv_weights()(nchw)
    assert op_counts(out).get("nn.conv2d", 0) == 2
    tvm.ir.assert_structural_equal(out["main"], nchw["main"])


def test_packs_for_the_target_vector_width():
    mod = convert_layout_nhwc()(import_model(_model(out_channels=32)))
    with tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}):
        wide = pack_conv_weights()(mod)
    # both convs packed (an empty list would pass an all() check), 32 channels as 2 blocks of 16
    assert sorted(_packed_shapes(wide)) == sorted([(2, 3, 3, 3, 16), (2, 1, 1, 32, 16)])
    with tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}):
        narrow = pack_conv_weights()(mod)
    assert sorted(_packed_shapes(narrow)) == sorted([(4, 3, 3, 3, 8), (4, 1, 1, 32, 8)])


def test_registered_after_layout_conversion_cpu_o3():
    from tvm_autoglm.passes.plan import pass_plan

    get_pass("pack_conv_weights")
    plan = pass_plan("cpu", 3)
    assert plan.index("pack_conv_weights") > plan.index("convert_layout_nhwc")
    assert "pack_conv_weights" not in pass_plan("cpu", 2) and all("pack_conv_weights" not in pass_plan(b, 3) for b in ("cuda", "npu"))
