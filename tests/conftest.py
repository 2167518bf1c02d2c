"""Shared fixtures. Built artifacts are cached per session: compiling is the slow part."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest


from helpers import mlp_model, token_model  # noqa: E402

# A schedule rule that raises (or whose schedule does not lower) is a bug: fail the test, in this
# process and in every CLI subprocess, instead of warning and falling back to a slower schedule.
os.environ["AUTOGLM_STRICT_RULES"] = "1"
os.environ.setdefault("AUTOGLM_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "test"))


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("autoglm")


@pytest.fixture(scope="session")
def mlp_onnx(workdir) -> Path:
    path = workdir / "mlp.onnx"
    onnx.save(mlp_model(), path)
    return path


@pytest.fixture(scope="session")
def token_onnx(workdir) -> Path:
    path = workdir / "tokens.onnx"
    onnx.save(token_model(), path)
    return path


@pytest.fixture(scope="session")
def mlp_inputs() -> dict:
    rng = np.random.default_rng(7)
    return {"x": rng.standard_normal((2, 16)).astype("float32"), "scale": np.array([0.5], dtype="float32")}


@pytest.fixture(scope="session")
def mlp_so(workdir, mlp_onnx) -> Path:
    import tvm_autoglm

    out = workdir / "mlp.so"
    tvm_autoglm.compile(mlp_onnx, opt_level=3).export(out)
    return out


def pytest_report_header(config):
    """Say so when $AUTOGLM_HOST_CPU makes the ``cpu`` target another CPU than this one.

    Meant for compile-only runs (e.g. checking AVX-512 schedules from an AVX2 box); a test
    that runs code built for a CPU the machine lacks dies with "Illegal instruction".
    """
    override = os.environ.get("AUTOGLM_HOST_CPU")
    if override:
        return f"AUTOGLM_HOST_CPU={override}: the 'cpu' target is {override}, not this machine (compile-only checks)"
    return None
