"""`auto-glm serve` of a dynamic build: one artifact answers requests of mixed sizes, refuses a size
outside the range with a 400 naming input, dim, range and value; with --max-batch equal shapes share a
call, with --length-bucket and --padding-mask near lengths share a padded one (/metrics says which);
bad statements are refused in one line, exit 2. Parity: onnxruntime, fp32 rtol 1e-4 / atol 1e-5.
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
from zoo_fixtures import zoo_build, zoo_dir  # noqa: E402,F401  (fixtures)


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


def test_max_batch_needs_one_batch_dim_leading_every_input_and_output(dynamic_mlp):
    """The mlp's 'scale' input is [1]: requests cannot be stacked along 'batch' (scale is per request)."""
    _, so = dynamic_mlp
    result = cli("serve", "--binary", so, "--port", "0", "--max-batch", "4")
    assert result.returncode == 2
    assert_clean_error(result, "one batch dim in every input and output; found input 'x': batch, input 'scale': 1", "serve without --max-batch")


# A tiny BERT exported with symbolic batch and seq, built once with batch 1..4 and seq 1..40. Each
# response must equal onnxruntime run on that request alone (fp32, rtol 1e-4 / atol 1e-5), whether
# requests were stacked, padded to a length bucket, or both.
BERT_RANGES = ("--dynamic-dim", "batch=1..4", "--dynamic-dim", "seq=1..40")


@pytest.fixture(scope="module")
def bert_dynamic(zoo_build, serve_dir):  # noqa: F811
    path = zoo_build("bert", "dynamo", dynamic=True)
    so = serve_dir / "bert-dyn.so"
    cli("compile", "--model", path, *BERT_RANGES, "--output", so, "--quiet", check=True)
    return path, so


def _text(rows: int, seq: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((rows, seq), np.int64)
    mask[:, seq - seq // 4 :] = 0  # each request's own padding (the last quarter), kept as sent
    return {"input_ids": rng.integers(1, 1000, (rows, seq)).astype(np.int64), "attention_mask": mask}


def _serve_and_check(path, so, shapes, *flags):
    """Send every request at once; check each reply against onnxruntime on that request alone; return /metrics
    and /v1/model's batching settings."""
    server = ServerProcess("--binary", so, "--workers", 1, *flags)
    try:
        server.wait_ready()
        requests = [_text(rows, seq, seed) for seed, (rows, seq) in enumerate(shapes)]
        with ThreadPoolExecutor(len(requests)) as pool:
            replies = list(pool.map(lambda inputs: post_json(server.port, {"inputs": jsonable(inputs)}), requests))
        for inputs, (status, payload) in zip(requests, replies):
            assert status == 200, payload
            want = ort_run(path, inputs)
            assert list(payload["outputs"]) == list(want)
            for name, value in want.items():
                np.testing.assert_allclose(np.asarray(payload["outputs"][name], np.float32), value, rtol=FP32_RTOL, atol=FP32_ATOL, err_msg=name)
        info = json.loads(http(server.port, "GET", "/v1/model")[2])
        return server.metrics(), info["batching"]
    finally:
        server.kill()


def test_bert_equal_lengths_are_stacked_and_others_run_at_their_own_length(bert_dynamic):
    """Without a mask statement nothing is padded: the four 1x9 requests share one call (the batch closes
    when full; the timeout only bounds the wait of the lone shapes), the others run as sent."""
    path, so = bert_dynamic
    shapes = [(1, 9), (1, 23), (1, 9), (2, 5), (1, 9), (1, 9)]
    metrics, batching = _serve_and_check(path, so, shapes, "--max-batch", 4, "--batch-timeout-ms", 5000)
    assert batching == {"enabled": True, "max_requests": 4, "rows_per_call": 4}
    assert metrics['autoglm_call_shapes_total{dims="batch=4,seq=9"}'] == 1
    assert metrics['autoglm_call_shapes_total{dims="batch=1,seq=23"}'] == 1
    assert metrics['autoglm_call_shapes_total{dims="batch=2,seq=5"}'] == 1
    assert metrics['autoglm_request_shapes_total{dims="batch=1,seq=9"}'] == 4
    assert metrics["autoglm_padded_elements_total"] == 0 and metrics["autoglm_padding_fraction"] == 0


def test_bert_near_lengths_share_a_padded_bucket(bert_dynamic):
    """--length-bucket seq=16 with the mask statement: lengths 3, 9, 14, 16 run as one 4x16 call, 2x20 as 2x32;
    every response is sliced back to its own length and matches onnxruntime on the request alone."""
    path, so = bert_dynamic
    shapes = [(1, 3), (1, 9), (2, 20), (1, 14), (1, 16)]
    metrics, batching = _serve_and_check(path, so, shapes, "--max-batch", 4, "--batch-timeout-ms", 5000,
                                         "--length-bucket", "seq=16", "--padding-mask", "seq=attention_mask")
    assert batching == {"enabled": True, "max_requests": 4, "rows_per_call": 4, "length_buckets": {"seq": 16}, "padding_masks": {"seq": "attention_mask"}}
    assert metrics['autoglm_call_shapes_total{dims="batch=4,seq=16"}'] == 1
    assert metrics['autoglm_call_shapes_total{dims="batch=2,seq=32"}'] == 1
    assert metrics['autoglm_request_shapes_total{dims="batch=1,seq=3"}'] == 1
    sent = 2 * (3 + 9 + 14 + 16 + 2 * 20)  # two inputs
    called = 2 * (4 * 16 + 2 * 32)
    assert metrics["autoglm_padded_elements_total"] == called - sent
    assert metrics["autoglm_padding_fraction"] == pytest.approx((called - sent) / called)


def test_bucket_without_mask_statement_is_refused(bert_dynamic):
    _, so = bert_dynamic
    result = cli("serve", "--binary", so, "--port", "0", "--length-bucket", "seq=16")
    assert result.returncode == 2
    assert_clean_error(result, "--length-bucket seq=16 pads requests along 'seq'", "--padding-mask seq=MASK_INPUT")


def test_unknown_mask_input_is_refused(bert_dynamic):
    _, so = bert_dynamic
    result = cli("serve", "--binary", so, "--port", "0", "--length-bucket", "seq=16", "--padding-mask", "seq=mask")
    assert result.returncode == 2
    assert_clean_error(result, "--padding-mask seq=mask: the model has no input 'mask'; its inputs are ['attention_mask', 'input_ids']")
