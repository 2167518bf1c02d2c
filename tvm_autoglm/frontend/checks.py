"""Per-op support checks: refuse a node whose attributes or inputs a converter does not handle.

The op-type check (``onnx_model.unsupported_nodes``) only says whether *some* converter
exists. A converter that handles part of an op (default activations only, constant
weights only, ...) registers a check here with :func:`register_check`; the support check
(``onnx_model.check_supported``) runs every registered check before any import work and
refuses the model with one line per node naming node, op, and what is wrong.

A check is ``check(node: onnx.NodeProto, ctx: NodeContext) -> str | None`` (``None``: fine).
It runs twice in a compile: on the model as given (``ctx.folded`` False: an input computed
by a shape subgraph may still fold into a constant, so do not refuse it for being
non-constant yet) and on the cleaned model (``ctx.folded`` True).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from . import extra_converters

_CHECKS: dict[str, list[Callable]] = {}


def register_check(*op_types: str):
    """Function decorator: run the function on every node of ``op_types`` in the support check."""

    def wrap(fn):
        for op_type in op_types:
            _CHECKS.setdefault(op_type, []).append(fn)
        return fn

    return wrap


class NodeContext:
    """What a check may ask about the graph around a node: constants and graph inputs."""

    def __init__(self, model: onnx.ModelProto, folded: bool):
        self.folded = folded
        graph = model.graph
        self._initializers = {init.name: init for init in graph.initializer}
        self._constant_nodes = {
            node.output[0]: node for node in graph.node if node.op_type == "Constant" and node.domain in ("", "ai.onnx")
        }
        self.graph_inputs = {vi.name for vi in graph.input if vi.name not in self._initializers}

    def is_constant(self, name: str) -> bool:
        return name in self._initializers or name in self._constant_nodes

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or ``Constant`` node output, else None."""
        if name in self._initializers:
            from ..onnx_external import tensor_array  # reads a large external tensor from its file

            return tensor_array(self._initializers[name])
        node = self._constant_nodes.get(name)
        if node is not None:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None


def attributes(node: onnx.NodeProto) -> dict:
    """Attributes as TVM's frontend parses them (strings stay bytes, lists become tuples)."""
    out = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        out[attr.name] = tuple(value) if isinstance(value, list) else value
    return out


def refusals(model: onnx.ModelProto, folded: bool = True) -> list[str]:
    """One reason per node a registered check refuses, in graph order."""
    extra_converters()  # imports the converter modules, which register their checks
    if not any(node.op_type in _CHECKS for node in model.graph.node):
        return []
    ctx = NodeContext(model, folded)
    reasons = []
    for index, node in enumerate(model.graph.node):
        if node.domain not in ("", "ai.onnx"):
            continue
        for check in _CHECKS.get(node.op_type, ()):
            reason = check(node, ctx)
            if reason:
                reasons.append(f"{node.op_type} node '{node.name or f'#{index}'}': {reason}")
                break
    return reasons
