"""Hand-built ONNX models for the CUDA target tests: a one-layer bert-like encoder and a small CNN."""

from __future__ import annotations

import numpy as np
import onnx
from _onnx_builders import make_model
from onnx import helper, numpy_helper


def bert_layer(batch: int = 1, seq: int = 16, dim: int = 64, heads: int = 2, ffn: int = 128, seed: int = 0) -> onnx.ModelProto:
    """Self-attention (MatMul, Softmax) + LayerNormalization + erf-GELU feed-forward: the ops of a BERT layer."""
    rng = np.random.default_rng(seed)
    head = dim // heads
    inits = {}

    def w(name, *shape, scale=0.1):
        inits[name] = (rng.standard_normal(shape) * scale).astype("float32")
        return name

    nodes = []

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    inits["shape_heads"] = np.array([batch, seq, heads, head], dtype="int64")
    inits["shape_merge"] = np.array([batch, seq, dim], dtype="int64")
    inits["scale"] = np.array(1.0 / np.sqrt(head), dtype="float32")
    inits["sqrt2"] = np.array(np.sqrt(2.0), dtype="float32")
    inits["one"] = np.array(1.0, dtype="float32")
    inits["half"] = np.array(0.5, dtype="float32")

    def proj(x, name):
        return node("Add", [node("MatMul", [x, w(f"{name}_w", dim, dim)], f"{name}_mm"), w(f"{name}_b", dim)], name)

    def split_heads(x, name, perm):
        return node("Transpose", [node("Reshape", [x, "shape_heads"], f"{name}_r")], name, perm=perm)

    q = split_heads(proj("x", "q"), "qh", [0, 2, 1, 3])
    k = split_heads(proj("x", "k"), "kh", [0, 2, 3, 1])
    v = split_heads(proj("x", "v"), "vh", [0, 2, 1, 3])
    scores = node("Mul", [node("MatMul", [q, k], "qk"), "scale"], "scores")
    probs = node("Softmax", [scores], "probs", axis=-1)
    ctx = node("MatMul", [probs, v], "ctx")
    merged = node("Reshape", [node("Transpose", [ctx], "ctx_t", perm=[0, 2, 1, 3]), "shape_merge"], "ctx_m")
    attn = node("Add", [proj(merged, "o"), "x"], "attn_res")
    gamma1, beta1 = w("ln1_g", dim, scale=1.0), w("ln1_b", dim)
    h = node("LayerNormalization", [attn, gamma1, beta1], "ln1", axis=-1, epsilon=1e-5)
    up = node("Add", [node("MatMul", [h, w("ff1_w", dim, ffn)], "ff1_mm"), w("ff1_b", ffn)], "ff1")
    erf = node("Erf", [node("Div", [up, "sqrt2"], "gelu_div")], "gelu_erf")
    gelu = node("Mul", [node("Mul", [up, node("Add", [erf, "one"], "gelu_add")], "gelu_mul"), "half"], "gelu")
    down = node("Add", [node("MatMul", [gelu, w("ff2_w", ffn, dim)], "ff2_mm"), w("ff2_b", dim)], "ff2")
    res = node("Add", [down, h], "ffn_res")
    node("LayerNormalization", [res, w("ln2_g", dim, scale=1.0), w("ln2_b", dim)], "hidden", axis=-1, epsilon=1e-5)
    return make_model(nodes, {"x": [batch, seq, dim]}, {"hidden": [batch, seq, dim]},
                      [numpy_helper.from_array(v, k) for k, v in inits.items()], name="bert_layer", check=True)


def small_cnn(batch: int = 1, channels: int = 3, size: int = 16, width: int = 8, classes: int = 10, seed: int = 1) -> onnx.ModelProto:
    """Conv(+bias) -> BatchNormalization -> Relu -> MaxPool -> Conv -> BN -> Relu -> GlobalAveragePool -> Gemm."""
    rng = np.random.default_rng(seed)
    inits = {}
    nodes = []

    def w(name, *shape, scale=0.2, positive=False):
        value = rng.standard_normal(shape) * scale
        inits[name] = (np.abs(value) + 0.5 if positive else value).astype("float32")
        return name

    def block(x, cin, cout, name):
        conv = f"{name}_conv"
        nodes.append(helper.make_node("Conv", [x, w(f"{name}_w", cout, cin, 3, 3), w(f"{name}_b", cout)], [conv], name=conv, pads=[1, 1, 1, 1]))
        bn = f"{name}_bn"
        nodes.append(
            helper.make_node(
                "BatchNormalization",
                [conv, w(f"{name}_g", cout, positive=True), w(f"{name}_beta", cout), w(f"{name}_mean", cout), w(f"{name}_var", cout, positive=True)],
                [bn],
                name=bn,
                epsilon=1e-5,
            )
        )
        relu = f"{name}_relu"
        nodes.append(helper.make_node("Relu", [bn], [relu], name=relu))
        return relu

    h = block("image", channels, width, "b1")
    nodes.append(helper.make_node("MaxPool", [h], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    h = block("pool", width, 2 * width, "b2")
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat", axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", w("fc_w", classes, 2 * width), w("fc_b", classes)], ["logits"], name="fc", transB=1))
    return make_model(nodes, {"image": [batch, channels, size, size]}, {"logits": [batch, classes]},
                      [numpy_helper.from_array(v, k) for k, v in inits.items()], name="small_cnn", check=True)
