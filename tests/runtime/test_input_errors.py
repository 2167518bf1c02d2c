"""Session.run refuses inputs that do not match the manifest with an InputError naming the input and both shapes/dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_autoglm.errors import InputError


@pytest.fixture(scope="module")
def mlp_session(mlp_so):
    from tvm_autoglm.runtime import load

    return load(mlp_so)


@pytest.fixture(scope="module")
def token_session(token_glm):
    from tvm_autoglm.runtime import load

    return load(token_glm)


def test_unknown_input_name(mlp_session, mlp_inputs):
    with pytest.raises(InputError) as info:
        mlp_session.run({**mlp_inputs, "mask": np.ones((2, 16), "float32")})
    assert info.value.one_line() == "unknown input name(s) ['mask']; the model's inputs are ['x', 'scale']"


def test_missing_input(mlp_session, mlp_inputs):
    with pytest.raises(InputError) as info:
        mlp_session.run({"x": mlp_inputs["x"]})
    assert info.value.one_line() == "missing input(s) ['scale']; the model's inputs are ['x', 'scale']"


def test_wrong_shape(mlp_session, mlp_inputs):
    with pytest.raises(InputError) as info:
        mlp_session.run({**mlp_inputs, "x": np.zeros((3, 16), "float32")})
    assert info.value.one_line() == "input 'x' has shape 3x16, expected 2x16 (float32)"


def test_wrong_dtype(mlp_session, mlp_inputs, token_session, token_inputs):
    with pytest.raises(InputError) as info:
        mlp_session.run({**mlp_inputs, "x": mlp_inputs["x"].astype("float64")})
    assert info.value.one_line() == "input 'x' has dtype float64, expected float32 (shape float32[2x16])"
    with pytest.raises(InputError, match=r"input 'input_ids' has dtype int32, expected int64"):
        token_session.run(input_ids=token_inputs["input_ids"].astype("int32"))


def test_valid_inputs_still_run_after_errors(mlp_session, mlp_inputs):
    """A refused call leaves the session usable (the check happens before anything reaches the VM)."""
    outputs = mlp_session.run(mlp_inputs)
    np.testing.assert_allclose(outputs["probs"].sum(axis=-1), 1.0, rtol=1e-5)
