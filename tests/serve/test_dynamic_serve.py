"""`auto-glm serve` of a dynamic build: one artifact answers requests of mixed sizes (each at its own
shape, nothing padded), refuses a size outside the range with a 400 naming input, dim, range and value,
and refuses --max-batch in one line. Parity: onnxruntime, fp32 rtol 1e-4 / atol 1e-5.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest

pytest.importorskip("uvicorn", reason="auto-glm serve needs the [serve] extra")
pytest.importorskip("starlette", reason="auto-glm serve needs the [serve] extra")

from server_proc import ServerProcess, http, jsonable, post_json  # noqa: E402

from helpers import FP32_ATOL, FP32_RTOL, assert_clean_error, cli, mlp_model, ort_run  # noqa: E402


@pytest.fixture(scope="module")
def dynamic_mlp(serve_dir):
    proto = mlp_model(batch="batch")
    onnx.save(proto, serve_dir / "mlp-dyn.onnx")
    so = serve_dir / "mlp-dyn.so"
    cli("compile", "--model", serve_dir / "mlp-dyn.onnx", "--dynamic-dim", "batch=1..16", "--optimize-level", "1", "--output", so, "--quiet", check=True)
    return proto, so


def _inputs(rows: int) -> dict:
    return {"x": np.random.default_rng(rows).standard_normal((rows, 16)).astype(np.float32), "scale": np.array([0.5], np.float32)}


def test_mixed_sizes_from_one_artifact(dynamic_mlp):
    proto, so = dynamic_mlp
    server = ServerProcess("--binary", so, "--workers", 2)
    try:
        server.wait_ready()
        sizes = [1, 5, 16, 3, 9, 1, 16, 7]
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda n: post_json(server.port, {"inputs": jsonable(_inputs(n))}), sizes))
        for rows, (status, payload) in zip(sizes, replies):
            assert status == 200, payload
            want = ort_run(proto, _inputs(rows))
            for name, value in want.items():
                np.testing.assert_allclose(np.asarray(payload["outputs"][name], np.float32), value, rtol=FP32_RTOL, atol=FP32_ATOL)
        body = json.dumps({"inputs": jsonable(_inputs(17))}).encode()
        status, _, raw = http(server.port, "POST", "/v1/infer", body, {"Content-Type": "application/json"})
        assert status == 400
        assert json.loads(raw)["error"] == "input 'x' dim 0 ('batch') is 17, outside the compiled range 1..16"
    finally:
        server.kill()


def test_max_batch_on_a_dynamic_build_is_refused(dynamic_mlp):
    _, so = dynamic_mlp
    result = cli("serve", "--binary", so, "--port", "0", "--max-batch", "4")
    assert result.returncode == 2
    assert_clean_error(result, "symbolic dims ['batch']", "serve it without --max-batch")
