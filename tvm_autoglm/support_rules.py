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

    def input_dtype(self, index: int) -> str | None:
        """numpy dtype name of input ``index``; None when absent or not inferable."""
        return self._types.dtype(self.node.input[index]) if self.has_input(index) else None


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
attr_in("IsInf", "detect_positive", (1,), 1, "TVM's converter ignores it")
attr_in("IsInf", "detect_negative", (1,), 1, "TVM's converter ignores it")


# ---------------------------------------------------------------- checking a model


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
        self._inferred = False

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
