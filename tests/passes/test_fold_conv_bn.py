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


# --- Before/Expected, tally, and one test per rejection branch --------------------------------

from passes_helpers import bind_constants, unchanged  # noqa: E402
from tvm.script import ir as I  # noqa: E402
from tvm.script import relax as R  # noqa: E402

from tvm_autoglm.passes.tally import recording  # noqa: E402

EPS = 1e-3
C = 4


def _bn_arrays(seed=0, channels=C):
    rng = np.random.default_rng(seed)
    return dict(
        w=rng.standard_normal((channels, 2, 3, 3)).astype("float32"),
        cb=rng.standard_normal((1, channels, 1, 1)).astype("float32"),
        g=(rng.random(channels) + 0.5).astype("float32"),
        b=rng.standard_normal(channels).astype("float32"),
        m=rng.standard_normal(channels).astype("float32"),
        v=(rng.random(channels) + 0.5).astype("float32"),
    )


def _folded(a, bias: bool):
    """The folded weight and bias, from the BatchNorm definition in float64 (independent of the pass)."""
    scale = a["g"].astype(np.float64) / np.sqrt(a["v"].astype(np.float64) + np.float64(np.float32(EPS)))
    new_w = (a["w"].astype(np.float64) * scale[:, None, None, None]).astype("float32")
    cb = a["cb"].reshape(-1).astype(np.float64) if bias else 0.0
    new_b = ((cb - a["m"]) * scale + a["b"]).astype("float32").reshape(1, -1, 1, 1)
    return new_w, new_b


@I.ir_module
class BiasedBefore:
    @R.function
    def main(x: R.Tensor((1, 2, 5, 5), "float32"), w: R.Tensor((4, 2, 3, 3), "float32"), cb: R.Tensor((1, 4, 1, 1), "float32"),
             g: R.Tensor((4,), "float32"), b: R.Tensor((4,), "float32"), m: R.Tensor((4,), "float32"), v: R.Tensor((4,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            cbias = R.add(c, cb)
            bn = R.nn.batch_norm(cbias, g, b, m, v, axis=1, epsilon=1e-3)
            y = bn[0]
            R.output(y)
        return y


@I.ir_module
class BareBefore:
    @R.function
    def main(x: R.Tensor((1, 2, 5, 5), "float32"), w: R.Tensor((4, 2, 3, 3), "float32"),
             g: R.Tensor((4,), "float32"), b: R.Tensor((4,), "float32"), m: R.Tensor((4,), "float32"), v: R.Tensor((4,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            bn = R.nn.batch_norm(c, g, b, m, v, axis=1, epsilon=1e-3)
            y = bn[0]
            R.output(y)
        return y


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 2, 5, 5), "float32"), fw: R.Tensor((4, 2, 3, 3), "float32"), fb: R.Tensor((1, 4, 1, 1), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, fw, padding=[1, 1, 1, 1])
            y = R.add(c, fb)
            R.output(y)
        return y


@pytest.mark.parametrize("bias", [True, False])
def test_structural_before_expected(bias):
    a = _bn_arrays()
    if bias:
        before = bind_constants(BiasedBefore, **a)
    else:
        before = bind_constants(BareBefore, **{k: v for k, v in a.items() if k != "cb"})
    new_w, new_b = _folded(a, bias)
    with recording() as tally:
        after = fold_conv_bn()(before)
    tvm.ir.assert_structural_equal(after, bind_constants(Expected, fw=new_w, fb=new_b))
    assert tally.rewrites == 1 and tally.declines == []


def test_two_pairs_count_two_rewrites_and_name_the_declined_conv():
    """Three Conv+BN pairs: two fold, the third's conv output is also a graph output (declined)."""
    rng = np.random.default_rng(4)
    inits, nodes = {}, []
    src = "x"
    for i in range(3):
        inits.update({f"W{i}": rng.standard_normal((3, 3, 3, 3)), f"g{i}": rng.random(3) + 0.5, f"b{i}": rng.standard_normal(3),
                      f"m{i}": rng.standard_normal(3), f"v{i}": rng.random(3) + 0.5})
        nodes += [helper.make_node("Conv", [src, f"W{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"c{i}", f"g{i}", f"b{i}", f"m{i}", f"v{i}"], [f"y{i}"])]
        src = f"y{i}"
    model = make_model(nodes, {"x": [1, 3, 5, 5]}, {"y2": None, "c2": None}, inits)
    before = import_model(model)
    with recording() as tally:
        after = fold_conv_bn()(before)
    assert tally.rewrites == 2
    assert op_counts(after).get("nn.batch_norm") == 1
    assert len(tally.declines) == 1
    # the reason names the conv that feeds the remaining batch_norm, by its Relax variable
    conv_var = [b.value.args[0].name for blk in after["main"].body.blocks for b in blk.bindings
                if isinstance(b.value, tvm.relax.Call) and getattr(b.value.op, "name", "") == "relax.nn.batch_norm"][0]
    assert tally.declines == [f"nn.conv2d {conv_var}: its output has another consumer, which needs the unscaled values"]
    assert_parity(after, model, {"x": rng.standard_normal((1, 3, 5, 5)).astype("float32")})


def _declines(mod):
    with recording() as tally:
        unchanged(fold_conv_bn(), mod)
    return tally.declines


def test_rejects_non_nchw_layout():
    """Branch: conv2d layout is not NCHW/OIHW/NCHW."""

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((1, 5, 5, 2), "float32"), w: R.Tensor((4, 3, 3, 2), "float32"),
                 g: R.Tensor((4,), "float32"), b: R.Tensor((4,), "float32"), m: R.Tensor((4,), "float32"), v: R.Tensor((4,), "float32")):
            with R.dataflow():
                c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1], data_layout="NHWC", kernel_layout="OHWI")
                bn = R.nn.batch_norm(c, g, b, m, v, axis=3, epsilon=1e-3)
                y = bn[0]
                R.output(y)
            return y

    a = _bn_arrays()
    a["w"] = a["w"].transpose(0, 2, 3, 1).copy()
    reasons = _declines(bind_constants(Mod, **{k: v for k, v in a.items() if k != "cb"}))
    assert len(reasons) == 1 and reasons[0].startswith("nn.conv2d c:") and "NHWC" in reasons[0]


def test_rejects_batch_norm_over_another_axis():
    """Branch: batch_norm axis is not the channel axis (here H, which has as many entries as channels)."""

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 5), "float32"), w: R.Tensor((4, 2, 3, 3), "float32"),
                 g: R.Tensor((4,), "float32"), b: R.Tensor((4,), "float32"), m: R.Tensor((4,), "float32"), v: R.Tensor((4,), "float32")):
            with R.dataflow():
                c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
                bn = R.nn.batch_norm(c, g, b, m, v, axis=2, epsilon=1e-3)
                y = bn[0]
                R.output(y)
            return y

    reasons = _declines(bind_constants(Mod, **{k: v for k, v in _bn_arrays().items() if k != "cb"}))
    assert len(reasons) == 1 and "axis 2" in reasons[0]


@pytest.mark.parametrize("used_twice", ["conv", "conv_bias"])
def test_rejects_intermediate_with_another_consumer(used_twice):
    """Branch: the conv (or conv + bias) result has another consumer."""

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((1, 2, 5, 5), "float32"), w: R.Tensor((4, 2, 3, 3), "float32"), cb: R.Tensor((1, 4, 1, 1), "float32"),
                 g: R.Tensor((4,), "float32"), b: R.Tensor((4,), "float32"), m: R.Tensor((4,), "float32"), v: R.Tensor((4,), "float32")):
            with R.dataflow():
                c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
                cbias = R.add(c, cb)
                bn = R.nn.batch_norm(cbias, g, b, m, v, axis=1, epsilon=1e-3)
                y = bn[0]
                other = R.nn.relu(c if used_twice == "conv" else cbias)
                z = R.add(y, other)
                R.output(z)
            return z

    reasons = _declines(bind_constants(Mod, **_bn_arrays()))
    assert len(reasons) == 1 and "another consumer" in reasons[0]


