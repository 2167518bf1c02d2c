"""Tiny ONNX models for the measure tests."""

from __future__ import annotations

import numpy as np
import onnx
from _onnx_builders import make_model, value_info
from onnx import TensorProto, helper, numpy_helper


def elementwise_chain(ops: int = 12, shape=(2048, 2048)) -> onnx.ModelProto:
    """A chain of cheap elementwise ops on a tensor larger than the L3 cache.

    Unfused (O0) every op streams the whole tensor through memory; fused (O3)
    it is one pass. On this 2-core Zen 3 that makes O3 ~1.6x faster even on a
    saturated machine, a gap no amount of noise closes over 15 interleaved rounds.
    """
    kinds = ["Add", "Mul", "Sub", "Relu", "Abs", "Neg"]
    nodes, x = [], "x"
    for i in range(ops):
        op = kinds[i % len(kinds)]
        inputs = [x, "c"] if op in ("Add", "Mul", "Sub") else [x]
        nodes.append(helper.make_node(op, inputs, [f"y{i}"]))
        x = f"y{i}"
    const = numpy_helper.from_array(np.full((shape[-1],), 0.5, dtype=np.float32), "c")
    return make_model(nodes, {"x": shape}, {x: shape}, [const], name="chain")


def matmul_relu(rows: int = 8, k: int = 64, n: int = 32, seed: int = 0, batch_dim="batch") -> onnx.ModelProto:
    """x[batch, k] @ w -> Relu, then a second, smaller matmul: two kernels of known FLOPs at O0."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((n, 4)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    rows_dim = rows if batch_dim is None else batch_dim
    return make_model(nodes, {"x": [rows_dim, k]}, {"y": [rows_dim, 4]}, [w1, w2], name="mm")


def token_sum(vocab: int = 64, dim: int = 8) -> onnx.ModelProto:
    """input_ids[batch, seq] -> Gather -> ReduceSum over seq: a [batch, seq] model for sweeps."""
    rng = np.random.default_rng(3)
    table = numpy_helper.from_array(rng.standard_normal((vocab, dim)).astype(np.float32), "table")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
        helper.make_node("ReduceSum", ["emb", "axes"], ["pooled"], keepdims=0),
    ]
    return make_model(nodes, [value_info("input_ids", ["batch", "seq"], TensorProto.INT64)], {"pooled": ["batch", dim]}, [table, axes], name="tok")
