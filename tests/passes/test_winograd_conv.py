"""winograd_conv: 3x3 stride-1 NHWC convs -> input transform, 16 GEMMs, output transform; same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper
from passes_helpers import assert_parity, import_model, kernels, make_model, op_counts
from tvm import relax

from tvm_autoglm.passes.convert_layout import convert_layout_nhwc
from tvm_autoglm.passes.registry import get_pass
from tvm_autoglm.passes.winograd_conv import AT, BT, G, _tap, padded_tile_count, transformed_weight, winograd_conv
from tvm_autoglm.schedule_rules import default_schedule

# Winograd rounds differently from a direct conv (the transformed values are sums
# of up to 16 inputs): errors of a few 1e-6 on outputs of magnitude ~30 here.
RTOL, ATOL = 1e-4, 1e-4
STAGES = ("winograd_input", "winograd_gemm", "winograd_output")


def _conv_model(h, w, c=8, k=16, seed=0, batch=1, **conv_attrs):
    rng = np.random.default_rng(seed)
    attrs = {"pads": [1, 1, 1, 1], **conv_attrs}
    group = attrs.get("group", 1)
    kh = attrs.pop("kernel", 3)
    if kh != 3:
        attrs["pads"] = [0, 0, 0, 0]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    inits = {"w": rng.standard_normal((k, c // group, kh, kh)), "b": rng.standard_normal(k)}
    return make_model(nodes, {"x": [batch, c, h, w]}, {"y": None}, inits)


def _rewrite(model):
    return winograd_conv()(convert_layout_nhwc()(import_model(model)))


def _input(model, seed=1):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype("float32")}


@pytest.mark.parametrize("size", [(14, 14), (13, 11), (12, 17)])
def test_rewrites_conv_into_three_kernels_with_parity(size):
    model = _conv_model(*size)
    mod = _rewrite(model)
    assert op_counts(mod).get("nn.conv2d", 0) == 0
    # The NCHW<->NHWC transposes at the model's boundary fuse into the first and last.
    names = [n for n in kernels(mod) if "winograd" in n]
    assert len(names) == 3 and [stage in n for stage, n in zip(STAGES, names)] == [True] * 3
    assert names[2].startswith("fused_winograd_output_add_relu")  # bias + ReLU fused after the output transform
    assert_parity(mod, model, _input(model), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("size", [(14, 14), (13, 11)])
def test_batch_tiles_numbered_image_by_image(size):
    # 3 images of 13x11: 3 x 42 tiles = 126, padded to 128 rows that read below the last image.
    model = _conv_model(*size, batch=3)
    mod = _rewrite(model)
    assert op_counts(mod).get("nn.conv2d", 0) == 0
    assert_parity(mod, model, _input(model), rtol=RTOL, atol=ATOL)


def test_tile_rows_padded_to_four():
    assert [padded_tile_count(n) for n in (49, 42, 784, 196, 36)] == [52, 44, 784, 196, 36]
    mod = _rewrite(_conv_model(14, 14))
    shapes = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            shapes.append([int(d) for d in expr.ty.shape.values])

    relax.analysis.post_order_visit(mod["main"].body, visit)
    assert [16, 52, 8] in shapes and [16, 52, 16] in shapes  # V and M: 49 tiles + 3 zero rows


@pytest.mark.parametrize(
    "model",
    [
        _conv_model(14, 14, strides=[2, 2]),
        _conv_model(14, 14, kernel=1),
        _conv_model(14, 14, dilations=[2, 2], pads=[2, 2, 2, 2]),
        _conv_model(14, 14, group=2),
        _conv_model(14, 14, k=12),  # 12 output channels: not a whole number of 8-lane vectors
        _conv_model(7, 7),  # 16 tiles: the 16 transformed weights cost more than the multiplies saved
    ],
    ids=["stride2", "1x1", "dilated", "grouped", "odd-channels", "7x7"],
)
def test_leaves_other_convs_alone(model):
    assert op_counts(_rewrite(model)).get("nn.conv2d", 0) == 1


def test_packs_the_weight_for_the_target_vector_width():
    mod = convert_layout_nhwc()(import_model(_conv_model(14, 14, k=32)))
    with tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}):
        wide = winograd_conv()(mod)
    weights = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            weights.extend(tuple(a.value.numpy().shape) for a in expr.args[1].fields if isinstance(a, tvm.ir.expr.Constant))

    relax.analysis.post_order_visit(wide["main"].body, visit)
    assert weights == [(16, 2, 8, 16)]  # [positions, K / 16, C, 16 lanes]


def test_leaves_nchw_alone():
    mod = import_model(_conv_model(14, 14))
    out = winograd_conv()(mod)
    tvm.ir.assert_structural_equal(out["main"], mod["main"])


def test_transform_matrices_compute_a_3x3_correlation():
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    direct = np.array([[np.sum(d[y : y + 3, x : x + 3] * g) for x in range(2)] for y in range(2)])
    winograd = AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T
    np.testing.assert_allclose(winograd, direct, rtol=1e-12, atol=1e-12)


def test_index_taps_match_the_input_transform_rows():
    analyzer = tvm.sym.Analyzer()
    for a in range(4):
        u, v, sign = (int(analyzer.simplify(x)) for x in _tap(tvm.tirx.IntImm("int32", a)))
        row = np.zeros(4)
        row[u] += 1
        row[v] += sign
        np.testing.assert_array_equal(row, BT[a])


def test_transformed_weight_layout():
    rng = np.random.default_rng(0)
    hwio = rng.standard_normal((3, 3, 4, 16)).astype("float32")
    u = transformed_weight(hwio, 8)
    assert u.shape == (16, 2, 4, 8) and u.dtype == np.float32
    e, f, c = 6, 11, 3  # position (1, 2) of the 4x4 tile, output channel 11, input channel 3
    expected = (G @ hwio[:, :, c, f].astype(np.float64) @ G.T)[1, 2]
    np.testing.assert_allclose(u[e, f // 8, c, f % 8], expected, rtol=1e-6)


def test_kernels_get_the_gemm_and_vector_schedules():
    mod = relax.get_pipeline("zero")(_rewrite(_conv_model(14, 14)))
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    rules = {
        stage: default_schedule(func, target)[1]
        for gv, func in mod.functions_items()
        for stage in STAGES
        if isinstance(func, tvm.tirx.PrimFunc) and stage in gv.name_hint
    }
    assert rules == {"winograd_input": "Elementwise", "winograd_gemm": "Matmul", "winograd_output": "Elementwise"}


def test_registered_between_layout_conversion_and_weight_packing():
    from tvm_autoglm.passes.plan import pass_plan

    get_pass("winograd_conv")
    plan = pass_plan("cpu", 3)
    assert plan.index("convert_layout_nhwc") < plan.index("winograd_conv") < plan.index("pack_conv_weights")
    assert "winograd_conv" not in pass_plan("cpu", 2) and all("winograd_conv" not in pass_plan(b, 3) for b in ("cuda", "npu"))
