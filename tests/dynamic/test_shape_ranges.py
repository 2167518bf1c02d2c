"""Parsing and resolving dynamic dims (shape_ranges), and the runtime's range check: no compiling here."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tvm_autoglm.errors import AutoGLMError, InputError
from tvm_autoglm.shape_ranges import parse_input_shapes
from tvm_autoglm.runtime.inputs import example_inputs, validate_inputs
from tvm_autoglm.shape_ranges import parse_dynamic_dims, resolve


def _model(ids=("batch", "seq"), mask=("batch", "seq")):
    """Two int64 inputs with the given dims (names or sizes) added together."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["input_ids", "attention_mask"], ["y"])],
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, list(ids)), helper.make_tensor_value_info("attention_mask", TensorProto.INT64, list(mask))],
        [helper.make_tensor_value_info("y", TensorProto.INT64, list(ids))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_input_shape_ranges_parse():
    assert parse_input_shapes(["input_ids:1x1..512"]) == {"input_ids": [1, (1, 512)]}
    assert parse_input_shapes(["input_ids:1..32x1..512"]) == {"input_ids": [(1, 32), (1, 512)]}
    assert parse_input_shapes(["x:2x128"]) == {"x": [2, 128]}  # static stays as it was


@pytest.mark.parametrize("item", ["x:1x5..2", "x:1x0..4", "x:1x1..", "x:1x..8", "x:1xa..b"])
def test_bad_input_shape_range_is_refused(item):
    with pytest.raises(AutoGLMError, match="bad"):
        parse_input_shapes([item])


def test_dynamic_dim_parse_and_refusals():
    assert parse_dynamic_dims(["seq=1..512", "batch=1..8"]) == {"seq": (1, 512), "batch": (1, 8)}
    for item in ["seq", "seq=512", "seq=9..3", "1x=1..2"]:
        with pytest.raises(AutoGLMError, match="--dynamic-dim"):
            parse_dynamic_dims([item])


def test_named_range_is_shared_by_inputs_with_that_dim():
    specs, ranges = resolve(_model(), {"input_ids": [1, (1, 64)], "attention_mask": [1, (1, 64)]})
    assert [s.shape for s in specs] == [(1, "seq"), (1, "seq")]
    assert ranges == {"seq": (1, 64)}
    specs, ranges = resolve(_model(), {"input_ids": [2, (3, 9)], "attention_mask": [2, (3, 9)]})
    assert ranges == {"seq": (3, 9)}
    specs, ranges = resolve(_model(), {}, {"seq": (1, 16), "batch": (1, 4)})
    assert [s.shape for s in specs] == [("batch", "seq"), ("batch", "seq")]
    assert ranges == {"seq": (1, 16), "batch": (1, 4)}


def test_unnamed_dim_range_gets_its_own_symbol():
    specs, ranges = resolve(_model(ids=(1, "?"), mask=(1, 1)), {"input_ids": [1, (2, 5)]})
    assert specs[0].shape == (1, "input_ids_d1") and ranges == {"input_ids_d1": (2, 5)}


def test_static_build_resolves_as_before():
    specs, ranges = resolve(_model(), {"input_ids": [1, 8], "attention_mask": [1, 8]})
    assert ranges == {} and [s.shape for s in specs] == [(1, 8), (1, 8)]


@pytest.mark.parametrize(
    "shapes, needle",
    [
        ({"input_ids": [1, (1, 64)], "attention_mask": [1, (1, 32)]}, "two ranges"),  # one symbol, two ranges
        ({"input_ids": [1, (1, 64)], "attention_mask": [1, 16]}, "is the range 1..64 elsewhere"),  # pinned here, range there
        ({"input_ids": [1, (1, 64)]}, "dim 0 ('batch') is dynamic"),  # batch of attention_mask left open
        ({"input_ids": [1, (1, 64), 3], "attention_mask": [1, (1, 64)]}, "rank 3 given"),
        ({"nope": [1, (1, 64)]}, "unknown input"),
        ({"input_ids": [1, (1, 64, 3)], "attention_mask": [1, 1]}, "(min, max) pair"),
    ],
)
def test_inconsistent_ranges_are_refused(shapes, needle):
    with pytest.raises(InputError) as err:
        resolve(_model(), shapes)
    assert needle in str(err.value)


def test_range_on_a_fixed_dim_is_refused():
    with pytest.raises(InputError, match="fixed to 8"):
        resolve(_model(ids=(1, 8), mask=(1, 8)), {"input_ids": [1, (1, 64)]})


def test_dynamic_dim_naming_no_dim_is_refused():
    with pytest.raises(InputError, match="no input declares"):
        resolve(_model(), {"input_ids": [1, 4], "attention_mask": [1, 4]}, {"sequence": (1, 8)})


SPECS = [{"name": "input_ids", "shape": [1, "seq"], "dtype": "int64"}, {"name": "attention_mask", "shape": [1, "seq"], "dtype": "int64"}]
RANGES = {"seq": {"min": 2, "max": 16}}


def test_runtime_accepts_any_length_in_range():
    for n in (2, 7, 16):
        arrays = validate_inputs({"input_ids": np.zeros((1, n), np.int64), "attention_mask": np.ones((1, n), np.int64)}, SPECS, None, RANGES)
        assert [a.shape for a in arrays] == [(1, n), (1, n)]


@pytest.mark.parametrize(
    "ids, mask, needle",
    [
        ((1, 17), (1, 17), "input 'input_ids' dim 1 ('seq') is 17, outside the compiled range 2..16"),
        ((1, 1), (1, 1), "is 1, outside the compiled range 2..16"),
        ((1, 4), (1, 5), "'attention_mask' dim 1 ('seq') is 5 but input 'input_ids' dim 1 ('seq') is 4"),
        ((2, 4), (2, 4), "dim 0 is 2, expected 1"),
        ((4,), (4,), "expected rank 2"),
    ],
)
def test_runtime_refuses_out_of_range_or_mismatched(ids, mask, needle):
    with pytest.raises(InputError) as err:
        validate_inputs({"input_ids": np.zeros(ids, np.int64), "attention_mask": np.zeros(mask, np.int64)}, SPECS, None, RANGES)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_example_inputs_pick_a_size_in_range():
    inputs = example_inputs(SPECS, symbolic_dims=RANGES)
    assert inputs["input_ids"].shape == (1, 16)  # 128 clamped into 2..16


def test_dynamic_dims_entry_must_be_a_range():
    with pytest.raises(InputError, match=r"dynamic_dims\['seq'\]: a range is a \(min, max\) pair of ints, got 5"):
        resolve(_model(), {}, {"seq": 5})