def test_rejects_weight_that_is_not_constant():
    """Branch: the conv weight is a function parameter, not a constant."""
    a = _bn_arrays()
    reasons = _declines(bind_constants(BiasedBefore, **{k: v for k, v in a.items() if k != "w"}))
    assert reasons == ["nn.conv2d c: weight is not a constant"]


def test_rejects_batch_norm_statistics_that_are_not_constant():
    """Branch: a batch_norm parameter (here the variance) is not a constant."""
    a = _bn_arrays()
    reasons = _declines(bind_constants(BiasedBefore, **{k: v for k, v in a.items() if k != "v"}))
    assert len(reasons) == 1 and "not a constant" in reasons[0] and "variance" in reasons[0]


def test_rejects_bias_that_is_not_constant():
    """Branch: the tensor added between conv and batch_norm is not a constant (e.g. a residual)."""
    a = _bn_arrays()
    reasons = _declines(bind_constants(BiasedBefore, **{k: v for k, v in a.items() if k != "cb"}))
    assert reasons == ["nn.conv2d c: the added bias is not a constant"]


def test_rejects_bias_that_is_not_per_channel():
    """Branch: the added constant varies along the width (4 values, as many as channels), not per channel."""

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((4, 2, 3, 3), "float32"), cb: R.Tensor((1, 1, 1, 4), "float32"),
                 g: R.Tensor((4,), "float32"), b: R.Tensor((4,), "float32"), m: R.Tensor((4,), "float32"), v: R.Tensor((4,), "float32")):
            with R.dataflow():
                c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
                cbias = R.add(c, cb)
                bn = R.nn.batch_norm(cbias, g, b, m, v, axis=1, epsilon=1e-3)
                y = bn[0]
                R.output(y)
            return y

    a = _bn_arrays()
    a["cb"] = a["cb"].reshape(1, 1, 1, 4)
    reasons = _declines(bind_constants(Mod, **a))
    assert len(reasons) == 1 and "[1, 1, 1, 4]" in reasons[0]
