"""fold_conv_bn: Conv(+bias) + BatchNormalization folded into the conv's weights and bias."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper
from passes_helpers import assert_parity, import_model, kernels, make_model, op_counts

from tvm_autoglm.passes.fold_conv_bn import fold_conv_bn

X = [1, 3, 8, 8]


def _model(bias: bool = True, conv_also_output: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    inits = {
        "W": rng.standard_normal((8, 3, 3, 3)),
        "g": rng.random(8) + 0.5,
        "b": rng.standard_normal(8),
        "m": rng.standard_normal(8),
        "v": rng.random(8) + 0.5,
    }
    conv_inputs = ["x", "W"]
    if bias:
        inits["B"] = rng.standard_normal(8)
        conv_inputs.append("B")
    nodes = [
        helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["y"]),
    ]
    outputs = {"y": None}
    if conv_also_output:
        outputs["c"] = None
    return make_model(nodes, {"x": X}, outputs, inits)


def _inputs():
    return {"x": np.random.default_rng(3).standard_normal(X).astype("float32")}


@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn_folds(bias):
    model = _model(bias=bias)
    before = import_model(model)
    assert op_counts(before).get("nn.batch_norm") == 1
    mod = fold_conv_bn()(before)
    assert op_counts(mod) == {"nn.conv2d": 1, "add": 1, "nn.relu": 1}
    # conv + folded bias + relu: one kernel, no batch_norm left in any kernel
    names = kernels(mod)
    assert len(names) == 1 and "batch_norm" not in names[0]
    assert_parity(mod, model, _inputs())


def test_builtin_misses_biased_conv():
    # why this pass exists: TVM's FoldBatchnormToConv2D leaves the biased form alone
    before = import_model(_model(bias=True))
    builtin = tvm.relax.transform.FoldBatchnormToConv2D()(before)
    assert op_counts(builtin).get("nn.batch_norm") == 1


def test_conv_with_second_consumer_is_left_alone():
    model = _model(conv_also_output=True)
    before = import_model(model)
    after = fold_conv_bn()(before)
    tvm.ir.assert_structural_equal(after, before)
    assert_parity(after, model, _inputs())


def test_torch_training_preserve_export(tmp_path):
    # eval-mode torch exports (both exporters) fold BN themselves; torchscript
    # with TrainingMode.PRESERVE (and most third-party CNN ONNX files) keep
    # BatchNormalization nodes
    torch = pytest.importorskip("torch")
    import onnx

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.Hardswish(),
    ).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "cnn.onnx"
    x = torch.randn(*X)
    torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                      do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    model = onnx.load(str(path))
    before = import_model(model)
    assert op_counts(before).get("nn.batch_norm") == 2
    mod = fold_conv_bn()(before)
    assert "nn.batch_norm" not in op_counts(mod)
    assert len(kernels(mod)) == 2 < len(kernels(before))
    assert_parity(mod, model, _inputs())
