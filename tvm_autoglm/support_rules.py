"""Per-op conditions of the support check: attribute values, inputs and dtypes we do not handle.

Having a converter for an op is not enough: TVM's converters (and ours) handle only
some attribute values, and a case they mishandle compiles into a silent wrong answer.
Each :class:`Rule` here names one such case; :func:`violations` lists every node of a
model that hits one, as ``node 'n' (Op): <attribute/input/dtype> = <value> (<why>)``,
so ``onnx_model.check_supported`` can refuse the model up front, in one line.

Rules are data: the table :data:`RULES` is built with the small constructors below
(:func:`attr_in`, :func:`attr_unset`, :func:`input_absent`, :func:`output_absent`,
:func:`input_dtype_in`, :func:`same_input_dtypes`) and other modules add theirs with
:func:`add_rule` (e.g. recurrent-op checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx

_DEFAULT_DOMAINS = ("", "ai.onnx")


class NodeView:
    """A node with what the rules ask about: attributes (with defaults) and input/output dtypes."""

    def __init__(self, node: onnx.NodeProto, types: "_Types"):
        self.node = node
        self._types = types
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def has_input(self, index: int) -> bool:
        return index < len(self.node.input) and self.node.input[index] != ""

    def has_output(self, index: int) -> bool:
        return index < len(self.node.output) and self.node.output[index] != ""

    def output_used(self, index: int) -> bool:
        """Output ``index`` is read by another node or is a graph output (old exports name unused outputs)."""
        return self.has_output(index) and self.node.output[index] in self._types.used

    def input_dtype(self, index: int) -> str | None:
        """numpy dtype name of input ``index``; None when absent or not inferable."""
        return self._types.dtype(self.node.input[index]) if self.has_input(index) else None

    def input_shape(self, index: int) -> list | None:
        """Declared shape of input ``index`` (graph input or value_info); None when unknown."""
        return self._types.shapes.get(self.node.input[index]) if self.has_input(index) else None

    def constant(self, index: int):
        """Input ``index`` as a numpy array when it is an initializer; else None."""
        return self._types.constants.get(self.node.input[index]) if self.has_input(index) else None


@dataclass(frozen=True)
class Rule:
    """``check(node)`` returns why the node is refused (naming the attribute/input/dtype and its value) or None."""

    op: str
    check: Callable[[NodeView], "str | None"]


RULES: dict[str, list[Rule]] = {}


def add_rule(op: str, check: Callable[[NodeView], "str | None"]) -> Rule:
    """Register a condition for ``op`` (checked on every node of that type in the default domain)."""
    rule = Rule(op, check)
    RULES.setdefault(op, []).append(rule)
    return rule


# ---------------------------------------------------------------- rule constructors


def attr_in(op: str, name: str, allowed, default, why: str) -> Rule:
    """Refuse unless attribute ``name`` (``default`` when absent) is one of ``allowed``."""
    allowed = tuple(allowed)

    def check(node: NodeView):
        value = node.attr(name, default)
        value = value.decode() if isinstance(value, bytes) else value
        if value not in allowed:
            return f"attribute {name}={value!r} (expected {' or '.join(map(repr, allowed))}: {why})"
        return None

    return add_rule(op, check)


def attr_unset(op: str, name: str, why: str, unless=None) -> Rule:
    """Refuse a node that sets attribute ``name`` (to anything but ``unless``)."""

    def check(node: NodeView):
        if name in node.attrs and node.attrs[name] != unless:
            return f"attribute {name}={node.attrs[name]!r} is set ({why})"
        return None

    return add_rule(op, check)


def input_absent(op: str, index: int, name: str, why: str) -> Rule:
    def check(node: NodeView):
        return f"input {index} ({name}) is given ({why})" if node.has_input(index) else None

    return add_rule(op, check)


def output_absent(op: str, index: int, name: str, why: str) -> Rule:
    def check(node: NodeView):
        return f"output {index} ({name}) is used ({why})" if node.has_output(index) else None

    return add_rule(op, check)


def input_dtype_in(op: str, index: int, allowed, why: str) -> Rule:
    allowed = tuple(allowed)

    def check(node: NodeView):
        dtype = node.input_dtype(index)
        if dtype is not None and dtype not in allowed:
            return f"input {index} dtype {dtype} (expected {'/'.join(allowed)}: {why})"
        return None

    return add_rule(op, check)


def same_input_dtypes(op: str, first: int, second: int, why: str) -> Rule:
    def check(node: NodeView):
        a, b = node.input_dtype(first), node.input_dtype(second)
        if a is not None and b is not None and a != b:
            return f"input dtypes {a} and {b} differ ({why})"
        return None

    return add_rule(op, check)


# ---------------------------------------------------------------- the table
# Each line is a case seen wrong or failing in the ONNX conformance cases
# (python -m tvm_autoglm.testing.conformance) that no converter of ours fixes yet.

input_absent("Attention", 6, "nonpad_kv_seqlen", "padded KV caches are not implemented")
attr_unset("Attention", "left_window_size", "sliding-window attention is not implemented", unless=-1)
attr_unset("Attention", "right_window_size", "sliding-window attention is not implemented", unless=-1)
attr_in("BatchNormalization", "training_mode", (0,), 0, "training-mode statistics are not implemented")
attr_unset("ConvTranspose", "output_shape", "TVM's converter ignores it")
attr_in("QuantizeLinear", "block_size", (0,), 0, "blocked quantization is not implemented")
attr_in("DequantizeLinear", "block_size", (0,), 0, "blocked quantization is not implemented")
same_input_dtypes("Pow", 0, 1, "mixed base/exponent types are not implemented")
input_dtype_in("Pow", 0, ("float16", "float32", "float64"), "TVM's power is float-only")
input_dtype_in("ReduceMax", 0, ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"),
               "TVM has no bool max")
input_dtype_in("ReduceMin", 0, ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"),
               "TVM has no bool min")
attr_in("IsInf", "detect_positive", (1,), 1, "TVM's converter ignores it")
attr_in("IsInf", "detect_negative", (1,), 1, "TVM's converter ignores it")




def _empty_shape_slice(node: NodeView):
    """Shape with start/end selecting no dims: a zero-size output, which we do not compile."""
    shape = node.input_shape(0)
    if shape is None:
        return None
    rank = len(shape)
    start, end = node.attr("start", 0), node.attr("end", rank)
    start, end = [min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end)]
    return f"attributes start={node.attr('start', 0)} end={node.attr('end', rank)} select no dims of a rank-{rank} input (zero-size output)" if end <= start else None


def _refuse_op(op: str, why: str) -> Rule:
    return add_rule(op, lambda node: f"the op itself ({why})")




def _resize_dtype_check(node: NodeView):
    """Linear/cubic Resize of integers rounds in onnxruntime's own way; our kernel interpolates floats only.

    (Attributes and constant inputs of Resize are checked by ``frontend/resize.py``'s support check.)
    """
    mode = node.attr("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    dtype = node.input_dtype(0)
    if mode != "nearest" and dtype is not None and not dtype.startswith(("float", "bfloat")):
        return f"attribute mode={mode!r} with a {dtype} input (expected float16/float32/float64: integer interpolation is not implemented)"
    return None


add_rule("Resize", _resize_dtype_check)


def _resize_reference_check(node: NodeView):
    """align_corners / tf_crop_and_resize with a non-integer in x scale: the references disagree (frontend/resize_tables.py).

    Fires when the input shape is declared; the converter refuses the same case when it is not.
    """
    from .frontend.resize_tables import reference_disagreement

    mode = node.attr("coordinate_transformation_mode", b"half_pixel")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    shape, scales = node.input_shape(0), node.constant(2)
    if shape is None or scales is None or scales.size == 0:
        return None
    axes = node.attr("axes")
    if axes is not None:
        full = [1.0] * len(shape)
        for axis, value in zip(axes, scales.tolist()):
            full[axis] = value
        scales = full
    return reference_disagreement(mode, shape, list(scales)) if len(scales) == len(shape) else None


add_rule("Resize", _resize_reference_check)

def _dropout_check(node: NodeView):
    """Inference Dropout is the identity; a training-mode one is random, and TVM's mask output is float, not bool."""
    if node.has_input(2):
        mode = node.constant(2)
        if mode is None:
            return "input 2 (training_mode) is not a constant (training-mode Dropout is random: not an inference op)"
        if bool(mode.reshape(-1)[0]):
            return "input 2 (training_mode) is true (training-mode Dropout is random: not an inference op)"
    if node.output_used(1):
        return "output 1 (mask) is used (the mask output is not implemented)"
    return None


add_rule("Dropout", _dropout_check)

attr_in("SpaceToDepth", "mode", ("DCR",), "DCR", "TVM's converter implements DCR only")
add_rule("Mod", lambda node: (f"attribute fmod=0 with {node.input_dtype(0)} inputs (float Mod needs fmod=1)"
                              if node.attr("fmod", 0) == 0 and (node.input_dtype(0) or "").startswith("float") else None))
output_absent("MaxPool", 1, "Indices", "MaxPool indices are not implemented")
input_dtype_in("TopK", 0, ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"),
               "TVM has no uint64 TopK")
input_dtype_in("OneHot", 1, ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"),
               "TVM's converter needs an integer depth")
add_rule("Shape", lambda node: _empty_shape_slice(node))
_refuse_op("Sinh", "TVM 0.27 has no CPU code generation for tirx.sinh")
_refuse_op("Cosh", "TVM 0.27 has no CPU code generation for tirx.cosh")
_refuse_op("NonZero", "its output shape depends on the data; we compile static shapes only")


# ---------------------------------------------------------------- checking a model


def _numel(init) -> int:
    count = 1
    for d in init.dims:
        count *= d
    return count


class _Types:
    """Tensor dtypes by name: declared ones first, onnx shape inference only if a rule asks for another."""

    def __init__(self, model: onnx.ModelProto):
        self._model = model
        self._known: dict[str, str] = {}
        graph = model.graph
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            self._add(vi.name, vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0)
        for init in graph.initializer:
            self._add(init.name, init.data_type)
        self.shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
                       for vi in list(graph.input) + list(graph.value_info) if vi.type.HasField("tensor_type")}
        self._inits = {init.name: init for init in graph.initializer}
        self.used = {name for node in graph.node for name in node.input} | {vi.name for vi in graph.output}
        self._constants: dict | None = None
        self._inferred = False

    @property
    def constants(self) -> dict:
        """Small initializers as arrays (read on first use; large ones are weights no rule looks at)."""
        if self._constants is None:
            from onnx import numpy_helper

            self._constants = {n: numpy_helper.to_array(i) for n, i in self._inits.items() if _numel(i) <= 64}
        return self._constants

    def _add(self, name: str, elem_type: int) -> None:
        if elem_type:
            try:
                self._known[name] = onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
            except Exception:  # exotic types numpy has no name for
                self._known[name] = onnx.TensorProto.DataType.Name(elem_type).lower()

    def dtype(self, name: str) -> str | None:
        if name not in self._known and not self._inferred:
            self._inferred = True
            try:
                inferred = onnx.shape_inference.infer_shapes(self._model)
            except Exception:  # cannot infer: rules that need this dtype do not fire
                return None
            for vi in inferred.graph.value_info:
                self._add(vi.name, vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0)
        return self._known.get(name)


def violations(model: onnx.ModelProto) -> list[str]:
    """One line per (node, broken rule), in graph order; empty when every rule holds."""
    found = []
    types = None
    for index, node in enumerate(model.graph.node):
        rules = RULES.get(node.op_type) if node.domain in _DEFAULT_DOMAINS else None
        if not rules:
            continue
        types = types or _Types(model)
        view = NodeView(node, types)
        for rule in rules:
            reason = rule.check(view)
            if reason:
                found.append(f"node '{node.name or f'#{index}'}' ({node.op_type}): {reason}")
    return found
