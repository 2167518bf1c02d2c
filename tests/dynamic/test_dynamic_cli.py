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


def test_sweep_dynamic_compiles_once_and_measures_every_shape(monkeypatch):
    """``sweep --dynamic``: one build with batch/seq ranges, every point measured on it (no time asserted)."""
    import sys
    from pathlib import Path

    import tvm_autoglm
    from tvm_autoglm.measure.sweep import dynamic_shapes, run_sweep
    from tvm_autoglm.onnx_model import graph_inputs

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "measure"))
    from _measure_models import token_sum

    model = token_sum()
    assert dynamic_shapes(graph_inputs(model), [1, 4], [8, 32]) == {"input_ids": [(1, 4), (8, 32)]}
    assert dynamic_shapes(graph_inputs(model), [2], [8, 32]) == {"input_ids": [2, (8, 32)]}
    compiles = []
    real = tvm_autoglm.compile
    monkeypatch.setattr(tvm_autoglm, "compile", lambda *a, **k: compiles.append(k["input_shapes"]) or real(*a, **k))
    result = run_sweep(model, [1, 3], [5, 17], opt_level=1, repeat=2, dynamic=True)
    assert compiles == [{"input_ids": [(1, 3), (5, 17)]}]
    assert [(p.batch, p.seq) for p in result.points] == [(1, 5), (1, 17), (3, 5), (3, 17)]
    assert all(p.error is None and p.median_ms > 0 for p in result.points), [p.error for p in result.points]


def test_tune_refuses_ranges_in_one_line(tmp_path):
    onnx.save(mlp_model(batch="batch"), tmp_path / "mlp.onnx")
    result = cli("tune", "--model", tmp_path / "mlp.onnx", "--dynamic-dim", "batch=1..8", "--tuning-db", tmp_path / "db", "--trials", "1")
    assert result.returncode == 2
    assert_clean_error(result, "tune takes static shapes", "--specialize")
