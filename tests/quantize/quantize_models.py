"""Hand-built ONNX models for the quantization tests (tiny: they compile in seconds)."""

from __future__ import annotations

import numpy as np
import onnx
from _onnx_builders import make_model
from onnx import helper, numpy_helper


def deep_mlp(batch: int = 4, width: int = 32, layers: int = 4, outlier_layer: int = 1, seed: int = 3) -> onnx.ModelProto:
    """x -> [MatMul + Add -> Tanh] * layers -> MatMul: one layer sees an activation outlier channel.

    The outlier (one input channel scaled x60 before ``outlier_layer``'s MatMul)
    makes per-tensor int8 activations crush the other channels there, so the
    layers differ in sensitivity and an accuracy budget has something to choose.
    """
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    prev = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype("float32")
        b = (0.1 * rng.standard_normal(width)).astype("float32")
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        if i == outlier_layer:
            gain = np.ones(width, "float32")
            gain[0] = 60.0
            w[0] /= 60.0  # same function, scaled input channel: only the int8 activation grid changes
            inits[-2] = numpy_helper.from_array(w, f"w{i}")
            inits.append(numpy_helper.from_array(gain, f"g{i}"))
            nodes.append(helper.make_node("Mul", [prev, f"g{i}"], [f"s{i}"]))
            prev = f"s{i}"
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
            helper.make_node("Tanh", [f"a{i}"], [f"h{i}"]),
        ]
        prev = f"h{i}"
    head = (rng.standard_normal((width, 8)) / np.sqrt(width)).astype("float32")
    inits.append(numpy_helper.from_array(head, "head"))
    nodes.append(helper.make_node("MatMul", [prev, "head"], ["y"]))
    return make_model(nodes, {"x": [batch, width]}, {"y": [batch, 8]}, inits, name="deep_mlp", check=True)


def one_minus_cos(ref: dict, out: dict) -> float:
    """The budget's error measure: 1 - mean cosine over outputs (flattened)."""
    from tvm_autoglm.quantize.sensitivity import cosine

    return float(1.0 - np.mean([cosine(ref[k], out[k]) for k in ref]))
