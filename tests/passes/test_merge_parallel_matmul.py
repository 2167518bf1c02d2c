"""merge_parallel_matmul: Q/K/V projections sharing an input -> one matmul + split."""

from __future__ import annotations

import numpy as np
import tvm
from onnx import helper
from passes_helpers import assert_parity, import_model, make_model, op_counts

from tvm_autoglm.passes.merge_parallel_matmul import merge_parallel_matmul

RNG = np.random.default_rng(0)


def _qkv(shared: bool = True):
    nodes, inits = [], {}
    for i, name in enumerate("qkv"):
        src = "x" if shared else f"x{i}"
        nodes += [helper.make_node("MatMul", [src, f"w{name}"], [f"m{name}"]), helper.make_node("Add", [f"m{name}", f"b{name}"], [name])]
        inits[f"w{name}"] = RNG.standard_normal((16, 16))
        inits[f"b{name}"] = RNG.standard_normal(16)
    inputs = {"x": [1, 8, 16]} if shared else {f"x{i}": [1, 8, 16] for i in range(3)}
    return make_model(nodes, inputs, {n: [1, 8, 16] for n in "qkv"}, inits)


def test_qkv_with_bias_merges():
    model = _qkv()
    before = import_model(model)
    assert op_counts(before)["matmul"] == 3
    mod = merge_parallel_matmul()(before)
    counts = op_counts(mod)
    assert counts["matmul"] == 1 and counts["split"] == 1 and counts["add"] == 1
    assert [p.name for p in mod["main"].params] == ["x"]  # the lifted weights are constants again
    assert_parity(mod, model, {"x": RNG.standard_normal((1, 8, 16)).astype("float32")})


def test_different_inputs_are_left_alone():
    model = _qkv(shared=False)
    before = import_model(model)
    mod = merge_parallel_matmul()(before)
    assert op_counts(mod)["matmul"] == 3
    tvm.ir.assert_structural_equal(mod, before)
