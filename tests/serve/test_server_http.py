"""`auto-glm serve` over real HTTP on loopback: parity with Session.run, clear 4xx errors, batching under load.

Two servers per module: the batch-1 build served without batching (2 workers),
and the batch-8 build served with --max-batch 8. Loads are bounded by request
count; nothing here asserts a time.
"""

from __future__ import annotations

from http.client import HTTPConnection
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="auto-glm serve needs the [serve] extra")
pytest.importorskip("starlette", reason="auto-glm serve needs the [serve] extra")

from serve_models import row_inputs  # noqa: E402
from server_proc import ServerProcess, http, jsonable, post_json  # noqa: E402

from helpers import FP32_ATOL, FP32_RTOL, assert_clean_error, cli  # noqa: E402


@pytest.fixture(scope="module")
def exact_server(rowwise_b1):
    server = ServerProcess("--binary", rowwise_b1, "--workers", 2, "--max-body-mb", 1)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def batched_server(rowwise_b8):
    server = ServerProcess("--binary", rowwise_b8, "--max-batch", 8, "--batch-timeout-ms", 20)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


def test_json_and_npz_outputs_equal_session_run(exact_server, reference):
    inputs = row_inputs(seed=11)
    expected = reference.run(inputs)
    for payload in ({"inputs": jsonable(inputs)}, jsonable(inputs)):  # wrapped and bare objects
        status, body = post_json(exact_server.port, payload)
        assert status == 200, body
        assert list(body["outputs"]) == ["y", "total"]
        for name, value in expected.items():
            np.testing.assert_array_equal(np.asarray(body["outputs"][name], dtype=value.dtype), value)
    buffer = io.BytesIO()
    np.savez(buffer, **inputs)
    status, headers, raw = http(
        exact_server.port, "POST", "/v1/infer", buffer.getvalue(), {"Content-Type": "application/x-npz", "Accept": "application/x-npz"}
    )
    assert status == 200 and headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(raw)) as data:
        for name, value in expected.items():
            np.testing.assert_array_equal(data[name], value)


@pytest.mark.parametrize(
    "body, content_type, fragment",
    [
        (b'{"x": [[1, 2', "application/json", "not valid JSON"),
        (b'{"x": [[1, 2, 3]], "s": [[1]]}', "application/json", "input 'x' has shape 1x3, expected 1x16"),
        (json.dumps({"x": [[0.0] * 16], "s": [[1]], "scale": [1]}).encode(), "application/json", "unknown input name(s) ['scale']"),
        (json.dumps({"x": [[0.0] * 16]}).encode(), "application/json", "missing input(s) ['s']"),
        (json.dumps({"x": [["a"] * 16], "s": [[1]]}).encode(), "application/json", "input 'x' holds a value that is not a number"),
        (b"PK\x03\x04 not really a zip", "application/x-npz", "not a readable .npz"),
    ],
)
def test_bad_requests_get_400_naming_the_problem(exact_server, body, content_type, fragment):
    status, headers, raw = http(exact_server.port, "POST", "/v1/infer", body, {"Content-Type": content_type})
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    message = json.loads(raw)["error"]
    assert fragment in message and "Traceback" not in message


def test_large_bodies_decode_off_the_loop_and_oversized_ones_get_413(exact_server, reference):
    inputs = row_inputs(seed=12)
    body = json.dumps({"inputs": jsonable(inputs)}).encode()
    status, payload = post_json(exact_server.port, body + b" " * 400_000)  # past the 256 KiB offload threshold
    assert status == 200, payload
    np.testing.assert_array_equal(np.asarray(payload["outputs"]["y"], dtype="float32"), reference.run(inputs)["y"])
    # The declared length alone gets the 413: the client need not (and a real one would not) upload the rest.
    connection = HTTPConnection("127.0.0.1", exact_server.port, timeout=30)
    connection.putrequest("POST", "/v1/infer")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(2 << 20))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "exceeds the limit of 1048576 bytes" in json.loads(response.read())["error"]
    connection.close()


