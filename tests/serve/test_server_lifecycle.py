"""A server's life: alive but not ready while warming up, ready after, and a SIGTERM under load that
lets every in-flight request finish before the process exits 0."""

from __future__ import annotations

import threading
import time
import urllib.error
from http.client import HTTPException

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="auto-glm serve needs the [serve] extra")
pytest.importorskip("starlette", reason="auto-glm serve needs the [serve] extra")

from serve_models import row_inputs  # noqa: E402
from server_proc import ServerProcess, http, jsonable, post_json  # noqa: E402

from helpers import FP32_ATOL, FP32_RTOL  # noqa: E402

CLIENTS = 6  # fewer than --max-batch, so each batch waits out --batch-timeout-ms and requests stay in flight
BATCH_TIMEOUT_MS = 800


def _client(port, index, records, stop):
    """Send distinct requests until the server stops answering; record (start, end, seed, outcome)."""
    for k in range(10_000):
        if stop.is_set():
            return
        seed = 50_000 + index * 10_000 + k
        start = time.monotonic()
        try:
            outcome = post_json(port, {"inputs": jsonable(row_inputs(seed))}, timeout=30)
        except (urllib.error.URLError, ConnectionError, HTTPException) as err:
            records.append((start, time.monotonic(), seed, err))
            return
        records.append((start, time.monotonic(), seed, outcome))


def test_ready_after_warmup_and_sigterm_drains_in_flight_requests(rowwise_b8, reference):
    server = ServerProcess(
        "--binary", rowwise_b8, "--max-batch", 8, "--batch-timeout-ms", BATCH_TIMEOUT_MS, env={"AUTOGLM_SERVE_WARMUP_DELAY_S": "3"}
    )
    try:
        # 1. Alive, not ready: /health answers while warm-up is held back by the test hook.
        deadline = time.monotonic() + 60
        while True:
            try:
                if http(server.port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.05)
        status, _, body = http(server.port, "GET", "/ready")
        assert status == 503 and (b"warming up" in body or b"loading" in body), body
        status, payload = post_json(server.port, {"inputs": jsonable(row_inputs(1))})
        assert status == 503 and "model not ready" in payload["error"]
        assert server.metrics()["autoglm_ready"] == 0

        # 2. Ready after warm-up; inference answers.
        server.wait_ready()
        assert server.metrics()["autoglm_ready"] == 1
        status, payload = post_json(server.port, {"inputs": jsonable(row_inputs(2))})
        assert status == 200

        # 3. Load from CLIENTS threads, then SIGTERM while requests sit in a batch.
        records: list = []
        stop = threading.Event()
        threads = [threading.Thread(target=_client, args=(server.port, i, records, stop)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while server.metrics()["autoglm_inflight_requests"] < CLIENTS:
            assert time.monotonic() < deadline, "clients never had requests in flight"
            time.sleep(0.02)
        sigterm_at = time.monotonic()
        in_flight = server.metrics()["autoglm_inflight_requests"]
        code = server.terminate(timeout=60)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        server.kill()

    assert code == 0, server.stderr()
    assert "auto-glm serve: stopped" in server.stderr()
    answered = [r for r in records if isinstance(r[3], tuple)]
    assert all(status == 200 for _, _, _, (status, _) in answered), [r[3] for r in answered if r[3][0] != 200][:3]
    for _, _, seed, (_, payload) in answered:
        expected = reference.run(row_inputs(seed))
        for name, value in expected.items():
            np.testing.assert_allclose(np.asarray(payload["outputs"][name], dtype="float32"), value, rtol=FP32_RTOL, atol=FP32_ATOL)
    finished_after_sigterm = [r for r in answered if r[1] > sigterm_at]
    print(f"in flight at SIGTERM: {in_flight}; answered after: {len(finished_after_sigterm)}; answered: {len(answered)}; refused: {len(records) - len(answered)}")
    assert len(finished_after_sigterm) >= in_flight, "requests in flight at SIGTERM were dropped"
    # A request the server had surely accepted (sent well before the signal) must not fail.
    failed_early = [r for r in records if not isinstance(r[3], tuple) and r[0] < sigterm_at - 0.2]
    assert not failed_early, failed_early


def test_failed_warmup_reports_failed_and_exits_1(rowwise_b1, serve_dir):
    """The sha256 covers the library, not the manifest: a manifest listing an output the library lacks
    passes the load checks and fails the warm-up inference, which must stop the server with status 1."""
    import json
    import shutil

    broken = serve_dir / "broken_outputs.so"
    shutil.copy(rowwise_b1, broken)
    manifest = json.loads(rowwise_b1.with_suffix(".json").read_text())
    manifest["outputs"].append({"name": "extra", "shape": [1, 1], "dtype": "float32"})
    broken.with_suffix(".json").write_text(json.dumps(manifest))
    server = ServerProcess("--binary", broken)
    try:
        code = server.wait(timeout=120)
    finally:
        server.kill()
    assert code == 1
    assert "loading" in server.stderr() and "returned 2 outputs but the manifest lists 3" in server.stderr()
    assert "Traceback" not in server.stderr()
