"""fast_math: float32 gelu / gelu_tanh / erf / tanh become vectorizable approximations, same answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from onnx import helper
from passes_helpers import assert_parity, import_model, kernels, make_model, op_counts
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_autoglm.passes.fast_math import fast_math
from tvm_autoglm.passes.gelu import rewrite_gelu


def _call_tir_names(mod) -> list[str]:
    names = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", None) == "relax.call_tir":
            names.append(expr.args[0].name_hint)

    relax.analysis.post_order_visit(mod["main"], visit)
    return names


def _mlp_with(act_nodes, out="y"):
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x0", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["x"])] + act_nodes
    return make_model(nodes, {"x0": [4, 32]}, {out: [4, 16]}, {"w": rng.standard_normal((32, 16)) * 0.5, "b": rng.standard_normal(16)})


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_becomes_one_fast_kernel_with_the_same_answer(approximate):
    act = [helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)]
    model = _mlp_with(act)
    model.opset_import[0].version = 20  # Gelu is an ONNX op from opset 20
    before = rewrite_gelu()(import_model(model))
    named = "nn.gelu" if approximate == "none" else "nn.gelu_tanh"
    assert op_counts(before).get(named) == 1
    after = fast_math()(before)
    counts = op_counts(after)
    assert named not in counts and counts.get("call_tir") == 1
    assert _call_tir_names(after) == ["fast_gelu" if approximate == "none" else "fast_gelu_tanh"]
    # still one kernel: the approximation fuses into the matmul epilogue like nn.gelu did
    assert len(kernels(after)) == 1
    x = {"x0": np.random.default_rng(0).standard_normal((4, 32)).astype("float32") * 2}
    assert_parity(after, model, x)  # rtol/atol 1e-4 (FP32 defaults) against onnxruntime


def test_erf_and_tanh_ops_are_rewritten():
    model = make_model([helper.make_node("Erf", ["x"], ["a"]), helper.make_node("Tanh", ["a"], ["y"])], {"x": [64]}, {"y": [64]})
    after = fast_math()(import_model(model))
    assert sorted(_call_tir_names(after)) == ["fast_erf", "fast_tanh"]
    assert "erf" not in op_counts(after) and "tanh" not in op_counts(after)
    assert_parity(after, model, {"x": np.linspace(-6, 6, 64, dtype="float32")})


def test_float16_is_left_alone():
    @I.ir_module
    class Half:
        @R.function
        def main(x: R.Tensor((2, 8), "float16")):
            with R.dataflow():
                y = R.nn.gelu(x)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(fast_math()(Half), Half)


def test_module_without_those_ops_is_unchanged():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [8]}, {"y": [8]})
    before = import_model(model)
    tvm.ir.assert_structural_equal(fast_math()(before), before)


def test_approximation_error_is_a_few_ulp():
    """The raw error of the rewritten erf / tanh over the range activations live in."""
    model = make_model([helper.make_node("Erf", ["x"], ["e"]), helper.make_node("Tanh", ["x"], ["t"])], {"x": [4001]},
                       {"e": [4001], "t": [4001]})
    mod = fast_math()(import_model(model))
    x = np.linspace(-8, 8, 4001, dtype="float32")
    exe = tvm.compile(relax.get_pipeline("zero")(mod), target="llvm")
    vm = relax.VirtualMachine(exe, tvm.cpu())
    e, t = (o.numpy() for o in vm["main"](tvm.runtime.tensor(x)))
    want_e = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.max(np.abs(e - want_e)) < 2e-6
    assert np.max(np.abs(t - np.tanh(x.astype(np.float64)))) < 2e-6


def test_registered_at_o2_after_the_pattern_passes():
    from tvm_autoglm.passes import passes_for

    names = [p.name for p in passes_for(2, "cpu", ())]
    assert "fast_math" in names
    assert names.index("fast_math") > names.index("fuse_epilogue")
    assert "fast_math" not in [p.name for p in passes_for(1, "cpu", ())]
