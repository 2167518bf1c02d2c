"""eliminate_transposes: permute_dims pairs compose or cancel; reshape chains collapse."""

from __future__ import annotations

import numpy as np
import tvm
from onnx import helper
from passes_helpers import assert_parity, import_model, make_model, op_counts
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_autoglm.passes.transpose_elimination import eliminate_transposes


def test_structural_compose_and_cancel():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3, 4, 5), "float32")):
            with R.dataflow():
                a = R.permute_dims(x, [0, 2, 1, 3])
                b = R.permute_dims(a, [0, 2, 1, 3])
                c = R.permute_dims(x, [0, 2, 3, 1])
                d = R.permute_dims(c, [0, 2, 1, 3])
                e = R.add(b, x)
                R.output(e, d)
            return (e, d)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 3, 4, 5), "float32")):
            with R.dataflow():
                d = R.permute_dims(x, [0, 3, 2, 1])
                e = R.add(x, x)
                R.output(e, d)
            return (e, d)

    tvm.ir.assert_structural_equal(eliminate_transposes()(Before), Expected)


def test_single_non_identity_transpose_is_left_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                a = R.permute_dims(x, [1, 0])
                R.output(a)
            return a

    tvm.ir.assert_structural_equal(eliminate_transposes()(Before), Before)


def test_onnx_transpose_pair_parity():
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 1, 3]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Transpose", ["a"], ["c"], perm=[0, 2, 1, 3]), helper.make_node("Add", ["c", "x"], ["y"])]
    model = make_model(nodes, {"x": [1, 4, 8, 16]}, {"y": [1, 4, 8, 16], "b": [1, 8, 4, 16]})
    before = import_model(model)
    mod = eliminate_transposes()(before)
    assert op_counts(before)["permute_dims"] == 2 and op_counts(mod)["permute_dims"] == 1
    assert_parity(mod, model, {"x": np.random.default_rng(0).standard_normal((1, 4, 8, 16)).astype("float32")})