def test_npz_with_the_wrong_dtype_gets_400(exact_server):
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((1, 16), "float64"), s=np.ones((1, 1), "float32"))
    status, _, raw = http(exact_server.port, "POST", "/v1/infer", buffer.getvalue(), {"Content-Type": "application/x-npz"})
    assert status == 400 and "input 'x' has dtype float64, expected float32" in json.loads(raw)["error"]


def _load(port, seeds, rows_for, clients):
    """Send one request per seed from `clients` threads; return {seed: (status, body)}."""

    def one(seed):
        return seed, post_json(port, {"inputs": jsonable(row_inputs(seed, rows_for(seed)))})

    with ThreadPoolExecutor(clients) as pool:
        return dict(pool.map(one, seeds))


def test_unbatched_load_every_response_matches_its_request(exact_server, reference):
    seeds = range(1000, 1400)
    results = _load(exact_server.port, seeds, lambda seed: 1, clients=8)
    for seed in seeds:
        status, body = results[seed]
        assert status == 200, body
        expected = reference.run(row_inputs(seed))
        for name, value in expected.items():
            np.testing.assert_array_equal(np.asarray(body["outputs"][name], dtype="float32"), value, err_msg=f"seed {seed} {name}")
    metrics = exact_server.metrics()
    assert metrics['autoglm_batch_size_bucket{le="1"}'] == metrics["autoglm_batch_size_count"]  # no batching without --max-batch


def test_batched_load_forms_batches_and_routes_rows_back(batched_server, reference):
    seeds = range(2000, 3200)
    rows_for = lambda seed: 1 + seed % 3  # noqa: E731  requests of 1, 2 and 3 rows share batches
    results = _load(batched_server.port, seeds, rows_for, clients=16)
    for seed in seeds:
        status, body = results[seed]
        assert status == 200, body
        inputs = row_inputs(seed, rows_for(seed))
        for row in range(rows_for(seed)):  # the reference build takes one row at a time
            expected = reference.run({name: value[row : row + 1] for name, value in inputs.items()})
            for name, value in expected.items():
                got = np.asarray(body["outputs"][name][row : row + 1], dtype="float32")
                np.testing.assert_allclose(got, value, rtol=FP32_RTOL, atol=FP32_ATOL, err_msg=f"seed {seed} row {row} {name}")
    metrics = batched_server.metrics()
    assert metrics['autoglm_requests_total{code="200"}'] >= len(seeds)
    assert metrics["autoglm_batch_size_count"] > 0
    assert metrics['autoglm_batch_size_bucket{le="1"}'] < metrics["autoglm_batch_size_count"], "no call ever packed two requests"
    assert metrics["autoglm_batch_size_sum"] / metrics["autoglm_batch_size_count"] > 1.0
    assert metrics["autoglm_queue_depth"] == 0 and metrics["autoglm_inflight_requests"] == 0


def test_batched_server_refuses_more_rows_than_the_build_holds(batched_server):
    status, body = post_json(batched_server.port, {"inputs": jsonable(row_inputs(5, rows=9))})
    assert status == 400 and "expected Nx16 with 1 <= N <= 8" in body["error"]


def test_model_endpoint_and_unknown_routes(batched_server):
    status, _, raw = http(batched_server.port, "GET", "/v1/model")
    info = json.loads(raw)
    assert status == 200 and info["batching"] == {"enabled": True, "max_requests": 8, "rows_per_call": 8}
    assert [spec["name"] for spec in info["inputs"]] == ["x", "s"]
    assert http(batched_server.port, "GET", "/v1/infer")[0] == 405
    assert http(batched_server.port, "GET", "/nope")[0] == 404


def test_cli_refuses_bad_artifacts_and_layouts_in_one_line(rowwise_b1, serve_dir):
    missing = cli("serve", "--binary", serve_dir / "missing.so", "--port", "0")
    assert missing.returncode == 2
    assert_clean_error(missing, "missing.so", "not found")
    unbatchable = cli("serve", "--binary", rowwise_b1, "--port", "0", "--max-batch", "4")
    assert unbatchable.returncode == 2
    assert_clean_error(unbatchable, "--max-batch 4 exceeds the build's batch dimension 1", "--input-shape x:4x16 s:4x1")
