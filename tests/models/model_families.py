"""Tiny models of the CNN families that broke O1-O3 (issue #20), built with onnx.helper and seeded weights.

Each builder returns ``(model, inputs)``. They keep the structure that mattered (strides (2,1)/(1,2),
1x3 kernels, depthwise 3x3/5x5, HardSigmoid, ConvTranspose, Resize, multi-scale Concat, 1-D convs,
old opsets with weights as graph inputs, LRN, a 5-D channel shuffle, Dropout) at toy sizes.
"""

from __future__ import annotations

import numpy as np
import onnx
from _onnx_builders import make_model, value_info
from onnx import helper, numpy_helper


class GraphBuilder:
    """Appends nodes and seeded float32 initializers; names values ``v0, v1, ...``."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {}
        self.count = 0

    def _name(self, prefix: str = "v") -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value, dtype="float32") -> str:
        name = self._name("c")
        self.inits[name] = np.asarray(value, dtype=dtype)
        return name

    def weight(self, *shape, scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = scale if scale is not None else 1.0 / np.sqrt(fan_in)
        return self.const(self.rng.standard_normal(shape) * scale)

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs):
        names = [self._name() for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def conv(self, x: str, cin: int, cout: int, kernel, strides=None, pads=None, group: int = 1, dilations=None, bias=True) -> str:
        kernel = list(kernel)
        attrs = {"kernel_shape": kernel, "group": group}
        if strides:
            attrs["strides"] = list(strides)
        if pads:
            attrs["pads"] = list(pads)
        if dilations:
            attrs["dilations"] = list(dilations)
        args = [x, self.weight(cout, cin // group, *kernel)]
        if bias:
            args.append(self.const(self.rng.standard_normal(cout) * 0.1))
        return self.op("Conv", *args, **attrs)

    def batch_norm(self, x: str, channels: int) -> str:
        rng = self.rng
        return self.op("BatchNormalization", x, self.const(rng.uniform(0.5, 1.5, channels)), self.const(rng.standard_normal(channels) * 0.1),
                       self.const(rng.standard_normal(channels) * 0.1), self.const(rng.uniform(0.5, 1.5, channels)))

    def hard_swish(self, x: str) -> str:
        return self.op("Mul", x, self.op("HardSigmoid", x, alpha=1.0 / 6, beta=0.5))

    def model(self, inputs: dict[str, list[int]], output: str, opset: int = 17, weights_as_inputs: bool = False) -> onnx.ModelProto:
        graph_inputs = [value_info(n, s) for n, s in inputs.items()]
        if weights_as_inputs:  # opset <= 8 exporters listed every initializer as a graph input too
            graph_inputs += [value_info(n, v.shape, helper.np_dtype_to_tensor_dtype(v.dtype)) for n, v in self.inits.items()]
        return make_model(self.nodes, graph_inputs, {output: None}, [numpy_helper.from_array(v, n) for n, v in self.inits.items()],
                          opset=opset, name="family", ir_version=3 if opset <= 8 else (4 if opset <= 9 else 8))


def _input(rng, shape) -> np.ndarray:
    return rng.standard_normal(shape).astype("float32")


def crnn_recognizer(seed: int = 0):
    """CRNN/SVTR-style text recognizer: (2,1)/(1,2) strides, 1x3 kernels, depthwise 3x3/5x5, HardSigmoid
    (hard-swish, SE gate), a pooled-to-one-row sequence and a one-head attention neck, per-step Softmax."""
    g = GraphBuilder(seed)
    x = g.conv("image", 3, 16, (3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    x = g.hard_swish(g.batch_norm(x, 16))
    x = g.conv(x, 16, 16, (3, 3), strides=(2, 1), pads=(1, 1, 1, 1), group=16)  # depthwise 3x3, stride (2,1)
    x = g.hard_swish(x)
    gate = g.op("GlobalAveragePool", x)  # squeeze-excite with a HardSigmoid gate
    gate = g.op("Relu", g.conv(gate, 16, 4, (1, 1)))
    gate = g.op("HardSigmoid", g.conv(gate, 4, 16, (1, 1)), alpha=0.2, beta=0.5)
    x = g.op("Mul", x, gate)
    x = g.op("Relu", g.batch_norm(g.conv(x, 16, 32, (1, 1), bias=False), 32))  # 1x1 expand (packs 16 and 32 lanes)
    x = g.conv(x, 32, 32, (5, 5), strides=(1, 2), pads=(2, 2, 2, 2), group=32)  # depthwise 5x5, stride (1,2)
    x = g.hard_swish(x)
    x = g.op("Relu", g.conv(x, 32, 32, (1, 3), pads=(0, 1, 0, 1)))  # 1x3
    x = g.conv(x, 32, 32, (3, 3), strides=(2, 1), pads=(1, 0, 0, 1))  # asymmetric pads, stride (2,1)
    x = g.op("MaxPool", x, kernel_shape=[2, 1], strides=[2, 1])  # height 4 -> 1 (after the (2,1) conv: 2 -> 1)
    seq = g.op("Transpose", g.op("Squeeze", x, g.const([2], "int64")), perm=[0, 2, 1])  # [N, W, C]
    q, k, v = (g.op("MatMul", seq, g.weight(32, 32)) for _ in range(3))
    scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 2, 1])), g.const(1 / np.sqrt(32)))
    att = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
    seq = g.op("LayerNormalization", g.op("Add", seq, att), g.const(np.ones(32)), g.const(np.zeros(32)), axis=-1)
    logits = g.op("Add", g.op("MatMul", seq, g.weight(32, 37)), g.const(g.rng.standard_normal(37) * 0.1))
    out = g.op("Softmax", logits, axis=-1)
    rng = np.random.default_rng(seed + 1)
    return g.model({"image": [1, 3, 16, 48]}, out), {"image": _input(rng, (1, 3, 16, 48))}


def dbnet_detector(seed: int = 0):
    """DBNet-style text detector: strided backbone, FPN with Resize-upsampled top-down Adds, a multi-scale
    Concat, and a ConvTranspose head ending in a Sigmoid probability map."""
    g = GraphBuilder(seed)
    c1 = g.op("Relu", g.batch_norm(g.conv("image", 3, 8, (3, 3), strides=(2, 2), pads=(1, 1, 1, 1)), 8))  # 16x16
    c2 = g.op("Relu", g.conv(c1, 8, 16, (3, 3), strides=(2, 2), pads=(1, 1, 1, 1)))  # 8x8
    c3 = g.op("Relu", g.conv(c2, 16, 32, (3, 3), strides=(2, 2), pads=(1, 1, 1, 1)))  # 4x4
    lat1, lat2, lat3 = g.conv(c1, 8, 16, (1, 1)), g.conv(c2, 16, 16, (1, 1)), g.conv(c3, 32, 16, (1, 1))

    def up(x, factor, mode="nearest"):
        return g.op("Resize", x, "", g.const([1, 1, factor, factor]), mode=mode)

    p2 = g.op("Add", lat2, up(lat3, 2))
    p1 = g.op("Add", lat1, up(p2, 2))
    fused = g.op("Concat", p1, up(p2, 2, "linear"), up(lat3, 4), axis=1)  # 48 channels at 16x16
    h = g.op("Relu", g.batch_norm(g.conv(fused, 48, 16, (3, 3), pads=(1, 1, 1, 1), bias=False), 16))
    h = g.op("ConvTranspose", h, g.weight(16, 8, 2, 2), g.const(np.zeros(8)), strides=[2, 2])  # 32x32
    h = g.op("Relu", g.batch_norm(h, 8))
    h = g.op("ConvTranspose", h, g.weight(8, 1, 2, 2), strides=[2, 2])  # 64x64
    out = g.op("Sigmoid", h)
    rng = np.random.default_rng(seed + 1)
    return g.model({"image": [1, 3, 32, 32]}, out), {"image": _input(rng, (1, 3, 32, 32))}


def conv1d_classifier(seed: int = 0):
    """A 1-D conv classifier over [N, C, L]: asymmetric pads, dilation, groups, depthwise, BatchNorm, pooling."""
    g = GraphBuilder(seed)
    x = g.op("Relu", g.batch_norm(g.conv("signal", 8, 16, (3,), pads=(1, 2)), 16))
    x = g.op("Relu", g.conv(x, 16, 16, (5,), dilations=(2,), pads=(4, 4), group=2))
    x = g.conv(x, 16, 16, (3,), strides=(2,), pads=(1, 1), group=16)
    x = g.op("MaxPool", x, kernel_shape=[2], strides=[2])
    x = g.op("Flatten", g.op("GlobalAveragePool", x))
    out = g.op("Gemm", x, g.weight(5, 16), g.const(np.zeros(5)), transB=1)
    rng = np.random.default_rng(seed + 1)
    return g.model({"signal": [2, 8, 21]}, out), {"signal": _input(rng, (2, 8, 21))}


def old_opset_cnn(seed: int = 0, opset: int = 8):
    """A model-zoo-era CNN at opset 8/9: weights also listed as graph inputs, LRN, a channel shuffle
    (5-D Reshape + Transpose), Dropout, multi-input Max/Sum/Mean, MaxPool, Gemm and Softmax."""
    g = GraphBuilder(seed)
    x = g.op("Relu", g.conv("data", 3, 16, (3, 3), strides=(2, 2), pads=(1, 1, 1, 1)))
    x = g.op("LRN", x, size=5, alpha=1e-4, beta=0.75, bias=1.0)
    x = g.op("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 4x4
    a = g.op("Relu", g.conv(x, 16, 16, (1, 1), group=2))
    shuffled = g.op("Reshape", a, g.const([1, 2, 8, 4, 4], "int64"))
    shuffled = g.op("Reshape", g.op("Transpose", shuffled, perm=[0, 2, 1, 3, 4]), g.const([1, 16, 4, 4], "int64"))
    b = g.conv(shuffled, 16, 16, (3, 3), pads=(1, 1, 1, 1), group=16)
    c = g.op("Relu", g.conv(b, 16, 16, (1, 1)))
    m = g.op("Max", a, c, b)
    s = g.op("Sum", m, c, a)
    x = g.op("Mean", s, m, b)
    x = g.op("Dropout", x, ratio=0.5) if opset < 10 else g.op("Dropout", x)
    x = g.op("Flatten", g.op("GlobalAveragePool", x))
    out = g.op("Softmax", g.op("Gemm", x, g.weight(10, 16), g.const(np.zeros(10)), transB=1))
    rng = np.random.default_rng(seed + 1)
    return g.model({"data": [1, 3, 16, 16]}, out, opset=opset, weights_as_inputs=True), {"data": _input(rng, (1, 3, 16, 16))}


FAMILIES = {"crnn": crnn_recognizer, "dbnet": dbnet_detector, "conv1d": conv1d_classifier, "old_opset": old_opset_cnn}
