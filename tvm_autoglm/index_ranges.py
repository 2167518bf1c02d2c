"""Valid value ranges of model inputs that index into constant tables (token ids).

TVM's ONNX frontend lowers Gather to ``relax.op.take(..., mode="fast")``: an
unchecked load. A token id past the vocabulary reads out of bounds (garbage or
a segfault) where onnxruntime raises "indices element out of data bounds". So
at compile time we find every graph input whose values reach the indices of a
Gather/GatherElements on a constant table, unchanged (through Cast to an
integer type, Reshape, Unsqueeze, ...), and record the range the runtime must
check before calling the library.

The range is ONNX's: ``[-rows, rows - 1]``. The frontend maps a negative index
to ``index + rows`` before the take (``_normalize_negative_indices``), so -1 is
the last row, exactly as in onnxruntime; only values outside that range are
out of bounds.
"""

from __future__ import annotations

import onnx

#: Ops whose output holds exactly the values of their first input (every element reaches the output).
_VALUE_PRESERVING = {"Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "Expand"}

_INTEGER_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
}


def _constant_shapes(graph) -> dict[str, list[int]]:
    """Shapes of initializers and Constant-node tensors; dims only, no weight data is read."""
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    shapes[node.output[0]] = list(attr.t.dims)
    return shapes


def _passes_values(node) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in _VALUE_PRESERVING:
        return True
    if node.op_type == "Cast":
        to = next((attr.i for attr in node.attribute if attr.name == "to"), None)
        return to in _INTEGER_TYPES
    return False


def _origins(graph, input_names: set[str]) -> dict[str, str]:
    """tensor name -> the graph input whose values it carries unchanged."""
    origin = {name: name for name in input_names}
    for node in graph.node:  # ONNX nodes are topologically sorted
        if node.input and node.input[0] in origin and _passes_values(node):
            for out in node.output[:1]:
                origin[out] = origin[node.input[0]]
    return origin


def _gather_axis(node, rank: int) -> int:
    axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 0)
    return axis + rank if axis < 0 else axis


def index_ranges(model: onnx.ModelProto) -> dict[str, dict]:
    """``{input: {"min", "max", "source"}}`` for inputs used as indices into constant tables.

    Several gathers on one input give the intersection of their ranges.
    """
    graph = model.graph
    constants = _constant_shapes(graph)
    inputs = {vi.name for vi in graph.input if vi.name not in constants}
    origin = _origins(graph, inputs)
    ranges: dict[str, dict] = {}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("Gather", "GatherElements") or len(node.input) < 2:
            continue
        data, indices = node.input[0], node.input[1]
        if indices not in origin or data not in constants:
            continue
        shape = constants[data]
        axis = _gather_axis(node, len(shape))
        if not 0 <= axis < len(shape):
            continue
        rows = int(shape[axis])
        name = origin[indices]
        source = f"{node.op_type} on {data} (axis {axis}, {rows} rows)"
        current = ranges.get(name)
        if current is None:
            ranges[name] = {"min": -rows, "max": rows - 1, "source": source}
        elif source not in current["source"]:
            ranges[name] = {
                "min": max(current["min"], -rows),
                "max": min(current["max"], rows - 1),
                "source": f"{current['source']}; {source}",
            }
    return ranges


def unchecked_gathers(model: onnx.ModelProto) -> list[str]:
    """Gathers whose indices are computed from inputs (not plain copies of one): no range check covers them."""
    graph = model.graph
    constants = _constant_shapes(graph)
    inputs = {vi.name for vi in graph.input if vi.name not in constants}
    origin = _origins(graph, inputs)
    tainted = set(inputs)
    found = []
    for index, node in enumerate(graph.node):
        if node.op_type in ("Gather", "GatherElements", "GatherND") and len(node.input) >= 2:
            indices = node.input[1]
            if indices in tainted and indices not in origin:
                found.append(f"{node.op_type} '{node.name or f'#{index}'}'")
        if node.op_type not in ("Shape", "Size") and any(name in tainted for name in node.input):
            tainted.update(node.output)  # Shape/Size depend on the input's shape only, which is static
    return found
