"""Random small ONNX graphs, one generator per op family, for differential testing.

Each case is a pure function of ``(seed, index)``: the family is chosen by the
index (round robin, so every family gets its share of a short run) and every
other choice comes from a ``random.Random`` seeded by both numbers, so a case
seen failing in a campaign is rebuilt exactly by ``make_case(seed, index)``.
Every generator returns a one-line description that says the shapes and
attributes, so a report line is enough to write the regression test.

The graphs only use what onnxruntime implements (it is the reference); they are
opset 17, float32, with static shapes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


@dataclass
class Case:
    """One generated model with its inputs."""

    seed: int
    index: int
    family: str
    description: str
    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return f"{self.family}-s{self.seed}-i{self.index}"


class _Graph:
    """A tiny graph builder: inputs, constants and nodes with generated names."""

    def __init__(self, rng: random.Random, nprng: np.random.Generator):
        self.rng, self.nprng = rng, nprng
        self.nodes, self.inits, self.inputs, self.feeds = [], [], [], {}
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def input(self, shape, values=None, name=None) -> str:
        name = name or self._name("x")
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.feeds[name] = np.asarray(values if values is not None else self.nprng.standard_normal(shape), dtype=np.float32)  # 0-d stays an array
        return name

    def const(self, value, dtype=np.float32, prefix="c") -> str:
        name = self._name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weight(self, shape, scale=None) -> str:
        fan_in = max(1, int(np.prod(shape[1:])) if len(shape) > 1 else 1)
        scale = scale if scale is not None else 1.0 / math.sqrt(fan_in)
        return self.const(self.nprng.standard_normal(shape) * scale, prefix="w")

    def op(self, op_type: str, inputs, **attrs) -> str:
        out = self._name(op_type.lower() + "_")
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def model(self, output: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "difftest", self.inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        return _with_output_shape(model, output)


def _with_output_shape(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """Give the output its inferred shape (the support check wants static output specs)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.name == output and value.type.tensor_type.HasField("shape"):
            model.graph.output[0].CopyFrom(value)
    return model


def _fmt(values) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


# ----------------------------------------------------------------------------- convolutions

def _conv_geometry(rng, dims, transpose=False):
    kernel = [rng.choice([1, 2, 3] if dims > 1 else [1, 2, 3, 5]) for _ in range(dims)]
    strides = [rng.choice([1, 1, 2, 3]) for _ in range(dims)]
    dilations = [rng.choice([1, 1, 1, 2]) for _ in range(dims)]
    return kernel, strides, dilations


def _groups(rng):
    """(groups, in channels per group, out channels per group); a third of the cases depthwise."""
    kind = rng.random()
    if kind < 0.33:
        groups = rng.choice([2, 3, 4, 8])
        return groups, 1, rng.choice([1, 1, 2])
    if kind < 0.55:
        return rng.choice([2, 3]), rng.choice([1, 2, 3]), rng.choice([1, 2])
    return 1, rng.choice([1, 2, 3, 4, 5, 8]), rng.choice([1, 2, 4, 7, 8])


