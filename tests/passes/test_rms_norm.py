"""rewrite_rms_norm: T5/LLaMA RMSNorm (x * 1/sqrt(mean(x^2)+eps) * w) -> R.nn.rms_norm."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper
from passes_helpers import assert_parity, const_node, import_model, kernels, make_model, op_counts

from tvm_autoglm.passes.rms_norm import rewrite_rms_norm

SHAPE = [2, 4, 16]


def _rms_nodes(inverse: str = "div_one", axis: int = -1, weight: bool = True):
    nodes = [
        const_node("two", 2.0),
        const_node("eps", 1e-6),
        const_node("one", 1.0),
        helper.make_node("Pow", ["x", "two"], ["x2"]),
        helper.make_node("ReduceMean", ["x2"], ["m"], axes=[axis], keepdims=1),
        helper.make_node("Add", ["m", "eps"], ["me"]),
        helper.make_node("Sqrt", ["me"], ["s"]),
    ]
    out = "n" if weight else "y"
    if inverse == "div_one":  # torchscript
        nodes += [helper.make_node("Div", ["one", "s"], ["r"]), helper.make_node("Mul", ["x", "r"], [out])]
    elif inverse == "reciprocal":  # dynamo
        nodes += [helper.make_node("Reciprocal", ["s"], ["r"]), helper.make_node("Mul", ["x", "r"], [out])]
    else:
        nodes += [helper.make_node("Div", ["x", "s"], [out])]
    if weight:
        nodes += [helper.make_node("Mul", ["w", "n"], ["y"])]
    return nodes


def _inputs():
    return {"x": np.random.default_rng(1).standard_normal(SHAPE).astype("float32")}


@pytest.mark.parametrize("inverse", ["div_one", "reciprocal", "div"])
@pytest.mark.parametrize("weight", [True, False])
def test_rms_norm_idiom_becomes_one_op(inverse, weight):
    inits = {"w": np.random.default_rng(0).random(16) + 0.5} if weight else {}
    model = make_model(_rms_nodes(inverse, weight=weight), {"x": SHAPE}, {"y": SHAPE}, inits)
    before = import_model(model)
    mod = rewrite_rms_norm()(before)
    assert op_counts(mod) == {"nn.rms_norm": 1}
    assert len(kernels(mod)) == 1 < len(kernels(before))
    assert_parity(mod, model, _inputs())


def test_non_last_axis_is_left_alone():
    model = make_model(_rms_nodes(axis=1, weight=False), {"x": SHAPE}, {"y": SHAPE})
    before = import_model(model)
    tvm.ir.assert_structural_equal(rewrite_rms_norm()(before), before)


def test_not_squared_is_left_alone():
    nodes = _rms_nodes(weight=False)
    nodes[0] = const_node("two", 3.0)  # mean(x^3): not RMS
    model = make_model(nodes, {"x": SHAPE}, {"y": SHAPE})
    before = import_model(model)
    tvm.ir.assert_structural_equal(rewrite_rms_norm()(before), before)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_torch_t5_style_rmsnorm(tmp_path, exporter):
    torch = pytest.importorskip("torch")
    import onnx

    class RMS(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.rand(16) + 0.5)

        def forward(self, x):
            variance = x.pow(2).mean(-1, keepdim=True)
            return self.weight * (x * torch.rsqrt(variance + 1e-6))

    path = tmp_path / "rms.onnx"
    x = torch.randn(*SHAPE)
    if exporter == "dynamo":
        torch.onnx.export(RMS().eval(), (x,), str(path), dynamo=True, opset_version=18, input_names=["x"])
    else:
        torch.onnx.export(RMS().eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    model = onnx.load(str(path))
    mod = rewrite_rms_norm()(import_model(model))
    assert op_counts(mod) == {"nn.rms_norm": 1}
    assert_parity(mod, model, _inputs())
