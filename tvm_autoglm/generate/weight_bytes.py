"""Bytes a decode step must read: the numerator of the memory-bandwidth speed limit.

At batch 1 a decode step multiplies one token by every weight matrix once, so its
time is at least ``weight bytes / DRAM bandwidth`` (``measure/bandwidth.py``); the
ratio of that limit to the measured tokens/s says how much of the machine a
generator uses. Counted from the ONNX graph, not from our build, so that it is the
same number for every engine: every initializer that reaches a MatMul / Gemm
operand (through Transpose / Cast / Identity / Reshape) is read whole each step; an
embedding table that is only gathered from is read one row per token (left out:
a few KiB).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

#: Ops a weight may pass through on its way to a matmul without changing how much of it is read.
_PASS_THROUGH = ("Transpose", "Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze")
_MATMULS = ("MatMul", "Gemm")


def _initializer_bytes(graph: onnx.GraphProto) -> dict[str, int]:
    sizes = {}
    for init in graph.initializer:
        dims = [int(d) for d in init.dims]
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        sizes[init.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    sizes[node.output[0]] = int(numpy_helper.to_array(attr.t).nbytes)
    return sizes


def matmul_weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the constant matmul operands of ``model`` (each counted once, however often it is used)."""
    graph = model.graph
    sizes = _initializer_bytes(graph)
    producer = {out: node for node in graph.node for out in node.output}
    counted: set[str] = set()

    def source(name: str) -> str | None:
        seen = 0
        while name not in sizes and seen < 16:
            node = producer.get(name)
            if node is None or node.op_type not in _PASS_THROUGH or not node.input:
                return None
            name, seen = node.input[0], seen + 1
        return name if name in sizes else None

    for node in graph.node:
        if node.op_type in _MATMULS:
            for name in node.input[:2]:
                weight = source(name)
                if weight is not None:
                    counted.add(weight)
    return sum(sizes[name] for name in counted)


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, slots: int, itemsize: int = 4) -> int:
    """Bytes of all K and V cache slots: what decode attention over ``slots`` slots reads per step."""
    return 2 * layers * kv_heads * slots * head_dim * itemsize
