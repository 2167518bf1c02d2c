"""Request decoding: JSON has no dtypes, so every lossy or impossible conversion must be refused by name."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tvm_autoglm.errors import InputError
from tvm_autoglm.serve import codec

SPECS = [{"name": "ids", "shape": [1, 3], "dtype": "int64"}, {"name": "x", "shape": [1, 2], "dtype": "float32"}]


def test_wrapped_and_bare_objects_decode_alike():
    wrapped = codec.decode(json.dumps({"inputs": {"ids": [[1, 2, 3]], "x": [[0.5, 1]]}}).encode(), "application/json", SPECS)
    bare = codec.decode(json.dumps({"ids": [[1, 2, 3]], "x": [[0.5, 1]]}).encode(), None, SPECS)
    for arrays in (wrapped, bare):
        assert arrays["ids"].dtype == np.int64 and arrays["ids"].tolist() == [[1, 2, 3]]
        assert arrays["x"].dtype == np.float32 and arrays["x"].tolist() == [[0.5, 1.0]]


def test_input_named_inputs_is_not_mistaken_for_the_wrapper():
    specs = [{"name": "inputs", "shape": [2], "dtype": "float32"}]
    assert codec.decode(b'{"inputs": [1, 2]}', None, specs)["inputs"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty request body"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"inputs": [1]}', '"inputs" must be a JSON object'),
        (b'{"inputs": {}, "extra": 1}', "unexpected top-level key(s) ['extra']"),
        (b'{"ids": [[1,2,3]], "x": [[1,2]], "y": 1}', "unknown input name(s) ['y']"),
        (b'{"ids": [[1,2,3]]}', "missing input(s) ['x']"),
        (b'{"ids": [[1.5,2,3]], "x": [[1,2]]}', "input 'ids' expects integers (int64)"),
        (b'{"ids": [[1,2],[3]], "x": [[1,2]]}', "input 'ids' is not a rectangular nested list"),
        (b'{"ids": [[1,2,3]], "x": [[1,"a"]]}', "input 'x' holds a value that is not a number or is too large (\"a\")"),
        (b'{"ids": [[1,2,3]], "x": [[1,null]]}', "input 'x' holds a value that is not a number or is too large (null)"),
        (b'{"ids": [[1,2,99999999999999999999999]], "x": [[1,2]]}', "too large (99999999999999999999999)"),
    ],
)
def test_bad_json_bodies_name_the_problem(body, fragment):
    with pytest.raises(InputError) as info:
        codec.decode(body, "application/json", SPECS)
    assert fragment in info.value.one_line()


def test_integer_range_is_checked_against_the_target_dtype():
    with pytest.raises(InputError, match=r"outside the uint8 range \[0, 255\]"):
        codec.to_array("pixels", [[0, 300]], "uint8")
    assert codec.to_array("pixels", [[0, 255.0]], "uint8").tolist() == [[0, 255]]


def test_booleans_accept_true_false_and_zero_one_only():
    assert codec.to_array("mask", [True, 0, 1], "bool").tolist() == [True, False, True]
    with pytest.raises(InputError, match="expects booleans"):
        codec.to_array("mask", [2], "bool")


def test_npz_bodies_keep_their_dtype_and_garbage_is_refused():
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.zeros((1, 3), "int32"), x=np.zeros((1, 2), "float32"))
    arrays = codec.decode(buffer.getvalue(), "application/x-npz", SPECS)
    assert arrays["ids"].dtype == np.int32  # the layout then refuses it with "expected int64"
    with pytest.raises(InputError, match="not a readable .npz"):
        codec.decode(b"PK garbage", "application/x-npz", SPECS)


def test_float32_outputs_round_trip_through_json_exactly():
    values = np.random.default_rng(0).standard_normal((4, 5)).astype("float32")
    decoded = np.asarray(json.loads(codec.encode_json({"y": values}))["outputs"]["y"], dtype="float32")
    np.testing.assert_array_equal(decoded, values)


def test_accept_header_picks_npz():
    assert codec.accepts_npz("application/json, application/x-npz;q=0.9")
    assert not codec.accepts_npz("application/json")
    assert not codec.accepts_npz(None)
