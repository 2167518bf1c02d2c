"""fold_static_shapes: shape subgraphs become constants, numerics and signature stay.

Parity on onnxruntime before/after folding: rtol 1e-5, atol 2e-6. Not exact
because folded subgraphs (rotary sin/cos, mask arithmetic) are evaluated by
numpy instead of ORT's kernels and ORT picks different fusions for a static
graph; differences seen are ~1e-6 absolute on values of magnitude ~3.
TVM vs onnxruntime: rtol 1e-4, atol 1e-5 (fp32).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _onnx_builders import make_model
from zoo_fixtures import SEQ, ort_outputs, zoo_build, zoo_dir  # noqa: F401  (fixtures)

from tvm_autoglm.errors import InputError, ModelLoadError
from tvm_autoglm.onnx_cleanup import fold_static_shapes, op_counts

SHAPE_OPS = ("Shape", "ConstantOfShape", "Expand", "Equal", "Unsqueeze", "Range")
ORT_RTOL, ORT_ATOL = 1e-5, 2e-6


def _from_onnx(model: onnx.ModelProto, shapes: dict):
    import tvm.relax.frontend.onnx  # noqa: F401  (not imported by tvm.relax)
    from tvm import relax

    return relax.frontend.onnx.from_onnx(model, shape_dict=shapes, keep_params_in_input=False)


def _tvm_outputs(model: onnx.ModelProto, shapes: dict, inputs: dict) -> list[np.ndarray]:
    import tvm
    from tvm import relax

    from tvm_autoglm.targets import load_target

    mod = relax.get_pipeline("zero")(_from_onnx(model, shapes))
    vm = relax.VirtualMachine(tvm.compile(mod, load_target("cpu").tvm_target()), tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(inputs[i.name]) for i in model.graph.input))
    return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]


def _signature(model: onnx.ModelProto):
    init = {t.name for t in model.graph.initializer}
    return (
        [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input if i.name not in init],
        [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output],
    )


def _assert_ort_parity(before, after, inputs):
    for a, b in zip(ort_outputs(before, inputs), ort_outputs(after, inputs), strict=True):
        np.testing.assert_allclose(b, a, rtol=ORT_RTOL, atol=ORT_ATOL)


def _zoo(name, size="tiny", seq=SEQ, batch=1, seed=0):
    from tvm_autoglm import zoo

    return zoo.input_shapes(name, size, seq, batch), zoo.example_inputs(name, size, seq, batch, seed)


# --- torch exports of the zoo -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bert", "gpt-neox"])
def test_torchscript_static_export_needs_folding(zoo_build, name):
    """TorchScript builds masks from ConstantOfShape(Shape(x)); TVM's converter fails on it raw."""
    model = onnx.load(str(zoo_build(name, "torchscript")))
    shapes, inputs = _zoo(name)
    before = op_counts(model)
    assert before["Shape"] >= 2 and before["ConstantOfShape"] >= 2
    with pytest.raises(Exception, match="broadcast_to"):
        _from_onnx(model, shapes)

    folded = fold_static_shapes(model, shapes)
    after = op_counts(folded)
    assert all(after.get(op, 0) == 0 for op in SHAPE_OPS), after
    assert sum(after.values()) < sum(before.values()) - 20
    assert after["MatMul"] == before["MatMul"] and after["Softmax"] == before["Softmax"]  # the compute stays
    assert _signature(folded) == _signature(model)
    _assert_ort_parity(model, folded, inputs)
    _from_onnx(folded, shapes)


@pytest.mark.parametrize(
    "name,exporter,error",
    [
        ("bert", "torchscript", "broadcast_to"),
        ("bert", "dynamo", "Reshape expects the input tensor to have known shape"),
        ("gpt-neox", "dynamo", "Slice requires a statically known input rank"),
    ],
)
def test_dynamic_axes_export_folds_for_any_static_shape(zoo_build, name, exporter, error):
    """Published models have symbolic batch/sequence; pinning them must make the graph fully static."""
    model = onnx.load(str(zoo_build(name, exporter, dynamic=True)))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "seq"]
    assert op_counts(model)["Shape"] >= 1
    for batch, seq in [(1, 8), (3, 24)]:
        shapes, inputs = _zoo(name, seq=seq, batch=batch)
        with pytest.raises(Exception, match=error):
            _from_onnx(model, shapes)
        folded = fold_static_shapes(model, shapes)
        assert all(op_counts(folded).get(op, 0) == 0 for op in SHAPE_OPS)
        assert [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in folded.graph.input] == [[batch, seq]] * 2
        assert _signature(folded) == _signature(model)
        _assert_ort_parity(model, folded, inputs)
        _from_onnx(folded, shapes)