def gen_conv(g: _Graph, rng: random.Random) -> str:
    dims = rng.choice([1, 2, 2, 2, 3])
    kernel, strides, dilations = _conv_geometry(rng, dims)
    groups, cin_g, cout_g = _groups(rng)
    batch = rng.choice([1, 1, 2])
    auto_pad = rng.choice(["NOTSET"] * 5 + ["SAME_UPPER", "SAME_LOWER", "VALID"])
    if auto_pad.startswith("SAME"):
        dilations = [1] * dims  # onnxruntime: "Dilation not supported for AutoPadType::SAME_UPPER or SAME_LOWER"
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    pads = [rng.choice([0, 0, 1, 2]) for _ in range(2 * dims)] if auto_pad == "NOTSET" else [0] * (2 * dims)
    pads = [min(p, e - 1) if e > 1 else 0 for p, e in zip(pads, eff + eff)]  # a pad >= the kernel reads only padding
    spatial = []
    for axis in range(dims):
        low = max(1, eff[axis] - pads[axis] - pads[axis + dims]) if auto_pad != "SAME_UPPER" and auto_pad != "SAME_LOWER" else 1
        spatial.append(rng.randint(low, max(low, 12 if dims < 3 else 6)))
    x_shape = [batch, groups * cin_g] + spatial
    w_shape = [groups * cout_g, cin_g] + kernel
    x = g.input(x_shape)
    attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dilations, "group": groups}
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto_pad
    inputs = [x, g.weight(w_shape)]
    bias = rng.random() < 0.6
    if bias:
        inputs.append(g.const(g.nprng.standard_normal(w_shape[0]) * 0.5))
    out = g.op("Conv", inputs, **attrs)
    post = rng.choice(["", "", "Relu", "Add", "Clip"])
    if post == "Relu":
        out = g.op("Relu", [out])
    elif post == "Add":
        out = g.op("Add", [out, g.input([1, w_shape[0]] + [1] * dims)])
    elif post == "Clip":
        out = g.op("Clip", [out, g.const(0.0), g.const(6.0)])
    pad_text = f"pads={_fmt(pads)}" if auto_pad == "NOTSET" else f"auto_pad={auto_pad}"
    return (f"Conv{dims}d(x{_fmt(x_shape)}, W{_fmt(w_shape)}, group={groups}, {pad_text}, strides={_fmt(strides)}, "
            f"dilations={_fmt(dilations)}{', bias' if bias else ''}){' + ' + post if post else ''}")


