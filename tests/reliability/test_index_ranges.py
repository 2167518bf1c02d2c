"""Token ids outside the embedding table are refused before the (unchecked) compiled Gather runs.

TVM lowers ONNX Gather to an unchecked load: before these checks, id 10**6 into a
tiny BERT segfaulted the process (exit 139) where onnxruntime raises. The manifest
records ``index_ranges`` ([-rows, rows-1], ONNX's range: the frontend wraps negative
ids) and every entry point refuses values outside them with one line.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _onnx_builders import make_model
from helpers import assert_clean_error, cli, token_model
from tvm_autoglm.errors import InputError
from tvm_autoglm.index_ranges import index_ranges, unchecked_gathers
from tvm_autoglm.runtime.inputs import check_index_ranges, example_inputs
from zoo_fixtures import SEQ, ort_outputs, zoo_build, zoo_dir  # noqa: F401  (fixtures)

VOCAB = 1000  # the zoo's tiny text models


def _graph(nodes, inputs, inits, outputs):
    return make_model(nodes, inputs, outputs, inits)  # analysed, never run: outputs carry no shapes


def _table(name, rows, cols=4):
    return numpy_helper.from_array(np.zeros((rows, cols), "float32"), name)


def test_direct_gather_on_an_initializer():
    assert index_ranges(token_model(vocab=50)) == {
        "input_ids": {"min": -50, "max": 49, "source": "Gather on embedding (axis 0, 50 rows)"}
    }


def test_through_cast_and_unsqueeze_and_two_tables_intersect():
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])
    axes = numpy_helper.from_array(np.array([0], "int64"), "axes")
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Unsqueeze", ["ids32", "axes"], ["ids3"]),
        helper.make_node("Gather", ["big", "ids3"], ["a"]),
        helper.make_node("Gather", ["small", "ids"], ["b"]),
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b")]
    ranges = index_ranges(_graph(nodes, [ids], [_table("big", 30), _table("small", 10), axes], outputs))
    assert ranges["ids"]["min"] == -10 and ranges["ids"]["max"] == 9
    assert ranges["ids"]["source"] == "Gather on big (axis 0, 30 rows); Gather on small (axis 0, 10 rows)"


def test_axis_constant_node_and_gather_elements():
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [4, 2])
    const = helper.make_node(
        "Constant", [], ["table"], value=numpy_helper.from_array(np.zeros((4, 7), "float32"), "t")
    )
    nodes = [const, helper.make_node("GatherElements", ["table", "ids"], ["out"], axis=-1)]
    ranges = index_ranges(_graph(nodes, [ids], [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]))
    assert ranges == {"ids": {"min": -7, "max": 6, "source": "GatherElements on table (axis 1, 7 rows)"}}


def test_computed_indices_and_tables_are_not_ranged_but_noted():
    """Indices that are arithmetic on an input, or a table that is itself computed, get no range (we cannot
    know it); gathers whose indices are computed from inputs are listed for the manifest notes."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [3])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 4])
    one = numpy_helper.from_array(np.array(1, "int64"), "one")
    nodes = [
        helper.make_node("Add", ["ids", "one"], ["shifted"]),
        helper.make_node("Gather", ["emb", "shifted"], ["a"], name="shifted_gather"),
        helper.make_node("Gather", ["x", "ids"], ["b"], name="dynamic_table"),
        helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["idsf"], ["idsi"], to=TensorProto.INT64),
        helper.make_node("Gather", ["emb", "idsi"], ["c"], name="via_float"),
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b", "c")]
    model = _graph(nodes, [ids, x], [_table("emb", 8), one], outputs)
    assert index_ranges(model) == {}
    assert unchecked_gathers(model) == ["Gather 'shifted_gather'", "Gather 'via_float'"]


def test_check_is_refused_with_value_position_and_range():
    ranges = {"ids": {"min": -5, "max": 4, "source": "Gather on t (axis 0, 5 rows)"}}
    check_index_ranges({"ids": np.array([[0, 4], [-5, 3]], "int64")}, ranges)  # the bounds themselves pass
    check_index_ranges({"ids": np.array([7, 9], "uint64")}, {"ids": {"min": -10, "max": 9}})
    with pytest.raises(InputError) as info:
        check_index_ranges({"ids": np.array([[0, 1], [5, -9]], "int32")}, ranges)
    assert info.value.one_line() == (
        "input 'ids' has value 5 at position [1, 0], outside the valid range [-5, 4] set by Gather on t (axis 0, 5 rows)"
    )
    with pytest.raises(InputError, match=r"value -6 at position \[2\]"):
        check_index_ranges({"ids": np.array([1, 2, -6], "int64")}, ranges)


