"""Fixtures for the CUDA target tests: GPU artifacts built once per session (nvcc is the slow part)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

HERE = Path(__file__).resolve().parent

from gpu_models import bert_layer, small_cnn  # noqa: E402

MODELS = {"bert": bert_layer, "cnn": small_cnn}
ARCH = {"gpu-ampere": "sm_80", "gpu-hopper": "sm_90a"}


def cuda_device_present() -> bool:
    import tvm

    try:
        return bool(tvm.cuda(0).exist)
    except Exception:
        return False


def nvcc_present() -> bool:
    from tvm_autoglm.gpu import find_nvcc

    return find_nvcc() is not None


@pytest.fixture(scope="session")
def gpu_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gpu")


@pytest.fixture(scope="session")
def gpu_onnx(gpu_dir):
    """model name -> saved ONNX path."""
    paths = {}
    for name, make in MODELS.items():
        paths[name] = gpu_dir / f"{name}.onnx"
        onnx.save(make(), paths[name])
    return paths


@pytest.fixture(scope="session")
def gpu_artifact(gpu_dir, gpu_onnx):
    """``gpu_artifact(target, model) -> Path`` of an exported .so, built on first use.

    gpu-hopper/cnn is built through the CLI (the path users take); the rest through the API.
    """
    if not nvcc_present():
        pytest.skip("nvcc not found: GPU binaries cannot be built here")
    from helpers import cli

    import tvm_autoglm

    built: dict = {}

    def get(target: str, model: str) -> Path:
        key = (target, model)
        if key not in built:
            out = gpu_dir / f"{model}-{target}.so"
            if key == ("gpu-hopper", "cnn"):
                cli("compile", "--model", gpu_onnx[model], "--target", target, "--output", out, "--quiet", check=True)
            else:
                tvm_autoglm.compile(gpu_onnx[model], target=target).export(out)
            built[key] = out
        return built[key]

    return get
