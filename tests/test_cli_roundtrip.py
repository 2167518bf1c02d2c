"""The CLI contract: compile -> .so/.json or .glm -> execute with .npz or .bin, outputs equal to onnxruntime."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
import tvm

from helpers import FP32_ATOL, FP32_RTOL, assert_close, cli, ort_run


@pytest.fixture(scope="module")
def compiled(workdir, mlp_onnx):
    out = workdir / "cli" / "mlp.so"
    result = cli("compile", "--model", mlp_onnx, "--target", "cpu", "--optimize-level", 3, "--output", out, check=True)
    assert "wrote" in result.stdout
    return out


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_fields_describe_the_build(compiled, mlp_onnx):
    manifest = json.loads(compiled.with_suffix(".json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["x", "scale"]
    assert manifest["inputs"][0] == {"name": "x", "shape": [2, 16], "dtype": "float32"}
    assert [o["name"] for o in manifest["outputs"]] == ["logits", "probs"]
    assert manifest["outputs"][1]["shape"] == [2, 8]
    assert manifest["target"]["name"] == "cpu" and manifest["target"]["tvm"]["kind"] == "llvm"
    assert manifest["opt_level"] == 3
    assert "fold_constant" in manifest["passes"] and "fuse_ops" in manifest["passes"]
    # the kernels listed are the ones compiled into the library (and a name that is not there is not found)
    library = tvm.runtime.load_module(str(compiled))
    assert manifest["kernels"] and any(k.startswith("fused_") for k in manifest["kernels"]), manifest["kernels"]
    missing = [k for k in manifest["kernels"] if not library.implements_function(k, query_imports=True)]
    assert missing == [], missing
    assert not library.implements_function("fused_no_such_kernel", query_imports=True)
    assert manifest["sha256"]["library"] == _sha(compiled)
    assert manifest["sha256"]["model"] == _sha(mlp_onnx)
    assert manifest["versions"]["tvm"] == tvm.__version__ and manifest["versions"]["onnx"] == onnx.__version__
    assert manifest["tuning"]["records_applied"] == 0 and manifest["tuning"]["database"] is None


def test_execute_npz_matches_onnxruntime(compiled, mlp_onnx, mlp_inputs, workdir):
    npz = workdir / "cli" / "in.npz"
    np.savez(npz, **mlp_inputs)
    result_path = workdir / "cli" / "out.npz"
    result = cli("execute", "--binary", compiled, "--input", npz, "--output", result_path, "--repeat", 5, check=True)
    with np.load(result_path) as data:
        outputs = {name: data[name] for name in ("logits", "probs")}
    assert_close(outputs, ort_run(mlp_onnx, mlp_inputs))
    assert "median" in result.stdout and "min" in result.stdout and "max" in result.stdout


def test_execute_bin_is_raw_inputs_in_manifest_order(compiled, mlp_onnx, mlp_inputs, workdir):
    raw = workdir / "cli" / "in.bin"
    raw.write_bytes(mlp_inputs["x"].astype("<f4").tobytes() + mlp_inputs["scale"].astype("<f4").tobytes())
    result_path = workdir / "cli" / "out_bin.npz"
    cli("execute", "--binary", compiled, "--input", raw, "--output", result_path, check=True)
    with np.load(result_path) as data:
        np.testing.assert_allclose(data["probs"], ort_run(mlp_onnx, mlp_inputs)["probs"], rtol=FP32_RTOL, atol=FP32_ATOL)


def test_glm_package_round_trip(workdir, mlp_onnx, mlp_inputs):
    package = workdir / "cli-glm" / "mlp.glm"
    cli("compile", "--model", mlp_onnx, "--output", package, "--quiet", check=True)
    assert package.is_file() and not package.with_suffix(".json").exists()
    npz = workdir / "cli-glm" / "in_glm.npz"
    np.savez(npz, **mlp_inputs)
    result_path = workdir / "cli-glm" / "out_glm.npz"
    cli("execute", "--binary", package, "--input", npz, "--output", result_path, check=True)
    with np.load(result_path) as data:
        np.testing.assert_allclose(data["logits"], ort_run(mlp_onnx, mlp_inputs)["logits"], rtol=FP32_RTOL, atol=FP32_ATOL)


def test_input_shape_flag_makes_dynamic_dims_static(workdir, token_onnx):
    out = workdir / "cli" / "tokens.so"
    cli("compile", "--model", token_onnx, "--input-shape", "input_ids:3x5", "--output", out, "--quiet", check=True)
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["inputs"] == [{"name": "input_ids", "shape": [3, 5], "dtype": "int64"}]
    assert manifest["outputs"][0]["shape"] == [3, 5, 16]


def test_inspect_json_counts_ops(mlp_onnx):
    info = json.loads(cli("inspect", "--model", mlp_onnx, "--json", check=True).stdout)
    counts = {row["op"]: row["count"] for row in info["ops"]}
    assert counts == {"Add": 2, "MatMul": 2, "Mul": 1, "Relu": 1, "Softmax": 1}
    assert info["unsupported"] == []
    assert [i["name"] for i in info["inputs"]] == ["x", "scale"]


def test_inspect_with_level_reports_passes_and_kernels(mlp_onnx):
    info = json.loads(cli("inspect", "--model", mlp_onnx, "--optimize-level", 1, "--json", check=True).stdout)
    names = [p["name"] for p in info["passes"]]
    assert names[0] == "fold_constant" and names[-1] == "fuse_ops"
    fuse = info["passes"][-1]
    assert fuse["ops_after"].get("call_tir", 0) == len(info["kernels"]) > 0
    assert fuse["ops_before"].get("matmul") == 2 and "matmul" not in fuse["ops_after"]


def test_python_dash_m_is_the_same_cli():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = shutil.which("auto-glm") or str(Path(sys.executable).parent / "auto-glm")
    direct = subprocess.run([script, "--help"], capture_output=True, text=True)
    module = cli("--help")
    assert direct.returncode == module.returncode == 0
    assert direct.stdout == module.stdout
    for command in ("compile", "execute", "inspect"):
        assert command in module.stdout
