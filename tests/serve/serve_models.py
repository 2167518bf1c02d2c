"""A tiny row-wise model for serving tests: every output row depends only on its own input rows.

That independence is what makes padding and packing several requests into one
batch-N call valid, so batched and unbatched serving must agree row for row.
"""

from __future__ import annotations

import numpy as np
import onnx
from _onnx_builders import make_model
from onnx import helper, numpy_helper

FEATURES = 16
HIDDEN = 8


def rowwise_model(batch: int = 1, seed: int = 3) -> onnx.ModelProto:
    """y = relu(x @ W + b) * s ; total = sum(y, axis=1): inputs x[B,16] float32, s[B,1] float32."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((FEATURES, HIDDEN)).astype("float32"), "w")
    b = numpy_helper.from_array(rng.standard_normal(HIDDEN).astype("float32"), "b")
    axes = numpy_helper.from_array(np.array([1], dtype="int64"), "axes")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h0"], name="fc"),
        helper.make_node("Add", ["h0", "b"], ["h1"], name="bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("Mul", ["h2", "s"], ["y"], name="scale"),
        helper.make_node("ReduceSum", ["y", "axes"], ["total"], name="sum", keepdims=1),
    ]
    return make_model(nodes, {"x": [batch, FEATURES], "s": [batch, 1]}, {"y": [batch, HIDDEN], "total": [batch, 1]}, [w, b, axes],
                      name="rowwise", check=True)


def row_inputs(seed: int, rows: int = 1) -> dict[str, np.ndarray]:
    """Distinct inputs per request, so a response can be checked against its own request."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((rows, FEATURES)).astype("float32"),
        "s": rng.uniform(0.5, 2.0, size=(rows, 1)).astype("float32"),
    }


def build(path, batch: int) -> None:
    import tvm_autoglm

    tvm_autoglm.compile(rowwise_model(batch), opt_level=3).export(path)
