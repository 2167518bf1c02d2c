"""fuse_epilogue: what FuseOps already fuses (measured) and the layout tail it adds."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper
from passes_helpers import assert_parity, const_node, import_model, kernels, make_model, op_counts

from tvm_autoglm.passes.fuse_epilogue import COMPOSITE_NAME, fuse_epilogue
from tvm_autoglm.passes.gelu import rewrite_gelu

RNG = np.random.default_rng(0)


def _linear(act: str):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["h"])]
    if act == "relu":
        nodes.append(helper.make_node("Relu", ["h"], ["y"]))
    elif act == "relu6":
        nodes += [const_node("lo", 0.0), const_node("hi", 6.0), helper.make_node("Clip", ["h", "lo", "hi"], ["y"])]
    elif act == "hardswish":
        nodes.append(helper.make_node("HardSwish", ["h"], ["y"]))
    elif act == "hardsigmoid":
        nodes.append(helper.make_node("HardSigmoid", ["h"], ["y"]))
    elif act == "silu":
        nodes += [helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Mul", ["h", "s"], ["y"])]
    elif act == "gelu":
        nodes += [const_node("r2", 2 ** 0.5), const_node("one", 1.0), const_node("half", 0.5),
                  helper.make_node("Div", ["h", "r2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                  helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["h", "p"], ["q"]),
                  helper.make_node("Mul", ["q", "half"], ["y"])]
    inits = {"w": RNG.standard_normal((16, 32)), "b": RNG.standard_normal(32)}
    return make_model(nodes, {"x": [2, 8, 16]}, {"y": [2, 8, 32]}, inits)


@pytest.mark.parametrize("act", ["relu", "relu6", "hardswish", "hardsigmoid", "silu", "gelu"])
def test_fuseops_keeps_matmul_bias_activation_in_one_kernel(act):
    # the measurement behind the pass's scope: FuseOps needs no help here
    model = _linear(act)
    mod = rewrite_gelu()(import_model(model))
    assert len(kernels(mod)) == 1
    mod = fuse_epilogue()(mod)  # and the pass leaves these alone
    assert len(kernels(mod)) == 1
    assert_parity(mod, model, {"x": RNG.standard_normal((2, 8, 16)).astype("float32")})


def _projection(extra_consumer: bool = False):
    # the transformer head split: MatMul + bias -> Reshape(B,S,H,D) -> Transpose(0,2,1,3)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["h"]),
             helper.make_node("Reshape", ["h", "shape"], ["r"]), helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1, 3])]
    outputs = {"y": [1, 2, 8, 16]}
    if extra_consumer:
        outputs["h"] = None
    model = make_model(nodes, {"x": [1, 8, 32]}, outputs, {"w": RNG.standard_normal((32, 32)), "b": RNG.standard_normal(32)})
    model.graph.initializer.append(helper.make_tensor("shape", 7, [4], [1, 8, 2, 16]))
    return model


def test_head_split_layout_joins_the_matmul_kernel():
    model = _projection()
    before = import_model(model)
    assert len(kernels(before)) == 2  # FuseOps: matmul+bias | reshape+transpose
    mod = fuse_epilogue()(before)
    composites = [gv for gv, f in mod.functions.items() if f.attrs is not None and f.attrs.get("Composite") == COMPOSITE_NAME]
    assert len(composites) == 1
    assert op_counts(mod).get("matmul") is None
    assert len(kernels(mod)) == 1
    assert_parity(mod, model, {"x": RNG.standard_normal((1, 8, 32)).astype("float32")})


def test_bias_output_used_elsewhere_is_left_alone():
    model = _projection(extra_consumer=True)
    before = import_model(model)
    mod = fuse_epilogue()(before)
    tvm.ir.assert_structural_equal(mod, before)


# --- Before/Expected, tally, and one test per rejection branch --------------------------------

from tvm.script import ir as I  # noqa: E402
from tvm.script import relax as R  # noqa: E402

from tvm_autoglm.passes.tally import recording  # noqa: E402


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((2, 4, 16), "float32"), w: R.Tensor((16, 16), "float32"), b: R.Tensor((16,), "float32")):
        with R.dataflow():
            mm = R.matmul(x, w)
            biased = R.add(mm, b)
            act = R.nn.gelu(biased)
            r = R.reshape(act, R.shape([2, 4, 2, 8]))
            y = R.permute_dims(r, [0, 2, 1, 3])
            R.output(y)
        return y


@I.ir_module
class Expected:
    @R.function(private=True)
    def fused_relax_matmul_relax_add_relax_nn_gelu_relax_reshape_relax_permute_dims(
        x: R.Tensor((2, 4, 16), "float32"), w: R.Tensor((16, 16), "float32"), b: R.Tensor((16,), "float32")
    ) -> R.Tensor((2, 2, 4, 8), "float32"):
        R.func_attr({"Composite": "autoglm.epilogue_layout", "Primitive": True})
        with R.dataflow():
            mm = R.matmul(x, w)
            biased = R.add(mm, b)
            act = R.nn.gelu(biased)
            r = R.reshape(act, R.shape([2, 4, 2, 8]))
            gv = R.permute_dims(r, [0, 2, 1, 3])
            R.output(gv)
        return gv

    @R.function
    def main(x: R.Tensor((2, 4, 16), "float32"), w: R.Tensor((16, 16), "float32"), b: R.Tensor((16,), "float32")):
        cls = Expected
        with R.dataflow():
            gv = cls.fused_relax_matmul_relax_add_relax_nn_gelu_relax_reshape_relax_permute_dims(x, w, b)
            R.output(gv)
        return gv


def test_structural_before_expected():
    with recording() as tally:
        after = fuse_epilogue()(Before)
    tvm.ir.assert_structural_equal(after, Expected)
    assert tally.rewrites == 1 and tally.declines == []


def test_counts_one_group_per_projection():
    """Two head-split projections of one input (Q and K): two groups."""

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((1, 8, 32), "float32"), wq: R.Tensor((32, 32), "float32"), wk: R.Tensor((32, 32), "float32")):
            with R.dataflow():
                q = R.matmul(x, wq)
                qr = R.reshape(q, R.shape([1, 8, 2, 16]))
                qt = R.permute_dims(qr, [0, 2, 1, 3])
                k = R.matmul(x, wk)
                kr = R.reshape(k, R.shape([1, 8, 2, 16]))
                kt = R.permute_dims(kr, [0, 2, 3, 1])
                y = R.matmul(qt, kt)
                R.output(y)
            return y

    with recording() as tally:
        after = fuse_epilogue()(Mod)
    assert tally.rewrites == 2 and tally.declines == []
    assert op_counts(after) == {"matmul": 1}  # the scores matmul; the projections moved into their groups


def test_rejects_intermediate_used_outside_and_names_it():
    """Branch (_check): an intermediate of the group (the bias output) has a consumer outside it."""

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((1, 8, 32), "float32"), w: R.Tensor((32, 32), "float32"), b: R.Tensor((32,), "float32")):
            with R.dataflow():
                mm = R.matmul(x, w)
                h = R.add(mm, b)
                r = R.reshape(h, R.shape([1, 8, 2, 16]))
                y = R.permute_dims(r, [0, 2, 1, 3])
                z = R.nn.relu(h)
                R.output(y, z)
            return (y, z)

    with recording() as tally:
        after = fuse_epilogue()(Mod)
    tvm.ir.assert_structural_equal(after, Mod)
    assert tally.rewrites == 0
    assert tally.declines == ["matmul mm: h also used outside the group, which would compute it twice"]


def test_no_layout_tail_is_not_a_candidate():
    """Pattern branch: matmul + bias + activation with no reshape/permute after it is FuseOps' job: untouched, no reason."""

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((2, 16), "float32"), w: R.Tensor((16, 8), "float32"), b: R.Tensor((8,), "float32")):
            with R.dataflow():
                mm = R.matmul(x, w)
                h = R.add(mm, b)
                y = R.nn.relu(h)
                R.output(y)
            return y

    with recording() as tally:
        after = fuse_epilogue()(Mod)
    tvm.ir.assert_structural_equal(after, Mod)
    assert tally.rewrites == 0 and tally.declines == []


