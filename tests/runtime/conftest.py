"""Artifacts for the lean-runtime tests, built once per session: the shared MLP as .so, a token model as .glm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from helpers import token_model

TOKEN_SHAPE = [2, 8]


@pytest.fixture(scope="session")
def token_glm(workdir) -> Path:
    import tvm_autoglm

    out = workdir / "runtime_tokens.glm"
    tvm_autoglm.compile(token_model(), input_shapes={"input_ids": TOKEN_SHAPE}).export(out)
    onnx.save(token_model(), workdir / "runtime_tokens.onnx")
    return out


@pytest.fixture(scope="session")
def token_inputs() -> dict:
    return {"input_ids": np.random.default_rng(5).integers(0, 50, size=TOKEN_SHAPE).astype("int64")}
