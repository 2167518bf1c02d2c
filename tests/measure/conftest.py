"""Artifacts shared by the measure tests (compiled once per session)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest


from _measure_models import elementwise_chain, matmul_relu  # noqa: E402


@pytest.fixture(scope="session")
def measure_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("measure")


@pytest.fixture(scope="session")
def chain_builds(measure_dir) -> dict:
    """The elementwise chain at O0 (6 unfused kernels) and O3 (one fused kernel), plus its ONNX file."""
    import tvm_autoglm

    model = measure_dir / "chain.onnx"
    onnx.save(elementwise_chain(), model)
    out = {"onnx": model}
    for level in (0, 3):
        out[level] = tvm_autoglm.compile(model, opt_level=level).export(measure_dir / f"chain_o{level}.so")
    return out


@pytest.fixture(scope="session")
def mm_build(measure_dir) -> dict:
    """Two matmuls with a relu, built at O0 so every kernel has a known FLOP count."""
    import tvm_autoglm

    model = measure_dir / "mm.onnx"
    onnx.save(matmul_relu(rows=8, k=64, n=32, batch_dim=None), model)
    return {"onnx": model, "so": tvm_autoglm.compile(model, opt_level=0).export(measure_dir / "mm_o0.so")}


@pytest.fixture
def auto_glm(capsys, monkeypatch):
    """Run ``auto-glm ARGS`` in this process (no interpreter start-up): returns (exit code, stdout, stderr).

    TVM_NUM_THREADS is snapshotted so a command's ``--threads`` does not leak into later tests.
    """
    from tvm_autoglm.cli.main import main

    monkeypatch.setenv("TVM_NUM_THREADS", __import__("os").environ.get("TVM_NUM_THREADS", "2"))
    monkeypatch.setenv("OMP_NUM_THREADS", __import__("os").environ.get("OMP_NUM_THREADS", "2"))

    def run(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run

