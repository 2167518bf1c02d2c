"""Our ONNX converters (tvm_autoglm/frontend) against onnxruntime, over odd shapes and attribute mixes.

Each case failed before its converter: standard Attention-23 did not import ('num_heads'),
LayerNormalization's Mean/InvStdDev came back as scalars, RMSNormalization over every axis
failed in FoldConstant.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from _onnx_builders import make_model, value_info
from helpers import assert_close, ort_run
from onnx import TensorProto, helper

import tvm_autoglm

RTOL, ATOL = 1e-4, 1e-5  # float32, both sides compute in float32


def _model(node, inputs: dict, outputs: list[str], opset: int = 23) -> onnx.ModelProto:
    """One-node model; inputs: name -> array (float32 / bool), outputs declared without shapes."""
    dtypes = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("bool"): TensorProto.BOOL}
    model = make_model([node], [value_info(n, a.shape, dtypes[a.dtype]) for n, a in inputs.items()], {n: None for n in outputs},
                       opset=opset, ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def _check(model, inputs):
    want = ort_run(model, inputs)
    got = tvm_autoglm.compile(model, target="cpu", opt_level=3).run(inputs)
    for name in want:
        assert got[name].shape == want[name].shape, name
    assert_close(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape,axis", [((3, 5, 7), 1), ((2, 3, 4, 5), -2), ((6, 11), 0)])
def test_layer_norm_mean_and_inv_std_outputs(shape, axis):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype("float32") * 3 + 1
    w = rng.standard_normal(shape[axis:]).astype("float32")
    b = rng.standard_normal(shape[axis:]).astype("float32")
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y", "mean", "inv_std"], axis=axis, epsilon=1e-3)
    _check(_model(node, {"x": x, "w": w, "b": b}, ["y", "mean", "inv_std"], opset=17), {"x": x, "w": w, "b": b})


@pytest.mark.parametrize("shape,axis", [((4, 7), 0), ((2, 3, 5), -3), ((2, 3, 5), 1)])
def test_rms_norm_over_all_and_some_axes(shape, axis):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype("float32")
    w = rng.standard_normal(shape[axis:]).astype("float32")
    node = helper.make_node("RMSNormalization", ["x", "w"], ["y"], axis=axis, epsilon=1e-4)
    _check(_model(node, {"x": x, "w": w}, ["y"]), {"x": x, "w": w})


ATTENTION_CASES = {
    # name: (q, k, v shapes, attributes, mask shape/dtype or None)
    "4d_plain": ((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 6), {}, None),
    "4d_gqa_causal_scale": ((1, 6, 5, 4), (1, 2, 5, 4), (1, 2, 5, 4), {"is_causal": 1, "scale": 0.3}, None),
    "3d_gqa_bool_mask": ((2, 5, 4 * 8), (2, 7, 2 * 8), (2, 7, 2 * 8), {"q_num_heads": 4, "kv_num_heads": 2}, ((5, 7), "bool")),
    "3d_float_mask_softcap": ((1, 3, 2 * 4), (1, 9, 2 * 4), (1, 9, 2 * 3), {"q_num_heads": 2, "kv_num_heads": 2, "softcap": 2.5}, ((1, 2, 3, 9), "float32")),
    "4d_causal_bool_mask": ((2, 2, 4, 8), (2, 2, 4, 8), (2, 2, 4, 8), {"is_causal": 1}, ((2, 1, 4, 4), "bool")),
}


@pytest.mark.parametrize("case", sorted(ATTENTION_CASES))
def test_attention(case):
    q_shape, k_shape, v_shape, attrs, mask = ATTENTION_CASES[case]
    rng = np.random.default_rng(2)
    inputs = {n: rng.standard_normal(s).astype("float32") for n, s in (("q", q_shape), ("k", k_shape), ("v", v_shape))}
    names = ["q", "k", "v"]
    if mask is not None:
        shape, dtype = mask
        if dtype == "bool":
            inputs["mask"] = rng.random(shape) > 0.3
            inputs["mask"][..., 0] = True  # no fully masked row: onnxruntime gives NaN there, the spec 0
        else:
            inputs["mask"] = rng.standard_normal(shape).astype("float32")
        names.append("mask")
    node = helper.make_node("Attention", names, ["y"], **attrs)
    _check(_model(node, inputs, ["y"]), inputs)


def test_attention_with_past_and_present():
    rng = np.random.default_rng(3)
    inputs = {
        "q": rng.standard_normal((1, 2, 3, 4)).astype("float32"),
        "k": rng.standard_normal((1, 2, 3, 4)).astype("float32"),
        "v": rng.standard_normal((1, 2, 3, 4)).astype("float32"),
        "past_k": rng.standard_normal((1, 2, 5, 4)).astype("float32"),
        "past_v": rng.standard_normal((1, 2, 5, 4)).astype("float32"),
    }
    node = helper.make_node("Attention", ["q", "k", "v", "", "past_k", "past_v"], ["y", "present_k", "present_v"], is_causal=1)
    _check(_model(node, inputs, ["y", "present_k", "present_v"]), inputs)


def test_scalar_input_keeps_its_shape():
    """A rank-0 graph input (a Gemm's scalar C, a quantization scale) runs (np.ascontiguousarray made it (1,))."""
    rng = np.random.default_rng(4)
    inputs = {"a": rng.standard_normal((3, 5)).astype("float32"), "b": rng.standard_normal((5, 4)).astype("float32"),
              "c": np.array(0.75, dtype="float32")}
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=0.5)
    _check(_model(node, inputs, ["y"], opset=17), inputs)


def test_shape_output_after_constant_folding():
    """The clean-up folds Shape into Constant(value_ints=...); TVM's Constant converter read only `value`."""
    rng = np.random.default_rng(5)
    inputs = {"x": rng.standard_normal((2, 3, 5)).astype("float32")}
    model = make_model([helper.make_node("Shape", ["x"], ["s"], start=1), helper.make_node("Relu", ["x"], ["y"])], {"x": [2, 3, 5]},
                       [value_info("s", [2], TensorProto.INT64), value_info("y", [2, 3, 5])], opset=19, ir_version=9)
    got = tvm_autoglm.compile(model, target="cpu", opt_level=1).run(inputs)
    np.testing.assert_array_equal(got["s"], np.array([3, 5], dtype="int64"))  # exact: shape values
    np.testing.assert_array_equal(got["y"], np.maximum(inputs["x"], 0))
