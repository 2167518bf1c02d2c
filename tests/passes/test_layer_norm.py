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


# --- Before/Expected, tally, and one test per rejection branch --------------------------------

from passes_helpers import bind_constants  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.script import ir as I  # noqa: E402
from tvm.script import relax as R  # noqa: E402

from tvm_autoglm.passes.tally import recording  # noqa: E402

EPS = 0.0009765625  # 2**-10: exact in float32, so the attribute compares equal


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((3, 8), "float32"), gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32")):
        with R.dataflow():
            u = R.mean(x, axis=[-1], keepdims=True)
            d = R.subtract(x, u)
            d2 = R.power(d, R.const(2.0, "float32"))
            v = R.mean(d2, axis=[-1], keepdims=True)
            ve = R.add(v, R.const(EPS, "float32"))
            s = R.sqrt(ve)
            n = R.divide(d, s)
            g = R.multiply(n, gamma)
            y = R.add(g, beta)
            R.output(y)
        return y


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((3, 8), "float32"), gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32")):
        with R.dataflow():
            y = R.nn.layer_norm(x, gamma, beta, axes=[-1], epsilon=EPS)
            R.output(y)
        return y


def _affine(seed=5, channels=8):
    rng = np.random.default_rng(seed)
    return {"gamma": (rng.random(channels) + 0.5).astype("float32"), "beta": rng.standard_normal(channels).astype("float32")}


def test_structural_before_expected():
    a = _affine()
    with recording() as tally:
        after = rewrite_layer_norm()(bind_constants(Before, **a))
    tvm.ir.assert_structural_equal(after, bind_constants(Expected, **a))
    assert tally.rewrites == 1 and tally.declines == []


def _ln_module(shape=(3, 8), mean_axis=-1, var_axis=-1, mean_keep=True, var_keep=True, exponent=2.0, eps=EPS,
               rsqrt_as=None, numerator=1.0, gamma=None, beta=None):
    """The decomposed norm built op by op, each knob one way of not being a last-axis layer_norm."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            u = bb.emit(relax.op.mean(x, axis=[mean_axis], keepdims=mean_keep), "u")
            d = bb.emit(relax.op.subtract(x, u), "d")
            d2 = bb.emit(relax.op.power(d, relax.const(exponent, "float32")), "d2")
            v = bb.emit(relax.op.mean(d2, axis=[var_axis], keepdims=var_keep), "v")
            ve = bb.emit(relax.op.add(v, relax.const(np.asarray(eps, dtype="float32"))), "ve")
            s = bb.emit(relax.op.sqrt(ve), "s")
            if rsqrt_as == "one_over":
                r = bb.emit(relax.op.divide(relax.const(numerator, "float32"), s), "r")
                n = bb.emit(relax.op.multiply(d, r), "n")
            else:
                n = bb.emit(relax.op.divide(d, s), "n")
            out = n
            if gamma is not None:
                out = bb.emit(relax.op.multiply(out, relax.const(gamma)), "g")
            if beta is not None:
                out = bb.emit(relax.op.add(out, relax.const(beta)), "b")
            y = bb.emit_output(out)
        bb.emit_func_output(y)
    return bb.get()


def _declined(mod):
    with recording() as tally:
        after = rewrite_layer_norm()(mod)
    tvm.ir.assert_structural_equal(after, mod)
    assert tally.rewrites == 0
    return tally.declines


def test_the_builder_makes_a_layer_norm():
    """The negative tests below start from this module and change one thing each."""
    with recording() as tally:
        mod = rewrite_layer_norm()(_ln_module(rsqrt_as="one_over"))
    assert tally.rewrites == 1 and op_counts(mod) == {"nn.layer_norm": 1}


@pytest.mark.parametrize("which", ["mean", "variance mean"])
def test_rejects_reduction_over_another_axis(which):
    """Branch: a mean (first or second) is not over the last axis only."""
    knobs = {"mean_axis": 0} if which == "mean" else {"var_axis": 0}
    reasons = _declined(_ln_module(**knobs))
    assert reasons == [f"mean u: {which} over axes [0], expected the last axis only"]


@pytest.mark.parametrize("which", ["mean", "variance mean"])
def test_rejects_reduction_without_keepdims(which):
    """Branch: a mean drops the reduced axis (8x8 so the broadcast still type-checks)."""
    knobs = {"mean_keep": False} if which == "mean" else {"var_keep": False}
    reasons = _declined(_ln_module(shape=(8, 8), **knobs))
    assert reasons == [f"mean u: {which} drops the reduced axis (keepdims=False)"]


def test_rejects_other_exponent():
    """Branch: the power's exponent is not 2."""
    assert _declined(_ln_module(exponent=3.0)) == ["mean u: power exponent is 3, expected 2"]


def test_rejects_other_numerator():
    """Branch: multiply(d, divide(c, sqrt)) with c != 1."""
    assert _declined(_ln_module(rsqrt_as="one_over", numerator=2.0)) == ["mean u: numerator of 1/sqrt is 2, expected 1"]


def test_rejects_epsilon_tensor():
    """Branch: epsilon is a per-channel tensor, not one value."""
    assert _declined(_ln_module(eps=np.full((8,), EPS))) == ["mean u: epsilon is a tensor of shape [8], expected one value"]


def test_rejects_symbolic_shape():
    """Branch: the normalized (last) dim is symbolic (symbolic leading dims are rewritten: tests/dynamic)."""
    n = tvm.tirx.Var("n", "int64")
    assert _declined(_ln_module(shape=(3, n))) == ["mean u: the normalized (last) dim is not static (layer_norm needs the channel count)"]


def test_per_position_scale_stays_outside():
    """Branch: the scale is not one value per channel: the bare norm is rewritten, the affine tail kept."""
    gamma = np.random.default_rng(6).random((3, 8)).astype("float32")
    beta = _affine()["beta"]
    with recording() as tally:
        after = rewrite_layer_norm()(_ln_module(gamma=gamma, beta=beta))
    assert tally.rewrites == 1
    assert tally.declines == ["mean u: scale is a tensor of shape [3, 8], not one value per channel (8); kept outside layer_norm"]
    assert op_counts(after) == {"nn.layer_norm": 1, "multiply": 1, "add": 1}


def test_per_position_shift_stays_outside():
    """Branch: the shift is not one value per channel: layer_norm takes the scale, the shift stays an add."""
    a = _affine()
    beta = np.random.default_rng(7).random((3, 8)).astype("float32")
    with recording() as tally:
        after = rewrite_layer_norm()(_ln_module(gamma=a["gamma"], beta=beta))
    assert tally.rewrites == 1
    assert tally.declines == ["mean u: shift is a tensor of shape [3, 8], not one value per channel (8); kept outside layer_norm"]
    assert op_counts(after) == {"nn.layer_norm": 1, "add": 1}
    gamma_arg = [b.value.args[1] for blk in after["main"].body.blocks for b in blk.bindings
                 if isinstance(b.value, relax.Call) and b.value.op.name == "relax.nn.layer_norm"][0]
    np.testing.assert_array_equal(gamma_arg.value.numpy(), a["gamma"])
