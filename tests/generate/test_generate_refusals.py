"""Models a generator cannot be built from are refused up front, in one line naming the input and what was expected."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tvm_autoglm.errors import AutoGLMError, CompileError, UnsupportedModelError


def _cache_model(present_node, extra_outputs=()) -> onnx.ModelProto:
    """A one-layer toy with the cache layout; ``present_node(kind)`` makes present.0.<kind> from past_key_values.0.<kind>."""
    nodes = [helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["ids_f", "axis"], ["logits"]),
             helper.make_node("Unsqueeze", ["ids_f", "axes13"], ["ids_4d"]),
             helper.make_node("Expand", ["ids_4d", "kv_shape"], ["new_key"]),
             helper.make_node("Neg", ["new_key"], ["new_value"])]
    for kind in ("key", "value"):
        nodes.append(present_node(kind))
    nodes += [helper.make_node("Identity", [src], [dst]) for src, dst in extra_outputs]
    past = [helper.make_tensor_value_info(f"past_key_values.0.{k}", TensorProto.FLOAT, ["b", 2, "p", 4]) for k in ("key", "value")]
    graph = helper.make_graph(
        nodes, "toy",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "t"]),
         helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["b", "s"]), *past],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None),
         *[helper.make_tensor_value_info(f"present.0.{k}", TensorProto.FLOAT, None) for k in ("key", "value")],
         *[helper.make_tensor_value_info(dst, TensorProto.FLOAT, None) for _, dst in extra_outputs]],
        [onnx.numpy_helper.from_array(np.array([2], np.int64), "axis"), onnx.numpy_helper.from_array(np.array([1, 3], np.int64), "axes13"),
         onnx.numpy_helper.from_array(np.array([1, 2, 1, 4], np.int64), "kv_shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _concat(axis):
    return lambda kind: helper.make_node("Concat", [f"past_key_values.0.{kind}", f"new_{kind}"], [f"present.0.{kind}"], axis=axis)


def _compile(model):
    import tvm_autoglm

    return tvm_autoglm.compile(model, generate=True, max_context=8, prefill_chunk=0)


def _one_line(err) -> str:
    text = err.one_line()
    assert "\n" not in text
    return text


def test_toy_with_a_proper_concat_compiles():
    """The toy is a valid generator (so the refusals below are about the one thing each changes)."""
    model = _compile(_cache_model(_concat(2)))
    assert model.manifest["generator"]["cache"]["past"] == [["past_key_values.0.key", "past_key_values.0.value"]]


@pytest.mark.parametrize("present,extra,error,needle", [
    (lambda kind: helper.make_node("Concat", [f"past_key_values.0.{kind}"] * 2, [f"present.0.{kind}"], axis=1), (), CompileError,
     "concatenated on axis 1, expected the sequence axis 2"),
    (lambda kind: helper.make_node("Relu", [f"past_key_values.0.{kind}"], [f"present.0.{kind}"]), (), CompileError,
     "'past_key_values_0_key' does not feed a concat(past, new, axis=2)"),
    (_concat(2), (("past_key_values.0.key", "leak"),), CompileError, "'past_key_values_0_key' has 2 uses"),
])
def test_cache_inputs_the_rewrite_cannot_prove_safe_are_refused(present, extra, error, needle):
    with pytest.raises(error) as info:
        _compile(_cache_model(present, extra))
    assert needle in _one_line(info.value)


def _renamed(model, old, new):
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    return model


@pytest.mark.parametrize("old,new,needle", [
    ("position_ids", "pos", "needs a 'position_ids' input"),
    ("attention_mask", "mask", "needs an input named 'attention_mask'"),
    ("logits", "scores", "needs an output named 'logits'"),
    ("past_key_values.0.value", "past_key_values.0.v", "cache input of layer 0 has ['key'], expected key and value"),
    ("present.0.value", "present.0.v", "cache output of layer 0 has ['key'], expected key and value"),
])
def test_models_without_the_cache_layout_are_refused(old, new, needle):
    with pytest.raises(UnsupportedModelError) as info:
        _compile(_renamed(_cache_model(_concat(2)), old, new))
    assert needle in _one_line(info.value)


def test_a_model_without_cache_inputs_is_refused(mlp_onnx):
    with pytest.raises(UnsupportedModelError) as info:
        _compile(str(mlp_onnx))
    assert "generation needs an input named 'input_ids'" in _one_line(info.value)


def test_layers_must_be_numbered_from_zero():
    from tvm_autoglm.generate.layout import detect

    model = _renamed(_renamed(_cache_model(_concat(2)), "past_key_values.0.key", "past_key_values.1.key"),
                     "past_key_values.0.value", "past_key_values.1.value")
    with pytest.raises(UnsupportedModelError, match=r"layers \[1\] are not numbered 0..0"):
        detect(model)


def test_custom_name_patterns_are_honoured():
    from tvm_autoglm.generate.layout import detect

    model = _renamed(_renamed(_cache_model(_concat(2)), "past_key_values.0.key", "cache_k_0"), "past_key_values.0.value", "cache_v_0")
    with pytest.raises(UnsupportedModelError, match="no cache input matches"):
        detect(model)
    layout = detect(model, past_pattern=r"cache_(?P<kind>k|v)_(?P<layer>\d+)")
    assert layout.past == [("cache_k_0", "cache_v_0")]


@pytest.mark.parametrize("max_context", [1, 10**6])
def test_max_context_out_of_range_is_refused(max_context):
    with pytest.raises(AutoGLMError, match="--max-context must be in"):
        import tvm_autoglm

        tvm_autoglm.compile(_cache_model(_concat(2)), generate=True, max_context=max_context)


def test_sampling_arguments_are_checked():
    from tvm_autoglm.generate.sampling import SamplingConfig

    for kwargs, needle in [(dict(do_sample=True, temperature=0.0), "temperature"), (dict(top_k=-1), "top_k"), (dict(top_p=0.0), "top_p")]:
        with pytest.raises(AutoGLMError, match=needle):
            SamplingConfig(**kwargs)


def test_position_table_check():
    from tvm_autoglm.generate.build import check_position_table
    from tvm_autoglm.generate.layout import detect

    layout = detect(_cache_model(_concat(2)))
    ranges = {"position_ids": {"min": -16, "max": 15, "source": "Gather on wpe"}}
    check_position_table(ranges, layout, 16, "toy")
    check_position_table({}, layout, 10**4, "toy")  # positions computed (RoPE), no table
    with pytest.raises(AutoGLMError, match="--max-context 17 exceeds the 16 positions of toy"):
        check_position_table(ranges, layout, 17, "toy")


@pytest.mark.slow  # a 2049-slot compile (~1 min on 2 busy cores); test_position_table_check is the fast version
def test_max_context_beyond_the_position_table_is_refused(lm_onnx):
    """GPT-2 has 2048 learned positions: a 2049-slot cache would index past the table."""
    import tvm_autoglm

    with pytest.raises(AutoGLMError) as info:
        tvm_autoglm.compile(lm_onnx("gpt2"), generate=True, max_context=2049, prefill_chunk=0)
    assert "--max-context 2049 exceeds the 2048 positions" in _one_line(info.value)
