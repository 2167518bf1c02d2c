"""Regression (difftest s0 i49): a rank-0 graph input reached the VM as shape (1,).

``np.ascontiguousarray`` returns at least a 1-d array, so a scalar input passed the
shape check and then failed inside the VM ("expect Tensor with ndim 0 but get 1").
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from _onnx_builders import make_model
from helpers import ort_run

import tvm_autoglm
from tvm_autoglm.runtime.inputs import validate_inputs


def _scaled_model():
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    return make_model(nodes, {"x": [2, 5], "s": []}, {"y": [2, 5]}, name="scalar_input")


def test_validate_inputs_keeps_a_scalar_rank_zero():
    specs = [{"name": "s", "shape": [], "dtype": "float32"}]
    (array,) = validate_inputs({"s": np.float32(-1.5)}, specs)
    assert array.shape == () and array.flags["C_CONTIGUOUS"]


def test_model_with_a_scalar_input_matches_onnxruntime():
    model = _scaled_model()
    inputs = {"x": np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32), "s": np.array(-1.5, dtype=np.float32)}
    actual = tvm_autoglm.compile(model, target="cpu", opt_level=1).run(inputs)
    np.testing.assert_allclose(actual["y"], ort_run(model, inputs)["y"], rtol=1e-6, atol=1e-6)  # one multiply: exact up to rounding
