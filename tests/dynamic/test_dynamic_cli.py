"""``auto-glm compile`` with ranges, then ``execute`` at two sizes and a refused one (fresh processes)."""

from __future__ import annotations

import json

import numpy as np
import onnx
from helpers import FP32_ATOL, FP32_RTOL, assert_clean_error, cli, mlp_model, ort_run


def test_compile_with_dynamic_dim_then_execute(tmp_path):
    proto = mlp_model(batch="batch")
    onnx.save(proto, tmp_path / "mlp.onnx")
    so = tmp_path / "mlp.so"
    cli("compile", "--model", tmp_path / "mlp.onnx", "--dynamic-dim", "batch=1..16", "--output", so, "--quiet", check=True)
    manifest = json.loads(so.with_suffix(".json").read_text())
    assert manifest["symbolic_dims"] == {"batch": {"min": 1, "max": 16}}
    assert manifest["inputs"][0]["shape"] == ["batch", 16] and manifest["outputs"][1]["shape"] == ["batch", 8]
    for batch in (1, 13):
        inputs = {"x": np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32), "scale": np.array([0.25], np.float32)}
        np.savez(tmp_path / "in.npz", **inputs)
        cli("execute", "--binary", so, "--input", tmp_path / "in.npz", "--output", tmp_path / "out.npz", check=True)
        got, want = dict(np.load(tmp_path / "out.npz")), ort_run(proto, inputs)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=FP32_RTOL, atol=FP32_ATOL, err_msg=name)
    np.savez(tmp_path / "bad.npz", x=np.zeros((17, 16), np.float32), scale=np.array([1.0], np.float32))
    result = cli("execute", "--binary", so, "--input", tmp_path / "bad.npz")
    assert result.returncode == 2
    assert_clean_error(result, "input 'x' dim 0 ('batch') is 17, outside the compiled range 1..16")
    (tmp_path / "x.bin").write_bytes(np.zeros(2 * 16 + 1, np.float32).tobytes())  # a .bin carries no shapes
    result = cli("execute", "--binary", so, "--input", tmp_path / "x.bin")
    assert_clean_error(result, "dims ['batch'] are symbolic; pass the inputs as .npz")


def test_input_shape_range_on_cli(tmp_path):
    proto = mlp_model(batch="batch")
    onnx.save(proto, tmp_path / "mlp.onnx")
    so = tmp_path / "mlp.so"
    cli("compile", "--model", tmp_path / "mlp.onnx", "--input-shape", "x:2..9x16", "--output", so, "--quiet", "--optimize-level", "1", check=True)
    assert json.loads(so.with_suffix(".json").read_text())["symbolic_dims"] == {"batch": {"min": 2, "max": 9}}
    bad = cli("compile", "--model", tmp_path / "mlp.onnx", "--input-shape", "x:9..2x16", "--output", so)
    assert bad.returncode == 2
    assert_clean_error(bad, "bad range 9..2")
