"""rewrite_layer_norm: the ReduceMean/Sub/Pow/Sqrt/Div(+Mul/Add) idiom -> R.nn.layer_norm."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper
from passes_helpers import assert_parity, const_node, import_model, kernels, make_model, op_counts

from tvm_autoglm.passes.layer_norm import rewrite_layer_norm

SHAPE = [2, 4, 16]


def _ln_nodes(affine: str = "scale_shift", axis: int = -1, square: str = "pow"):
    nodes = [
        const_node("two", 2.0),
        const_node("eps", 1e-5),
        helper.make_node("ReduceMean", ["x"], ["u"], axes=[axis], keepdims=1),
        helper.make_node("Sub", ["x", "u"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]) if square == "pow" else helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("ReduceMean", ["d2"], ["v"], axes=[axis], keepdims=1),
        helper.make_node("Add", ["v", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["s"]),
        helper.make_node("Div", ["d", "s"], ["n" if affine != "bare" else "y"]),
    ]
    if affine == "scale_shift":
        nodes += [helper.make_node("Mul", ["gamma", "n"], ["g"]), helper.make_node("Add", ["g", "beta"], ["y"])]
    elif affine == "scale":
        nodes += [helper.make_node("Mul", ["n", "gamma"], ["y"])]
    return nodes


def _inits():
    rng = np.random.default_rng(0)
    return {"gamma": rng.random(16) + 0.5, "beta": rng.standard_normal(16)}


def _inputs():
    return {"x": np.random.default_rng(1).standard_normal(SHAPE).astype("float32") * 2 + 1}


@pytest.mark.parametrize("affine", ["scale_shift", "scale", "bare"])
@pytest.mark.parametrize("square", ["pow", "mul"])
def test_decomposed_layer_norm_becomes_one_op(affine, square):
    model = make_model(_ln_nodes(affine, square=square), {"x": SHAPE}, {"y": SHAPE}, _inits())
    before = import_model(model)
    mod = rewrite_layer_norm()(before)
    assert op_counts(mod) == {"nn.layer_norm": 1}
    assert len(kernels(before)) >= 3
    assert len(kernels(mod)) == 1
    assert_parity(mod, model, _inputs())


def test_non_last_axis_is_left_alone():
    model = make_model(_ln_nodes(axis=1), {"x": SHAPE}, {"y": SHAPE}, {"gamma": np.ones((4, 1)), "beta": np.zeros((4, 1))})
    before = import_model(model)
    tvm.ir.assert_structural_equal(rewrite_layer_norm()(before), before)


def test_per_element_gamma_is_left_alone():
    # a (4, 16) gamma scales per position, which layer_norm cannot express
    inits = {"gamma": np.random.default_rng(2).random((4, 16)), "beta": np.zeros(16)}
    model = make_model(_ln_nodes(), {"x": SHAPE}, {"y": SHAPE}, inits)
    mod = rewrite_layer_norm()(import_model(model))
    counts = op_counts(mod)
    assert counts.get("multiply") == 1 and counts.get("add") == 1  # the affine tail is kept
    assert_parity(mod, model, _inputs())


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_hand_written_torch_layernorm(tmp_path, exporter):
    torch = pytest.importorskip("torch")
    import onnx

    class LN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.rand(16) + 0.5)
            self.b = torch.nn.Parameter(torch.rand(16))

        def forward(self, x):
            u = x.mean(-1, keepdim=True)
            d = x - u
            v = d.pow(2).mean(-1, keepdim=True)
            return self.w * (d / torch.sqrt(v + 1e-5)) + self.b

    path = tmp_path / "ln.onnx"
    x = torch.randn(*SHAPE)
    if exporter == "dynamo":
        torch.onnx.export(LN().eval(), (x,), str(path), dynamo=True, opset_version=18, input_names=["x"])
    else:
        torch.onnx.export(LN().eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    model = onnx.load(str(path))
    mod = rewrite_layer_norm()(import_model(model))
    assert op_counts(mod) == {"nn.layer_norm": 1}
    assert_parity(mod, model, _inputs())
