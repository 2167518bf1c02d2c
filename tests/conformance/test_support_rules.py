"""The per-op support rules: each refuses its case up front, in one line naming node, op, attribute/input/dtype and value."""

from __future__ import annotations

import numpy as np
import pytest
from _onnx_builders import make_model, value_info
from onnx import TensorProto, helper, numpy_helper

from tvm_autoglm import support_rules
from tvm_autoglm.errors import UnsupportedModelError
from tvm_autoglm.onnx_model import check_supported


def _model(node, inputs, opset=23):
    return make_model([node], [value_info(n, s, t) for n, t, s in inputs], {o: None for o in node.output if o}, opset=opset, ir_version=10)


F = TensorProto.FLOAT
QKV = [("q", F, [1, 2, 3, 4]), ("k", F, [1, 2, 3, 4]), ("v", F, [1, 2, 3, 4])]
BN_IN = [("x", F, [1, 3, 4, 4])] + [(n, F, [3]) for n in ("s", "b", "m", "var")]

# (refused node, its inputs, words the message must hold, the same node with an accepted value)
CASES = {
    "attention_nonpad": (helper.make_node("Attention", ["q", "k", "v", "", "", "", "n"], ["y"], name="att"), QKV + [("n", TensorProto.INT64, [1])],
                         ["'att'", "Attention", "nonpad_kv_seqlen"], helper.make_node("Attention", ["q", "k", "v"], ["y"], name="att")),
    "attention_window": (helper.make_node("Attention", ["q", "k", "v"], ["y"], name="att", left_window_size=2), QKV,
                         ["Attention", "left_window_size=2"], helper.make_node("Attention", ["q", "k", "v"], ["y"], name="att", left_window_size=-1)),
    "attention_right_window": (helper.make_node("Attention", ["q", "k", "v"], ["y"], name="att", right_window_size=0), QKV,
                               ["Attention", "right_window_size=0"], None),
    "batchnorm_training": (helper.make_node("BatchNormalization", ["x", "s", "b", "m", "var"], ["y"], name="bn", training_mode=1), BN_IN,
                           ["'bn'", "BatchNormalization", "training_mode=1"], helper.make_node("BatchNormalization", ["x", "s", "b", "m", "var"], ["y"], name="bn", training_mode=0)),
    "convtranspose_output_shape": (helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="ct", output_shape=[10, 8]), [("x", F, [1, 1, 3, 3]), ("w", F, [1, 2, 3, 3])],
                                   ["ConvTranspose", "output_shape=[10, 8]"], helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="ct")),
    "quantize_blocked": (helper.make_node("QuantizeLinear", ["x", "s"], ["y"], name="q", block_size=2, axis=1), [("x", F, [2, 4]), ("s", F, [2, 2])],
                         ["QuantizeLinear", "block_size=2"], helper.make_node("QuantizeLinear", ["x", "s"], ["y"], name="q", axis=1)),
    "dequantize_blocked": (helper.make_node("DequantizeLinear", ["x", "s"], ["y"], name="dq", block_size=2, axis=1), [("x", TensorProto.INT8, [2, 4]), ("s", F, [2, 2])],
                           ["DequantizeLinear", "block_size=2"], None),
    "pow_mixed": (helper.make_node("Pow", ["x", "e"], ["y"], name="pw"), [("x", F, [3]), ("e", TensorProto.INT64, [3])],
                  ["'pw'", "Pow", "float32 and int64"], None),
    "isinf_positive": (helper.make_node("IsInf", ["x"], ["y"], name="inf", detect_positive=0), [("x", F, [3])],
                       ["IsInf", "detect_positive=0"], helper.make_node("IsInf", ["x"], ["y"], name="inf", detect_positive=1)),
    "isinf_negative": (helper.make_node("IsInf", ["x"], ["y"], name="inf", detect_negative=0), [("x", F, [3])],
                       ["IsInf", "detect_negative=0"], None),
    "resize_antialias": (helper.make_node("Resize", ["x", "", "sc"], ["y"], name="rs", antialias=1), [("x", F, [1, 1, 4, 4]), ("sc", F, [4])],
                         ["Resize", "antialias=1"], None),
    "spacetodepth_crd": (helper.make_node("SpaceToDepth", ["x"], ["y"], name="s2d", blocksize=2, mode="CRD"), [("x", F, [1, 1, 4, 4])],
                         ["SpaceToDepth", "mode='CRD'"], helper.make_node("SpaceToDepth", ["x"], ["y"], name="s2d", blocksize=2)),
    "mod_float_fmod0": (helper.make_node("Mod", ["a", "b"], ["y"], name="m"), [("a", F, [3]), ("b", F, [3])],
                        ["Mod", "fmod=0", "float32"], helper.make_node("Mod", ["a", "b"], ["y"], name="m", fmod=1)),
    "maxpool_indices": (helper.make_node("MaxPool", ["x"], ["y", "idx"], name="mp", kernel_shape=[2, 2]), [("x", F, [1, 1, 4, 4])],
                        ["MaxPool", "Indices"], helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2])),
    "topk_uint64": (helper.make_node("TopK", ["x", "k"], ["v", "i"], name="tk"), [("x", TensorProto.UINT64, [5]), ("k", TensorProto.INT64, [1])],
                    ["TopK", "uint64"], None),
    "onehot_float_depth": (helper.make_node("OneHot", ["i", "d", "vals"], ["y"], name="oh"), [("i", TensorProto.INT64, [3]), ("d", F, [1]), ("vals", F, [2])],
                           ["OneHot", "input 1 dtype float32"], None),
    "shape_empty_slice": (helper.make_node("Shape", ["x"], ["y"], name="shp", start=2, end=1), [("x", F, [2, 3, 4])],
                          ["Shape", "start=2 end=1", "zero-size"], helper.make_node("Shape", ["x"], ["y"], name="shp", start=1, end=-1)),
    "pow_int_base": (helper.make_node("Pow", ["x", "e"], ["y"], name="pw"), [("x", TensorProto.INT32, [3]), ("e", TensorProto.INT32, [3])],
                     ["Pow", "input 0 dtype int32"], None),
    "reducemax_bool": (helper.make_node("ReduceMax", ["x"], ["y"], name="rm"), [("x", TensorProto.BOOL, [3])], ["ReduceMax", "bool"], None),
    "reducemin_bool": (helper.make_node("ReduceMin", ["x"], ["y"], name="rm"), [("x", TensorProto.BOOL, [3])], ["ReduceMin", "bool"], None),
    "resize_align_corners_fraction": (helper.make_node("Resize", ["x", "", "sc"], ["y"], name="rs", mode="linear", coordinate_transformation_mode="align_corners"),
                                      [("x", F, [1, 1, 5, 4])], ["'rs'", "Resize", "align_corners", "5 x 0.5 = 2.5 is not an integer"],
                                      helper.make_node("Resize", ["x", "", "up"], ["y"], name="rs", mode="linear", coordinate_transformation_mode="align_corners")),
    "resize_integer_linear": (helper.make_node("Resize", ["x", "", "up"], ["y"], name="rs", mode="linear"), [("x", TensorProto.INT32, [1, 1, 4, 4])],
                              ["'rs'", "Resize", "mode='linear' with a int32 input"], helper.make_node("Resize", ["x", "", "up"], ["y"], name="rs", mode="nearest")),
    "sinh": (helper.make_node("Sinh", ["x"], ["y"], name="sh"), [("x", F, [3])], ["Sinh", "tirx.sinh"], None),
    "cosh": (helper.make_node("Cosh", ["x"], ["y"], name="ch"), [("x", F, [3])], ["Cosh", "tirx.cosh"], None),
    "nonzero": (helper.make_node("NonZero", ["x"], ["y"], name="nz"), [("x", F, [3])], ["NonZero", "depends on the data"], None),
    "dropout_training": (helper.make_node("Dropout", ["x", "", "tm_true"], ["y"], name="do"), [("x", F, [3])],
                         ["'do'", "Dropout", "training_mode) is true"], helper.make_node("Dropout", ["x", "", "tm_false"], ["y"], name="do")),
    "dropout_training_input": (helper.make_node("Dropout", ["x", "", "tm"], ["y"], name="do"), [("x", F, [3]), ("tm", TensorProto.BOOL, [])],
                               ["Dropout", "training_mode) is not a constant"], None),
    "dropout_mask": (helper.make_node("Dropout", ["x"], ["y", "mask"], name="do"), [("x", F, [3])],
                     ["Dropout", "output 1 (mask) is used"], helper.make_node("Dropout", ["x"], ["y"], name="do")),
}

