"""Hand-built ONNX models for tests: one ``make_model`` instead of a make_graph copy per file.

Every test that builds an ONNX graph by hand needs the same four steps (value infos,
initializers, ``make_graph``, ``make_model`` with an opset and an IR version onnxruntime
accepts); they live here once. ``tests/`` is on ``sys.path`` for every test (pyproject's
``pythonpath``), so ``from _onnx_builders import make_model`` works from any test folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: onnxruntime 1.2x reads IR version 8 for opset 17/18 models; newer onnx writes 10+ by default
IR_VERSION = 8


def value_info(name: str, shape, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph input/output: ``shape`` of ints and dim names, or None for an unknown shape."""
    return helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape))


def initializer(name: str, value) -> onnx.TensorProto:
    """A weight: float values (and Python lists) become float32; integer/bool arrays keep their dtype."""
    array = np.asarray(value)
    if not (isinstance(value, np.ndarray) and array.dtype.kind in "iub"):
        array = array.astype("float32")
    return numpy_helper.from_array(array, name)


def const_node(name: str, value, dtype: str = "float32") -> onnx.NodeProto:
    """A Constant node producing ``name``."""
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name))


def _value_infos(spec) -> list[onnx.ValueInfoProto]:
    if isinstance(spec, Mapping):
        return [value_info(name, shape) for name, shape in spec.items()]
    return list(spec)


def _initializers(inits) -> list[onnx.TensorProto]:
    if isinstance(inits, Mapping):
        return [initializer(name, value) for name, value in inits.items()]
    return list(inits)


def make_model(
    nodes: Iterable[onnx.NodeProto],
    inputs,
    outputs,
    inits=(),
    *,
    opset: int = 17,
    name: str = "g",
    ir_version: int = IR_VERSION,
    check: bool = False,
) -> onnx.ModelProto:
    """A one-graph model.

    ``inputs``/``outputs``: ``{name: shape}`` for float32 tensors (an output's shape may be
    None), or a list of :func:`value_info` for other types. ``inits``: ``{name: array}``
    (see :func:`initializer`) or a list of TensorProto. ``check`` runs the ONNX checker.
    """
    graph = helper.make_graph(list(nodes), name, _value_infos(inputs), _value_infos(outputs), _initializers(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    if check:
        onnx.checker.check_model(model)
    return model