def gen_conv_transpose(g: _Graph, rng: random.Random) -> str:
    dims = rng.choice([1, 2, 2, 3])
    kernel, strides, dilations = _conv_geometry(rng, dims)
    groups, cin_g, cout_g = (1, rng.choice([1, 2, 3, 4]), rng.choice([1, 2, 3, 5])) if rng.random() < 0.7 else (rng.choice([2, 4]), 1, rng.choice([1, 2]))
    batch = rng.choice([1, 2])
    pads = [rng.randint(0, k - 1) for k in kernel] * 2
    pads = [rng.randint(0, p) for p in pads]
    # onnxruntime wants output_padding < stride (the spec allows < max(stride, dilation))
    output_padding = [rng.randint(0, s - 1) if rng.random() < 0.4 else 0 for s in strides]
    spatial = [rng.randint(1, 7 if dims < 3 else 4) for _ in range(dims)]
    x_shape = [batch, groups * cin_g] + spatial
    w_shape = [groups * cin_g, cout_g] + kernel
    for axis in range(dims):  # output size must stay >= 1
        out_size = strides[axis] * (spatial[axis] - 1) + output_padding[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - pads[axis] - pads[axis + dims]
        if out_size < 1:
            pads[axis] = pads[axis + dims] = 0
    x = g.input(x_shape)
    inputs = [x, g.weight(w_shape)]
    bias = rng.random() < 0.5
    if bias:
        inputs.append(g.const(g.nprng.standard_normal(groups * cout_g) * 0.5))
    g.op("ConvTranspose", inputs, kernel_shape=kernel, strides=strides, dilations=dilations, group=groups, pads=pads, output_padding=output_padding)
    return (f"ConvTranspose{dims}d(x{_fmt(x_shape)}, W{_fmt(w_shape)}, group={groups}, pads={_fmt(pads)}, strides={_fmt(strides)}, "
            f"dilations={_fmt(dilations)}, output_padding={_fmt(output_padding)}{', bias' if bias else ''})")


# ----------------------------------------------------------------------------- matmul / gemm

def _broadcast_batch(rng, batch):
    """A batch shape broadcastable to ``batch``: a suffix of it with some dims set to 1."""
    keep = rng.randint(0, len(batch))
    suffix = batch[len(batch) - keep:]
    return [1 if rng.random() < 0.3 else d for d in suffix]


def gen_matmul(g: _Graph, rng: random.Random) -> str:
    if rng.random() < 0.35:
        return _gemm(g, rng)
    batch = [rng.randint(1, 4) for _ in range(rng.choice([0, 1, 1, 2]))]
    m, k, n = rng.randint(1, 17), rng.randint(1, 33), rng.randint(1, 19)
    a_shape = _broadcast_batch(rng, batch) + [m, k]
    b_shape = _broadcast_batch(rng, batch) + [k, n]
    if rng.random() < 0.1:
        a_shape = [k]
    elif rng.random() < 0.1:
        b_shape = [k]
    a = g.input(a_shape)
    const_b = rng.random() < 0.5
    b = g.weight(b_shape, scale=1 / math.sqrt(k)) if const_b else g.input(b_shape)
    out = g.op("MatMul", [a, b])
    epilogue = rng.choice(["", "", "bias", "bias+relu"])
    if epilogue and len(b_shape) >= 1:
        out = g.op("Add", [out, g.const(g.nprng.standard_normal(b_shape[-1] if len(b_shape) > 1 else 1))])
        if epilogue == "bias+relu":
            out = g.op("Relu", [out])
    return f"MatMul(A{_fmt(a_shape)}, {'const ' if const_b else ''}B{_fmt(b_shape)}){' + ' + epilogue if epilogue else ''}"


def _gemm(g: _Graph, rng: random.Random) -> str:
    m, k, n = rng.randint(1, 17), rng.randint(1, 33), rng.randint(1, 19)
    trans_a, trans_b = rng.randint(0, 1), rng.randint(0, 1)
    alpha = rng.choice([1.0, 1.0, 0.5, -1.5])
    beta = rng.choice([1.0, 1.0, 0.25, 2.0])
    a_shape = [k, m] if trans_a else [m, k]
    b_shape = [n, k] if trans_b else [k, n]
    a = g.input(a_shape)
    const_b = rng.random() < 0.6
    b = g.weight(b_shape, scale=1 / math.sqrt(k)) if const_b else g.input(b_shape)
    c_kind = rng.choice(["none", "scalar", "[N]", "[1,N]", "[M,1]", "[M,N]"])
    c_shape = {"none": None, "scalar": [], "[N]": [n], "[1,N]": [1, n], "[M,1]": [m, 1], "[M,N]": [m, n]}[c_kind]
    inputs = [a, b]
    if c_shape is not None:
        inputs.append(g.const(g.nprng.standard_normal(c_shape)))
    g.op("Gemm", inputs, transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    return f"Gemm(A{_fmt(a_shape)}, {'const ' if const_b else ''}B{_fmt(b_shape)}, C={c_kind}, transA={trans_a}, transB={trans_b}, alpha={alpha}, beta={beta})"


# ----------------------------------------------------------------------------- pools

def _last_window_in_padding(size, eff, stride, low, high) -> bool:
    count = math.ceil((size + low + high - eff) / stride) + 1
    return (count - 1) * stride >= size + low


def gen_pool(g: _Graph, rng: random.Random) -> str:
    dims = rng.choice([1, 2, 2, 3])
    kind = rng.choice(["MaxPool", "MaxPool", "AveragePool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"])
    channels, batch = rng.randint(1, 6), rng.choice([1, 2])
    if kind.startswith("Global"):
        shape = [batch, channels] + [rng.randint(1, 9) for _ in range(dims)]
        g.op(kind, [g.input(shape)])
        return f"{kind}(x{_fmt(shape)})"
    kernel = [rng.randint(1, 3) for _ in range(dims)]
    strides = [rng.choice([1, 2, 2, 3]) for _ in range(dims)]
    dilations = [rng.choice([1, 1, 2]) for _ in range(dims)] if kind == "MaxPool" else [1] * dims
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    pads = [rng.randint(0, k - 1) if rng.random() < 0.5 else 0 for k in kernel * 2]
    ceil_mode = rng.choice([0, 0, 1])
    shape = [batch, channels] + [rng.randint(e, e + 8) for e in eff]
    if ceil_mode and any(_last_window_in_padding(n, k, s, lo, hi) for n, k, s, lo, hi in zip(shape[2:], eff, strides, pads[:dims], pads[dims:])):
        ceil_mode = 0  # onnx shape inference and onnxruntime disagree on a last window that starts in the right padding
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads, "ceil_mode": ceil_mode}
    extra = ""
    if kind == "MaxPool":
        attrs["dilations"] = dilations
        extra = f", dilations={_fmt(dilations)}"
    else:
        attrs["count_include_pad"] = rng.randint(0, 1)
        extra = f", count_include_pad={attrs['count_include_pad']}"
    g.op(kind, [g.input(shape)], **attrs)
    return f"{kind}{dims}d(x{_fmt(shape)}, kernel={_fmt(kernel)}, strides={_fmt(strides)}, pads={_fmt(pads)}, ceil_mode={ceil_mode}{extra})"


# ----------------------------------------------------------------------------- resize

def gen_resize(g: _Graph, rng: random.Random) -> str:
    mode = rng.choice(["nearest", "linear", "cubic"])
    rank = 4 if mode == "cubic" else rng.choice([4, 4, 4, 3, 5] if mode == "nearest" else [4, 4, 5])
    shape = [rng.choice([1, 2]), rng.randint(1, 4)] + [rng.randint(1, 7 if rank < 5 else 4) for _ in range(rank - 2)]
    coord = rng.choice(["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"])
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    extra = ""
    if mode == "nearest":
        attrs["nearest_mode"] = rng.choice(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
        extra = f", nearest_mode={attrs['nearest_mode']}"
    if mode == "cubic":
        attrs["cubic_coeff_a"] = rng.choice([-0.75, -0.5])
        attrs["exclude_outside"] = rng.randint(0, 1)
        extra = f", cubic_coeff_a={attrs['cubic_coeff_a']}, exclude_outside={attrs['exclude_outside']}"
    x = g.input(shape)
    if rng.random() < 0.5:
        scales = [1.0, 1.0] + [rng.choice([0.5, 1.5, 2.0, 3.0, 0.75]) for _ in range(rank - 2)]
        scales = [s if int(d * s) >= 1 else 2.0 for d, s in zip(shape, scales)]
        g.op("Resize", [x, "", g.const(scales)], **attrs)
        how = f"scales={_fmt(scales)}"
    else:
        sizes = shape[:2] + [rng.randint(1, 2 * d + 2) for d in shape[2:]]
        g.op("Resize", [x, "", "", g.const(sizes, dtype=np.int64)], **attrs)
        how = f"sizes={_fmt(sizes)}"
    return f"Resize(x{_fmt(shape)}, {how}, mode={mode}, coordinate_transformation_mode={coord}{extra})"


# ----------------------------------------------------------------------------- reductions

def gen_reduce(g: _Graph, rng: random.Random) -> str:
    op = rng.choice(["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                     "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "Softmax", "LogSoftmax"])
    rank = rng.randint(1, 4)
    shape = [rng.randint(1, 9) for _ in range(rank)]
    values = g.nprng.standard_normal(shape)
    if op == "ReduceProd":
        values = 1.0 + 0.2 * g.nprng.uniform(-1, 1, shape)  # products of normals under/overflow
    x = g.input(shape, values=values)
    if op in ("ArgMax", "Softmax", "LogSoftmax"):
        axis = rng.randint(-rank, rank - 1)
        if op == "ArgMax":
            keepdims = rng.randint(0, 1)
            out = g.op("ArgMax", [x], axis=axis, keepdims=keepdims)
            g.op("Cast", [out], to=TensorProto.FLOAT)
            return f"ArgMax(x{_fmt(shape)}, axis={axis}, keepdims={keepdims}) -> float"
        g.op(op, [x], axis=axis)
        return f"{op}(x{_fmt(shape)}, axis={axis})"
    keepdims = rng.randint(0, 1)
    all_axes = rng.random() < 0.15
    axes = sorted(rng.sample(range(rank), rng.randint(1, rank)))
    axes = [a - rank if rng.random() < 0.3 else a for a in axes]
    if op == "ReduceSum":
        inputs = [x] if all_axes else [x, g.const(axes, dtype=np.int64)]
        g.op(op, inputs, keepdims=keepdims)
    elif all_axes:
        g.op(op, [x], keepdims=keepdims)
    else:
        g.op(op, [x], axes=axes, keepdims=keepdims)
    return f"{op}(x{_fmt(shape)}, axes={'all' if all_axes else _fmt(axes)}, keepdims={keepdims})"


# ----------------------------------------------------------------------------- idioms torch exports

def gen_layernorm(g: _Graph, rng: random.Random) -> str:
    rank = rng.randint(2, 4)
    shape = [rng.randint(1, 5) for _ in range(rank - 1)] + [rng.choice([1, 3, 8, 16, 33, 64])]
    eps = rng.choice([1e-5, 1e-12, 1e-6])
    x = g.input(shape, values=g.nprng.standard_normal(shape) * 2 + 0.5)
    style = rng.choice(["decomposed", "decomposed", "LayerNormalization", "rms"])
    last = rng.random() < 0.8
    axis = -1 if last else rng.randint(0, rank - 2)
    width = shape[axis]
    affine = rng.random() < 0.8
    if style == "LayerNormalization":
        axis = -1 if last else rng.randint(1, rank - 1)
        norm_shape = shape[axis:]
        g.op("LayerNormalization", [x, g.const(g.nprng.standard_normal(norm_shape)), g.const(g.nprng.standard_normal(norm_shape))], axis=axis, epsilon=eps)
        return f"LayerNormalization(x{_fmt(shape)}, axis={axis}, epsilon={eps})"
    if style == "rms":
        sq = g.op("Pow", [x, g.const(2.0)]) if rng.random() < 0.5 else g.op("Mul", [x, x])
        mean = g.op("ReduceMean", [sq], axes=[axis], keepdims=1)
        root = g.op("Sqrt", [g.op("Add", [mean, g.const(eps)])])
        out = g.op("Mul", [x, g.op("Reciprocal", [root])]) if rng.random() < 0.5 else g.op("Div", [x, root])
    else:
        mean = g.op("ReduceMean", [x], axes=[axis], keepdims=1)
        centered = g.op("Sub", [x, mean])
        var = g.op("ReduceMean", [g.op("Pow", [centered, g.const(2.0)])], axes=[axis], keepdims=1)
        out = g.op("Div", [centered, g.op("Sqrt", [g.op("Add", [var, g.const(eps)])])])
    if affine:
        vec = [width] if axis == -1 else [width] + [1] * (rank - 1 - axis)
        out = g.op("Add", [g.op("Mul", [out, g.const(g.nprng.standard_normal(vec))]), g.const(g.nprng.standard_normal(vec))])
    return f"{style} norm (x{_fmt(shape)}, axis={axis}, eps={eps}{', affine' if affine else ''})"


def gen_gelu(g: _Graph, rng: random.Random) -> str:
    rows, k, n = rng.randint(1, 9), rng.choice([4, 8, 16, 17]), rng.choice([3, 8, 16, 32, 40])
    batch = [rng.randint(1, 3)] if rng.random() < 0.5 else []
    x = g.input(batch + [rows, k])
    h = g.op("Add", [g.op("MatMul", [x, g.weight([k, n], scale=2 / math.sqrt(k))]), g.const(g.nprng.standard_normal(n))])
    form = rng.choice(["erf-a", "erf-b", "erf-c", "tanh-pow", "tanh-mul", "Sigmoid-swish"])
    if form == "erf-a":  # x * 0.5 * (1 + erf(x / sqrt2))
        out = g.op("Mul", [g.op("Mul", [h, g.const(0.5)]), g.op("Add", [g.const(1.0), g.op("Erf", [g.op("Div", [h, g.const(math.sqrt(2))])])])])
    elif form == "erf-b":  # x * (0.5 * (erf(x * 1/sqrt2) + 1))
        out = g.op("Mul", [h, g.op("Mul", [g.const(0.5), g.op("Add", [g.op("Erf", [g.op("Mul", [h, g.const(1 / math.sqrt(2))])]), g.const(1.0)])])])
    elif form == "erf-c":  # (x * (1 + erf(x / sqrt2))) * 0.5
        out = g.op("Mul", [g.op("Mul", [h, g.op("Add", [g.op("Erf", [g.op("Div", [h, g.const(math.sqrt(2))])]), g.const(1.0)])]), g.const(0.5)])
    elif form.startswith("tanh"):
        cube = g.op("Pow", [h, g.const(3.0)]) if form == "tanh-pow" else g.op("Mul", [g.op("Mul", [h, h]), h])
        inner = g.op("Mul", [g.const(math.sqrt(2 / math.pi)), g.op("Add", [h, g.op("Mul", [g.const(0.044715), cube])])])
        out = g.op("Mul", [g.op("Mul", [g.const(0.5), h]), g.op("Add", [g.const(1.0), g.op("Tanh", [inner])])])
    else:
        out = g.op("Mul", [h, g.op("Sigmoid", [h])])
    if rng.random() < 0.5:
        out = g.op("MatMul", [out, g.weight([n, k])])
    return f"GELU[{form}](MatMul(x{_fmt(batch + [rows, k])}, W[{k},{n}]) + b){' -> MatMul' if g.nodes[-1].op_type == 'MatMul' else ''}"


def gen_attention(g: _Graph, rng: random.Random) -> str:
    batch, seq, heads = rng.randint(1, 2), rng.choice([1, 3, 5, 8, 16]), rng.choice([1, 2, 4])
    head = rng.choice([4, 8, 16])
    dim = heads * head
    x = g.input([batch, seq, dim])

    def project(perm):
        y = g.op("Add", [g.op("MatMul", [x, g.weight([dim, dim])]), g.const(g.nprng.standard_normal(dim) * 0.1)])
        y = g.op("Reshape", [y, g.const([batch, seq, heads, head], dtype=np.int64)])
        return g.op("Transpose", [y], perm=perm)

    q, kt, v = project([0, 2, 1, 3]), project([0, 2, 3, 1]), project([0, 2, 1, 3])
    scores = g.op("MatMul", [q, kt])
    scale_kind = rng.choice(["Div", "Mul"])
    scores = g.op("Div", [scores, g.const(math.sqrt(head))]) if scale_kind == "Div" else g.op("Mul", [scores, g.const(1 / math.sqrt(head))])
    mask = rng.choice(["none", "additive", "causal"])
    if mask == "additive":
        keep = g.nprng.random((batch, 1, 1, seq)) < 0.8
        keep[..., 0] = True
        scores = g.op("Add", [scores, g.input([batch, 1, 1, seq], values=np.where(keep, 0.0, -10000.0))])
    elif mask == "causal":
        causal = np.tril(np.ones((seq, seq), dtype=bool)).reshape(1, 1, seq, seq)
        scores = g.op("Where", [g.const(causal, dtype=bool), scores, g.const(np.finfo(np.float32).min)])
    probs = g.op("Softmax", [scores], axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    out = g.op("Reshape", [ctx, g.const([batch, seq, dim], dtype=np.int64)])
    if rng.random() < 0.5:
        out = g.op("MatMul", [out, g.weight([dim, dim])])
    return f"attention(x[{batch},{seq},{dim}], heads={heads}, head_dim={head}, scale={scale_kind}, mask={mask})"


# ----------------------------------------------------------------------------- elementwise chains

_UNARY = ("Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp", "Erf", "Sqrt", "Log", "LeakyRelu", "Clip", "Floor", "Softplus", "HardSigmoid")
_BINARY = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Pow")


def gen_elementwise(g: _Graph, rng: random.Random) -> str:
    rank = rng.randint(1, 4)
    shape = [rng.randint(1, 9) for _ in range(rank)]
    out = g.input(shape)
    steps = []
    for _ in range(rng.randint(2, 5)):
        if rng.random() < 0.5:
            op = rng.choice(_UNARY)
            if op in ("Sqrt", "Log"):
                out = g.op(op, [g.op("Add", [g.op("Abs", [out]), g.const(0.5)])])
                steps.append(f"{op}(|.|+0.5)")
            elif op == "Exp":
                out = g.op("Exp", [g.op("Tanh", [out])])
                steps.append("Exp(Tanh)")
            elif op == "LeakyRelu":
                out = g.op(op, [out], alpha=0.1)
                steps.append(op)
            elif op == "Clip":
                out = g.op(op, [out, g.const(-0.5), g.const(0.7)])
                steps.append("Clip(-0.5,0.7)")
            else:
                out = g.op(op, [out])
                steps.append(op)
            continue
        op = rng.choice(_BINARY)
        other_rank = rng.randint(0, rank)
        other_shape = [1 if rng.random() < 0.4 else d for d in shape[rank - other_rank:]]
        if rng.random() < 0.15 and rank < 4:  # the other operand has more dims: the output grows
            other_shape = [rng.randint(1, 3)] + [1 if rng.random() < 0.4 else d for d in shape]
            shape = [other_shape[0]] + shape
            rank += 1
        is_const = rng.random() < 0.5
        if op == "Pow":
            exponent = rng.choice([2.0, 3.0, 0.5])
            base = g.op("Add", [g.op("Abs", [out]), g.const(0.1)]) if exponent == 0.5 else out
            out = g.op("Pow", [base, g.const(exponent)])
            steps.append(f"Pow({exponent:g})")
            continue
        values = g.nprng.standard_normal(other_shape)
        if op == "Div":
            values = np.sign(values + 1e-3) * (np.abs(values) + 0.5)
        operand = g.const(values) if is_const else g.input(other_shape, values=values)
        out = g.op(op, [out, operand] if rng.random() < 0.7 or op in ("Div", "Sub") else [operand, out])
        steps.append(f"{op}({'const' if is_const else 'in'}{_fmt(other_shape)})")
    return f"elementwise(x{_fmt([d for d in g.feeds[g.inputs[0].name].shape])}): " + " -> ".join(steps)


FAMILIES = {
    "conv": gen_conv,
    "conv_transpose": gen_conv_transpose,
    "matmul": gen_matmul,
    "pool": gen_pool,
    "resize": gen_resize,
    "reduce": gen_reduce,
    "layernorm": gen_layernorm,
    "gelu": gen_gelu,
    "attention": gen_attention,
    "elementwise": gen_elementwise,
}


def make_case(seed: int, index: int, families: tuple[str, ...] | None = None) -> Case:
    """The case ``index`` of the campaign ``seed`` (``families``: round robin over these, default all)."""
    names = tuple(families or FAMILIES)
    family = names[index % len(names)]
    mixed = (seed * 1_000_003 + index) & 0xFFFFFFFF
    rng = random.Random(mixed)
    g = _Graph(rng, np.random.default_rng([seed, index]))
    description = FAMILIES[family](g, rng)
    output = g.nodes[-1].output[0]
    return Case(seed, index, family, description, g.model(output), dict(g.feeds))