#: initializers the Resize cases read (scales / sizes are constants in exports)
_CONSTS = {"sc": np.array([1, 1, 0.5, 0.5], "float32"), "up": np.array([1, 1, 2, 2], "float32"),
           "sz": np.array([1, 1, 7, 8], "int64"), "sz2": np.array([1, 1, 4, 6], "int64"),
           "tm_true": np.array(True), "tm_false": np.array(False)}


def _with_constants(model):
    used = {name for node in model.graph.node for name in node.input}
    declared = {vi.name for vi in model.graph.input}
    for name, value in _CONSTS.items():
        if name in used and name not in declared:
            model.graph.initializer.append(numpy_helper.from_array(value, name))
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_refuses_in_one_line(case):
    node, inputs, words, accepted = CASES[case]
    with pytest.raises(UnsupportedModelError) as err:
        check_supported(_with_constants(_model(node, inputs)))
    text = err.value.one_line()
    assert "\n" not in text
    for word in words:
        assert word in text, (word, text)
    if accepted is not None:
        check_supported(_with_constants(_model(accepted, inputs)))  # the allowed value passes the same check


def test_every_rule_has_a_refusal_test():
    """A rule added to the table without a case above is untested."""
    covered = {CASES[c][0].op_type for c in CASES}
    assert set(support_rules.RULES) <= covered, set(support_rules.RULES) - covered


def test_add_rule_extends_the_check():
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    model = _model(node, [("x", F, [2])])
    check_supported(model)
    rule = support_rules.add_rule("Relu", lambda view: "input 0 is float32 (test rule)" if view.input_dtype(0) == "float32" else None)
    try:
        with pytest.raises(UnsupportedModelError, match=r"node 'r' \(Relu\): input 0 is float32 \(test rule\)"):
            check_supported(model)
    finally:
        support_rules.RULES["Relu"].remove(rule)
        if not support_rules.RULES["Relu"]:
            del support_rules.RULES["Relu"]
