"""One dynamic build runs every shape in its range: parity with onnxruntime at several shapes.

Tolerances: fp32, rtol 1e-4 / atol 1e-5 (helpers.FP32_*), the same as the static builds' parity
tests; the references are onnxruntime on the original (unfolded) ONNX file.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import FP32_ATOL, FP32_RTOL, assert_close, ort_run
from onnx import TensorProto, helper, numpy_helper
from zoo_fixtures import zoo_build, zoo_dir  # noqa: F401  (fixtures)

import tvm_autoglm
from tvm_autoglm.errors import CompileError, InputError


def _text_inputs(seq: int, seed: int, batch: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[:, seq - seq // 4 :] = 0 if seq >= 4 else 1  # pad the last quarter, like the zoo's examples
    return {"input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64), "attention_mask": mask}


SEQ_RANGE = (1, 40)
TEXT_SHAPES = {"input_ids": [1, SEQ_RANGE], "attention_mask": [1, SEQ_RANGE]}


@pytest.fixture(scope="module")
def bert_dyn(zoo_build):  # noqa: F811
    path = zoo_build("bert", "dynamo", dynamic=True)
    return path, tvm_autoglm.compile(path, "cpu", 3, input_shapes=TEXT_SHAPES)


def test_bert_one_build_many_lengths(bert_dyn):
    path, model = bert_dyn
    assert model.manifest["symbolic_dims"] == {"seq": {"min": 1, "max": 40}}
    assert [s["shape"] for s in model.manifest["inputs"]] == [[1, "seq"], [1, "seq"]]
    assert model.manifest["outputs"][0]["shape"] == [1, "seq", 64]
    for seq in (1, 7, 16, 40):
        inputs = _text_inputs(seq, seed=seq)
        assert_close(model.run(**inputs), ort_run(path, inputs), FP32_RTOL, FP32_ATOL)


def test_bert_dynamic_build_keeps_attention_fusion(bert_dyn):
    """fuse_attention and fuse_ops handle the symbolic seq (the score matrix is seq x seq): one kernel per layer."""
    _, model = bert_dyn
    assert "fuse_attention" in model.manifest["passes"]
    attention = [k for k in model.kernels if "softmax" in k]
    assert attention and all("matmul" in k for k in attention), attention
    assert model.manifest["tuning"]["plain_kernels"] == 0


def test_out_of_range_is_refused_in_one_line(bert_dyn):
    _, model = bert_dyn
    with pytest.raises(InputError) as err:
        model.run(**_text_inputs(41, seed=0))
    assert str(err.value) == "input 'input_ids' dim 1 ('seq') is 41, outside the compiled range 1..40"


def test_manifest_round_trip_in_fresh_process(bert_dyn, tmp_path):
    """Export, then load with the lean runtime in a new interpreter and run two lengths."""
    path, model = bert_dyn
    so = model.export(tmp_path / "bert-dyn.so")
    manifest = json.loads(so.with_suffix(".json").read_text())
    assert manifest["symbolic_dims"] == {"seq": {"min": 1, "max": 40}}
    for seq in (3, 29):
        np.savez(tmp_path / f"in{seq}.npz", **_text_inputs(seq, seed=100 + seq))
    script = (
        "import sys, numpy as np\n"
        "from tvm_autoglm import runtime\n"
        f"s = runtime.load({str(so)!r})\n"
        "for n in (3, 29):\n"
        f"    out = s.run(dict(np.load({str(tmp_path)!r} + f'/in{{n}}.npz')))\n"
        f"    np.savez({str(tmp_path)!r} + f'/out{{n}}.npz', **out)\n"
        "try:\n"
        "    s.run(input_ids=np.zeros((1, 41), np.int64), attention_mask=np.zeros((1, 41), np.int64))\n"
        "except Exception as e:\n"
        "    print('REFUSED', type(e).__name__, e)\n"
        "print('onnx' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "REFUSED InputError input 'input_ids' dim 1 ('seq') is 41, outside the compiled range 1..40" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "False"  # the lean runtime did not import onnx
    for seq in (3, 29):
        inputs = dict(np.load(tmp_path / f"in{seq}.npz"))
        assert_close(dict(np.load(tmp_path / f"out{seq}.npz")), ort_run(path, inputs), FP32_RTOL, FP32_ATOL)


def test_gpt_neox_one_build_many_lengths(zoo_build):  # noqa: F811
    path = zoo_build("gpt-neox", "dynamo", dynamic=True)
    model = tvm_autoglm.compile(path, "cpu", 3, dynamic_dims={"seq": (2, 33)}, input_shapes={"input_ids": [1, (2, 33)], "attention_mask": [1, (2, 33)]})
    assert model.manifest["symbolic_dims"] == {"seq": {"min": 2, "max": 33}}
    for seq in (2, 9, 33):
        inputs = _text_inputs(seq, seed=seq)
        assert_close(model.run(**inputs), ort_run(path, inputs), FP32_RTOL, FP32_ATOL)


def test_graph_the_frontend_cannot_import_symbolically_is_refused(zoo_build):  # noqa: F811
    """torchscript's gpt-neox export does shape arithmetic TVM's frontend cannot keep symbolic: one line, not an ICE."""
    path = zoo_build("gpt-neox", "torchscript", dynamic=True)
    with pytest.raises(CompileError) as err:
        tvm_autoglm.compile(path, "cpu", 3, input_shapes=TEXT_SHAPES)
    assert "does not import with symbolic dims ['seq']" in str(err.value) and "--input-shape" in str(err.value)


def cnn_model(seed: int = 0) -> onnx.ModelProto:
    """conv3x3 -> relu -> maxpool -> grouped conv3x3 -> BN -> relu -> global pool -> dense, on [1, 3, height, width]."""
    rng = np.random.default_rng(seed)

    def init(name, shape, scale=0.2, shift=0.0):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale + shift).astype(np.float32), name)

    inits = [init("w1", (8, 3, 3, 3)), init("b1", (8,)), init("w2", (8, 4, 3, 3)), init("b2", (8,)), init("gamma", (8,)), init("beta", (8,)),
             init("mean", (8,)), numpy_helper.from_array((np.abs(rng.standard_normal(8)) + 0.5).astype(np.float32), "var"), init("fc", (8, 5)), init("fcb", (5,))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=2),
        helper.make_node("BatchNormalization", ["c2", "gamma", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["m"]),
        helper.make_node("Add", ["m", "fcb"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5]), helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 8, None, None])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_cnn_symbolic_height_and_width():
    model_proto = cnn_model()
    model = tvm_autoglm.compile(model_proto, "cpu", 3, dynamic_dims={"height": (4, 40), "width": (4, 40)})
    assert model.manifest["outputs"][1]["shape"] == [1, 8, "height // 2", "width // 2"]
    assert "fold_conv_bn" in model.manifest["passes"]
    for h, w in ((4, 4), (7, 9), (16, 16), (33, 40)):
        x = np.random.default_rng(h * w).standard_normal((1, 3, h, w)).astype(np.float32)
        assert_close(model.run(x=x), ort_run(model_proto, {"x": x}), FP32_RTOL, FP32_ATOL)
    with pytest.raises(InputError, match=r"dim 3 \('width'\) is 41, outside the compiled range 4..40"):
        model.run(x=np.zeros((1, 3, 8, 41), np.float32))


def test_static_build_manifest_is_unchanged(mlp_onnx):
    model = tvm_autoglm.compile(str(mlp_onnx), "cpu", 1)
    assert "symbolic_dims" not in model.manifest
    assert all(isinstance(d, int) for spec in model.manifest["inputs"] + model.manifest["outputs"] for d in spec["shape"])
