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