def test_example_inputs_stay_inside_small_tables():
    specs = [{"name": "input_ids", "shape": [4, 64], "dtype": "int64"}]
    ids = example_inputs(specs, index_ranges={"input_ids": {"min": -7, "max": 6}})["input_ids"]
    assert ids.min() >= 0 and ids.max() <= 6
    assert example_inputs(specs)["input_ids"].max() > 6  # unchanged without ranges (ids below 100)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name, table", [("bert", "word_embeddings"), ("gpt-neox", "embed_in")])
def test_zoo_text_models_range_their_token_ids(zoo_build, name, table, exporter):
    ranges = index_ranges(onnx.load(zoo_build(name, exporter)))
    assert list(ranges) == ["input_ids"]  # attention_mask indexes no table
    assert (ranges["input_ids"]["min"], ranges["input_ids"]["max"]) == (-VOCAB, VOCAB - 1)
    assert table in ranges["input_ids"]["source"]


def test_zoo_resnet_has_no_index_inputs(zoo_build):
    model = onnx.load(zoo_build("resnet50", "dynamo"))
    assert index_ranges(model) == {} and unchecked_gathers(model) == []


# --- end to end: compile once through the CLI, refuse through the CLI and the API ---------------------------------


@pytest.fixture(scope="module")
def bert_cli(zoo_build, tmp_path_factory):
    """(artifact, compile stderr, onnx path) of the tiny BERT compiled by ``auto-glm compile``."""
    model = zoo_build("bert", "dynamo")
    out = tmp_path_factory.mktemp("index_ranges") / "bert.so"
    result = cli("compile", "--model", model, "--output", out, check=True)
    return out, result.stderr, model


def _bert_inputs(ids: list[int]) -> dict:
    input_ids = np.array([ids + [7] * (SEQ - len(ids))], "int64")
    return {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}


def test_compile_records_range_and_drops_the_fast_take_warning(bert_cli):
    out, stderr, _ = bert_cli
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["index_ranges"] == {
        "input_ids": {"min": -VOCAB, "max": VOCAB - 1, "source": f"Gather on inner.embeddings.word_embeddings.weight (axis 0, {VOCAB} rows)"}
    }
    assert "[compile] fusion" in stderr  # the stage log is still there
    assert "Fast mode segfaults" not in stderr


@pytest.mark.parametrize("bad, position", [(10**6, 3), (VOCAB, 0), (-VOCAB - 1, 2)])
def test_execute_refuses_out_of_range_ids_with_exit_2(bert_cli, tmp_path, bad, position):
    out, _, _ = bert_cli
    ids = [101, 5, 6, 7]
    ids[position] = bad
    np.savez(tmp_path / "bad.npz", **_bert_inputs(ids))
    result = cli("execute", "--binary", out, "--input", tmp_path / "bad.npz")
    assert result.returncode == 2, result.stderr[-2000:]  # not 139 (SIGSEGV) as before the check
    line = assert_clean_error(result, "'input_ids'", f"value {bad} at position [0, {position}]", f"[-{VOCAB}, {VOCAB - 1}]")
    assert line.startswith("auto-glm: error: input 'input_ids' has value")


def test_api_refuses_and_valid_ids_match_onnxruntime(bert_cli):
    import tvm_autoglm

    out, _, model = bert_cli
    compiled = tvm_autoglm.load(out)
    for bad in (VOCAB, -VOCAB - 1):
        with pytest.raises(InputError) as info:
            compiled.run(_bert_inputs([101, bad]))
        assert info.value.one_line() == (
            f"input 'input_ids' has value {bad} at position [0, 1], outside the valid range [-{VOCAB}, {VOCAB - 1}] "
            f"set by Gather on inner.embeddings.word_embeddings.weight (axis 0, {VOCAB} rows)"
        )
    # The edges of the table, negative ids included (onnxruntime wraps them; so does the frontend).
    inputs = _bert_inputs([0, VOCAB - 1, -1, -VOCAB, 101])
    got = compiled.run(inputs)
    for name, want in zip(got, ort_outputs(model, inputs)):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_gpt_neox_manifest_and_api(zoo_build):
    import tvm_autoglm

    model = zoo_build("gpt-neox", "dynamo")
    compiled = tvm_autoglm.compile(model)
    assert compiled.manifest["index_ranges"]["input_ids"]["max"] == VOCAB - 1
    assert list(compiled.manifest["index_ranges"]) == ["input_ids"]
    ids = np.arange(SEQ, dtype="int64")[None, :] * 61 % VOCAB
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    got = compiled.run(inputs)
    for name, want in zip(got, ort_outputs(model, inputs)):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4, err_msg=name)
    with pytest.raises(InputError, match=rf"input 'input_ids' has value {VOCAB} at position \[0, 5\]"):
        compiled.run({**inputs, "input_ids": np.where(np.arange(SEQ) == 5, VOCAB, ids)})
