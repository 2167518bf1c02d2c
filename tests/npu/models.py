"""Tiny ONNX models for the npu-sim tests (built in memory, seconds to compile)."""

from __future__ import annotations

import numpy as np
import onnx
from _onnx_builders import make_model
from onnx import helper, numpy_helper


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def transformer_block(seq=8, hidden=32, heads=2, ffn=64, seed=0, activation="relu") -> onnx.ModelProto:
    """Attention (QKV dense, QK^T, softmax, AV, out dense) + FFN (ReLU, or GELU as the erf idiom) + residuals."""
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)  # noqa: E731
    d = hidden // heads
    inits = [
        _init("wq", w(hidden, hidden)), _init("bq", w(hidden)),
        _init("wk", w(hidden, hidden)), _init("bk", w(hidden)),
        _init("wv", w(hidden, hidden)), _init("bv", w(hidden)),
        _init("wo", w(hidden, hidden)), _init("bo", w(hidden)),
        _init("w1", w(hidden, ffn)), _init("b1", w(ffn)),
        _init("w2", w(ffn, hidden)), _init("b2", w(hidden)),
        _init("heads_shape", np.array([1, seq, heads, d], np.int64)),
        _init("merge_shape", np.array([1, seq, hidden], np.int64)),
        _init("scale", np.array(1.0 / np.sqrt(d), np.float32)),
        _init("sqrt2", np.array(np.sqrt(2.0), np.float32)),
        _init("one", np.array(1.0, np.float32)),
        _init("half", np.array(0.5, np.float32)),
    ]
    nodes = []
    for name in ("q", "k", "v"):
        nodes += [
            helper.make_node("MatMul", ["x", f"w{name}"], [f"{name}_mm"]),
            helper.make_node("Add", [f"{name}_mm", f"b{name}"], [f"{name}_lin"]),
            helper.make_node("Reshape", [f"{name}_lin", "heads_shape"], [f"{name}_h"]),
        ]
    nodes += [
        helper.make_node("Transpose", ["q_h"], ["q_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k_h"], ["k_t"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v_h"], ["v_t"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q_t", "k_t"], ["scores_raw"]),
        helper.make_node("Mul", ["scores_raw", "scale"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v_t"], ["ctx_h"]),
        helper.make_node("Transpose", ["ctx_h"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merge_shape"], ["ctx"]),
        helper.make_node("MatMul", ["ctx", "wo"], ["o_mm"]),
        helper.make_node("Add", ["o_mm", "bo"], ["o"]),
        helper.make_node("Add", ["o", "x"], ["res1"]),
        helper.make_node("MatMul", ["res1", "w1"], ["f1_mm"]),
        helper.make_node("Add", ["f1_mm", "b1"], ["f1"]),
        *(
            [helper.make_node("Relu", ["f1"], ["f1_act"])]
            if activation == "relu"
            else [
                helper.make_node("Div", ["f1", "sqrt2"], ["g_div"]),
                helper.make_node("Erf", ["g_div"], ["g_erf"]),
                helper.make_node("Add", ["g_erf", "one"], ["g_add"]),
                helper.make_node("Mul", ["f1", "g_add"], ["g_mul"]),
                helper.make_node("Mul", ["g_mul", "half"], ["f1_act"]),
            ]
        ),
        helper.make_node("MatMul", ["f1_act", "w2"], ["f2_mm"]),
        helper.make_node("Add", ["f2_mm", "b2"], ["f2"]),
        helper.make_node("Add", ["f2", "res1"], ["y"]),
    ]
    return make_model(nodes, {"x": [1, seq, hidden]}, {"y": [1, seq, hidden]}, inits, name="tiny_transformer")


def tiny_cnn(seed=0) -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool -> Flatten -> Gemm(+bias) -> Relu -> Gemm: convs stay on the host."""
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)  # noqa: E731
    inits = [
        _init("cw", w(8, 3, 3, 3)), _init("cb", w(8)),
        _init("g1", w(8 * 4 * 4, 40)), _init("gb1", w(40)),
        _init("g2", w(10, 40)), _init("gb2", w(10)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["cr"]),
        helper.make_node("MaxPool", ["cr"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "g1", "gb1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "g2", "gb2"], ["y"], transB=1),
    ]
    return make_model(nodes, {"x": [2, 3, 8, 8]}, {"y": [2, 10]}, inits, name="tiny_cnn")


def reference(model: onnx.ModelProto, inputs: dict) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs)))
