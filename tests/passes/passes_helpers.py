"""Tools for the pass tests: hand-built ONNX idioms, import, kernel counts, parity runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import tvm
import tvm.relax.frontend.onnx  # noqa: F401  (not imported by tvm.relax)
from _onnx_builders import const_node, make_model  # noqa: F401  (re-exported: the pass tests import them from here)
from tvm import relax

FP32_RTOL = 1e-4
FP32_ATOL = 1e-5


def dense_mlp(n_hidden=48, n_out=32, rows=8) -> onnx.ModelProto:
    """x[1, rows, 32] @ W1[32, n_hidden] + b1 -> relu -> @ W2[n_hidden, n_out] (pack_dense_weights' model, also built for AVX-512)."""
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    inits = {"w1": rng.standard_normal((32, n_hidden)) / 6, "b1": rng.standard_normal(n_hidden), "w2": rng.standard_normal((n_hidden, n_out)) / 7}
    return make_model(nodes, {"x": [1, rows, 32]}, {"y": None}, inits)


def import_model(model: onnx.ModelProto) -> tvm.IRModule:
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    mod = tvm.relax.frontend.onnx.from_onnx(model, shape_dict=shapes)
    return relax.transform.FoldConstant()(mod)


def op_counts(mod: tvm.IRModule, func: str = "main") -> dict[str, int]:
    """Relax op name (without 'relax.') -> count in ``func``."""
    counts: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            name = expr.op.name.removeprefix("relax.")
            counts[name] = counts.get(name, 0) + 1

    relax.analysis.post_order_visit(mod[func].body, visit)
    return counts


def kernels(mod: tvm.IRModule) -> list[str]:
    """Kernel launches in main after the O1 fusion pipeline (FuseOps + FuseTIR)."""
    fused = relax.get_pipeline("zero")(mod)
    names = []

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(tvm.ir.Op.get("relax.call_tir")):
            names.append(expr.args[0].name_hint)

    relax.analysis.post_order_visit(fused["main"], visit)
    return names


def run_tvm(mod: tvm.IRModule, inputs: list[np.ndarray]) -> list[np.ndarray]:
    ex = tvm.compile(relax.get_pipeline("zero")(mod), tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in inputs])
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [o.numpy() for o in out]


def run_ort(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def assert_parity(mod, model, inputs: dict[str, np.ndarray], rtol=FP32_RTOL, atol=FP32_ATOL) -> None:
    got = run_tvm(mod, list(inputs.values()))
    want = run_ort(model, inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def bind_constants(mod: tvm.IRModule, func: str = "main", **arrays) -> tvm.IRModule:
    """``mod`` with the named parameters of ``func`` replaced by constants.

    TVMScript has no literal for a tensor constant; a Before/Expected module takes its
    weights as parameters and the test binds them, so both sides hold real constants.
    """
    values = {name: tvm.runtime.tensor(np.ascontiguousarray(value)) for name, value in arrays.items()}
    return relax.transform.BindParams(func, values)(mod)


def unchanged(pass_, mod: tvm.IRModule) -> None:
    """Assert that ``pass_`` leaves ``mod`` structurally as it was."""
    tvm.ir.assert_structural_equal(pass_(mod), mod)