def test_dynamic_bert_compiles_and_matches_onnxruntime(zoo_build):
    model = onnx.load(str(zoo_build("bert", "torchscript", dynamic=True)))
    shapes, inputs = _zoo("bert", seq=12, batch=2)
    folded = fold_static_shapes(model, shapes)
    for got, want in zip(_tvm_outputs(folded, shapes, inputs), ort_outputs(model, inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_static_resnet_is_left_as_is(zoo_build, exporter):
    """Nothing to fold in a static conv net: same ops, same numbers (folding is not a rewriter)."""
    model = onnx.load(str(zoo_build("resnet50", exporter)))
    shapes, inputs = _zoo("resnet50")
    folded = fold_static_shapes(model, shapes)
    assert op_counts(folded) == op_counts(model)
    for a, b in zip(ort_outputs(model, inputs), ort_outputs(folded, inputs), strict=True):
        np.testing.assert_array_equal(a, b)
    _from_onnx(model, shapes)  # already static: imports before and after
    _from_onnx(folded, shapes)


# --- another architecture family: GPT-2 (learned positions, Conv1D, causal mask) ----------------


@pytest.fixture(scope="module")
def gpt2_dynamic(tmp_path_factory):
    """Tiny random GPT-2 exported by TorchScript with dynamic batch/sequence axes."""
    torch = pytest.importorskip("torch")
    from transformers import GPT2Config, GPT2Model

    from tvm_autoglm.zoo._torch import export, randomize_1d, seeded

    with seeded(7):
        inner = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=300, n_positions=64, use_cache=False))
    randomize_1d(inner, 7)

    class GPT2(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

    path = tmp_path_factory.mktemp("gpt2") / "gpt2.onnx"
    args = (torch.randint(0, 300, (2, 16)), torch.ones(2, 16, dtype=torch.int64))
    axes = {n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask")}
    export(GPT2().eval(), args, ["input_ids", "attention_mask"], ["last_hidden_state"], "torchscript", path, dynamic_axes=axes)
    return onnx.load(str(path))


def test_other_family_gpt2_folds_imports_and_matches(gpt2_dynamic):
    rng = np.random.default_rng(0)
    shapes = {"input_ids": [1, 10], "attention_mask": [1, 10]}
    mask = np.ones((1, 10), np.int64)
    mask[:, 8:] = 0
    inputs = {"input_ids": rng.integers(0, 300, (1, 10), dtype=np.int64), "attention_mask": mask}
    with pytest.raises(Exception):
        _from_onnx(gpt2_dynamic, shapes)
    folded = fold_static_shapes(gpt2_dynamic, shapes)
    assert op_counts(gpt2_dynamic)["Shape"] > 0 and op_counts(folded).get("Shape", 0) == 0
    _assert_ort_parity(gpt2_dynamic, folded, inputs)
    for got, want in zip(_tvm_outputs(folded, shapes, inputs), ort_outputs(gpt2_dynamic, inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# --- hand-built graphs: the exact idioms, no torch needed ----------------------------------------


def _dynamic_pad_model() -> onnx.ModelProto:
    """x[N, C] -> Pad with pads computed from Shape(x) (torch's F.pad on a dynamic dim) -> Reshape(Shape)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["c"], axis=0),  # C, a scalar
        helper.make_node("Sub", ["target", "c"], ["missing"]),
        helper.make_node("Unsqueeze", ["missing", "zero1"], ["missing1"]),
        helper.make_node("Concat", ["zeros3", "missing1"], ["pads"], axis=0),  # [0, 0, 0, target - C]
        helper.make_node("Pad", ["x", "pads"], ["padded"]),
        helper.make_node("Shape", ["padded"], ["ps"]),
        helper.make_node("Reshape", ["padded", "ps"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array(8, np.int64), "target"),
        numpy_helper.from_array(np.array([0], np.int64), "zero1"),
        numpy_helper.from_array(np.zeros(3, np.int64), "zeros3"),
    ]
    return make_model(nodes, {"x": ["N", "C"]}, {"y": ["N", 8]}, inits, name="dynamic_pad", ir_version=onnx.IR_VERSION)


def test_computed_pads_become_constant():
    model = _dynamic_pad_model()
    shapes = {"x": [2, 5]}
    # TVM turns Shape(x) into a ShapeExpr that Gather/Sub cannot consume.
    with pytest.raises(Exception, match="cannot handle ShapeExpr inputs"):
        _from_onnx(model, shapes)
    folded = fold_static_shapes(model, shapes)
    assert op_counts(folded) == {"Pad": 1}  # Reshape to its own (now known) shape is a no-op
    assert [o.name for o in folded.graph.output] == ["y"]
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    (y,) = ort_outputs(folded, {"x": x})
    np.testing.assert_array_equal(y, np.pad(x, ((0, 0), (0, 3))))
    _from_onnx(folded, shapes)


def test_initializers_listed_as_inputs_are_weights():
    """Old exports (keep_initializers_as_inputs) list weights as inputs; they must still fold."""
    model = _dynamic_pad_model()
    model.graph.input.extend([helper.make_tensor_value_info("target", TensorProto.INT64, [])])
    folded = fold_static_shapes(model, {"x": [2, 5]})
    assert [i.name for i in folded.graph.input] == ["x"]
    assert "Sub" not in op_counts(folded)


def test_input_is_not_modified():
    model = _dynamic_pad_model()
    snapshot = model.SerializeToString()
    fold_static_shapes(model, {"x": [2, 5]})
    assert model.SerializeToString() == snapshot


def test_bad_shapes_are_clean_errors():
    model = _dynamic_pad_model()
    with pytest.raises(InputError, match="'y'.*not graph inputs"):
        fold_static_shapes(model, {"y": [2, 8]})
    with pytest.raises(InputError, match="rank 2"):
        fold_static_shapes(model, {"x": [2, 5, 1]})
    with pytest.raises(InputError, match="non-positive"):
        fold_static_shapes(model, {"x": [0, 5]})
    with pytest.raises(ModelLoadError, match="ModelProto"):
        fold_static_shapes(b"not a model", {"x": [2, 5]})
