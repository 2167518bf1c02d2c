"""rewrite_gelu: every exporter spelling of GELU becomes one R.nn.gelu / gelu_tanh."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from onnx import helper
from passes_helpers import assert_parity, const_node, import_model, kernels, make_model, op_counts
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_autoglm.passes.gelu import rewrite_gelu

SHAPE = [2, 8]


def _erf_nodes(form: str):
    c = [const_node("sqrt2", math.sqrt(2.0)), const_node("inv", 1 / math.sqrt(2.0)), const_node("one", 1.0), const_node("half", 0.5)]
    if form == "inv_sqrt2":
        inner = helper.make_node("Mul", ["x", "inv"], ["d"])
    else:
        inner = helper.make_node("Div", ["x", "sqrt2"], ["d"])
    body = [inner, helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["e", "one"], ["p"])]
    if form == "torchscript":  # (x * (1 + erf)) * 0.5
        body += [helper.make_node("Mul", ["x", "p"], ["t"]), helper.make_node("Mul", ["t", "half"], ["y"])]
    elif form == "dynamo":  # x * (0.5 * (1 + erf))
        body += [helper.make_node("Mul", ["half", "p"], ["t"]), helper.make_node("Mul", ["x", "t"], ["y"])]
    else:  # (x * 0.5) * (1 + erf)
        body += [helper.make_node("Mul", ["half", "x"], ["t"]), helper.make_node("Mul", ["p", "t"], ["y"])]
    return c + body


def _tanh_nodes(cube: str):
    c = [const_node("three", 3.0), const_node("coef", 0.044715), const_node("k", math.sqrt(2 / math.pi)), const_node("one", 1.0), const_node("half", 0.5)]
    if cube == "pow":
        body = [helper.make_node("Pow", ["x", "three"], ["x3"])]
    else:
        body = [helper.make_node("Mul", ["x", "x"], ["x2"]), helper.make_node("Mul", ["x", "x2"], ["x3"])]
    body += [
        helper.make_node("Mul", ["coef", "x3"], ["a"]),
        helper.make_node("Add", ["x", "a"], ["b"]),
        helper.make_node("Mul", ["k", "b"], ["c"]),
        helper.make_node("Tanh", ["c"], ["t"]),
        helper.make_node("Add", ["one", "t"], ["p"]),
        helper.make_node("Mul", ["x", "p"], ["q"]),
        helper.make_node("Mul", ["half", "q"], ["y"]),
    ]
    return c + body


def _inputs():
    return {"x": np.random.default_rng(0).standard_normal(SHAPE).astype("float32") * 3}


@pytest.mark.parametrize("form", ["torchscript", "dynamo", "half_first", "inv_sqrt2"])
def test_erf_forms_become_one_gelu(form):
    model = make_model(_erf_nodes(form), {"x": SHAPE}, {"y": SHAPE})
    mod = rewrite_gelu()(import_model(model))
    assert op_counts(mod) == {"nn.gelu": 1}
    assert_parity(mod, model, _inputs())


@pytest.mark.parametrize("cube", ["pow", "mul"])
def test_tanh_forms_become_one_gelu_tanh(cube):
    model = make_model(_tanh_nodes(cube), {"x": SHAPE}, {"y": SHAPE})
    mod = rewrite_gelu()(import_model(model))
    assert op_counts(mod) == {"nn.gelu_tanh": 1}
    assert_parity(mod, model, _inputs())


def test_structural_before_expected():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 8), "float32")):
            with R.dataflow():
                a = R.divide(x, R.const(1.4142135381698608, "float32"))
                b = R.erf(a)
                c = R.add(b, R.const(1.0, "float32"))
                d = R.multiply(x, c)
                e = R.multiply(d, R.const(0.5, "float32"))
                R.output(e)
            return e

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 8), "float32")):
            with R.dataflow():
                e = R.nn.gelu(x)
                R.output(e)
            return e

    tvm.ir.assert_structural_equal(rewrite_gelu()(Before), Expected)


def test_wrong_constant_is_left_alone():
    nodes = _erf_nodes("torchscript")
    nodes[3] = const_node("half", 0.6)  # not GELU: 0.6 * x * (1 + erf(x / sqrt2))
    model = make_model(nodes, {"x": SHAPE}, {"y": SHAPE})
    before = import_model(model)
    after = rewrite_gelu()(before)
    tvm.ir.assert_structural_equal(after, before)
    assert "nn.gelu" not in op_counts(after)


def test_different_operands_are_left_alone():
    # x / sqrt2 inside erf but a different tensor outside: not GELU
    nodes = _erf_nodes("torchscript")
    nodes[-2] = helper.make_node("Mul", ["z", "p"], ["t"])
    model = make_model(nodes, {"x": SHAPE, "z": SHAPE}, {"y": SHAPE})
    before = import_model(model)
    tvm.ir.assert_structural_equal(rewrite_gelu()(before), before)


def test_gelu_fuses_into_matmul_epilogue():
    # MatMul + bias + decomposed GELU: one kernel either way, but the rewritten
    # graph has one elementwise op after the bias instead of five
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("MatMul", ["x0", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["x"])] + _erf_nodes("dynamo")
    model = make_model(nodes, {"x0": [2, 16]}, {"y": [2, 8]}, {"w": rng.standard_normal((16, 8)), "b": rng.standard_normal(8)})
    mod = rewrite_gelu()(import_model(model))
    assert op_counts(mod) == {"matmul": 1, "add": 1, "nn.gelu": 1}
    assert len(kernels(mod)) == 1
    assert_parity(mod, model, {"x0": rng.standard_normal((2, 16)).astype("float32")})


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_torch_exports(tmp_path, exporter, approximate):
    torch = pytest.importorskip("torch")
    import onnx

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.gelu(x * 2.0, approximate=approximate)

    path = tmp_path / "gelu.onnx"
    x = torch.randn(*SHAPE)
    if exporter == "dynamo":
        torch.onnx.export(M().eval(), (x,), str(path), dynamo=True, opset_version=18, input_names=["x"])
    else:
        torch.onnx.export(M().eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    model = onnx.load(str(path))
    mod = rewrite_gelu()(import_model(model))
    want = "nn.gelu" if approximate == "none" else "nn.gelu_tanh"
    assert op_counts(mod).get(want) == 1
    assert set(op_counts(mod)) <= {want, "multiply"}
    assert_parity(mod, model, _inputs())