def test_layout_tail_longer_than_six_keeps_the_rest_outside():
    """Limit branch: at most six layout ops join the group; the seventh stays in main."""

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((4, 8), "float32"), w: R.Tensor((8, 8), "float32")):
            with R.dataflow():
                mm = R.matmul(x, w)
                t1 = R.permute_dims(mm, [1, 0])
                t2 = R.permute_dims(t1, [1, 0])
                t3 = R.permute_dims(t2, [1, 0])
                t4 = R.permute_dims(t3, [1, 0])
                t5 = R.permute_dims(t4, [1, 0])
                t6 = R.permute_dims(t5, [1, 0])
                t7 = R.permute_dims(t6, [1, 0])
                R.output(t7)
            return t7

    with recording() as tally:
        after = fuse_epilogue()(Mod)
    assert tally.rewrites == 1
    assert op_counts(after) == {"permute_dims": 1}
    group = [f for gv, f in after.functions.items() if f.attrs is not None and f.attrs.get("Composite") == COMPOSITE_NAME][0]
    inner = []
    tvm.relax.analysis.post_order_visit(group.body, lambda e: isinstance(e, tvm.relax.Call) and inner.append(e.op.name))
    assert sorted(inner) == ["relax.matmul"] + ["relax.permute_dims"] * 6
