"""Batch layout (which builds can batch, packing and splitting) and the batcher's grouping, without HTTP."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tvm_autoglm.errors import ArtifactError, InputError
from tvm_autoglm.serve.batching import Batcher, Layout


def manifest(batch=8, s_shape=None):
    return {
        "inputs": [
            {"name": "x", "shape": [batch, 4], "dtype": "float32"},
            {"name": "s", "shape": s_shape or [batch, 1], "dtype": "float32"},
        ],
        "outputs": [{"name": "y", "shape": [batch, 4], "dtype": "float32"}],
    }


def rows(n, seed):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 4)).astype("float32"), "s": rng.standard_normal((n, 1)).astype("float32")}


def test_batching_needs_one_shared_leading_dimension():
    with pytest.raises(ArtifactError, match=r"same leading \(batch\) dimension.*input 's': 1"):
        Layout.from_manifest(manifest(8, s_shape=[1]), 4)
    with pytest.raises(ArtifactError, match=r"--max-batch 16 exceeds the build's batch dimension 8.*--input-shape x:16x4 s:16x1"):
        Layout.from_manifest(manifest(8), 16)
    layout = Layout.from_manifest(manifest(8, s_shape=[1]), None)  # no --max-batch: exact shapes, any layout
    assert not layout.batching and layout.max_requests == 1


def test_request_rows_are_checked():
    layout = Layout.from_manifest(manifest(8), 8)
    assert layout.rows_of(rows(3, 0)) == 3
    with pytest.raises(InputError, match=r"input 'x' has shape 9x4, expected Nx4 with 1 <= N <= 8"):
        layout.rows_of(rows(9, 0))
    with pytest.raises(InputError, match="inputs disagree on the batch size"):
        layout.rows_of({"x": rows(2, 0)["x"], "s": rows(3, 0)["s"]})
    with pytest.raises(InputError, match="input 'x' has dtype float64, expected float32"):
        layout.rows_of({"x": np.zeros((1, 4)), "s": np.zeros((1, 1), "float32")})
    exact = Layout.from_manifest(manifest(8), None)
    with pytest.raises(InputError, match=r"input 'x' has shape 3x4, expected 8x4"):
        exact.rows_of(rows(3, 0))


def test_pack_pads_with_zeros_and_split_returns_each_requests_rows():
    layout = Layout.from_manifest(manifest(8), 4)
    requests = [rows(1, 1), rows(3, 2), rows(2, 3)]
    packed, padded = layout.pack(requests)
    assert padded == 2 and packed["x"].shape == (8, 4)
    np.testing.assert_array_equal(packed["x"][6:], 0)
    np.testing.assert_array_equal(packed["x"][1:4], requests[1]["x"])
    outputs = {"y": packed["x"] * 2}
    for request, result in zip(requests, layout.split(outputs, [1, 3, 2])):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)


def test_batcher_groups_waiting_requests_and_routes_results_back():
    layout = Layout.from_manifest(manifest(8), 8)
    calls = []

    def execute(inputs):
        calls.append(inputs["x"].shape[0])
        time.sleep(0.02)  # a busy worker lets the queue fill
        return {"y": inputs["x"] * inputs["s"]}

    async def main():
        executor = ThreadPoolExecutor(1)
        batcher = Batcher(layout, execute, executor, workers=1, timeout_s=0.005, max_queue=100)
        batcher.start()
        sizes = [1 + i % 3 for i in range(24)]
        requests = [rows(n, seed) for seed, n in enumerate(sizes)]
        results = await asyncio.gather(*(batcher.submit(r, n) for r, n in zip(requests, sizes)))
        await batcher.close()
        executor.shutdown()
        return requests, results

    requests, results = asyncio.run(main())
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request["x"] * request["s"])
    assert all(c == 8 for c in calls)  # every call runs at the build's batch size
    assert len(calls) < len(requests)  # and requests were grouped: 48 rows fit in 6+ calls, not 24


def test_batcher_reports_overload():
    layout = Layout.from_manifest(manifest(8), None)

    async def main():
        batcher = Batcher(layout, lambda inputs: inputs, ThreadPoolExecutor(1), workers=1, timeout_s=0, max_queue=0)
        with pytest.raises(Exception, match="server overloaded"):
            await batcher.submit(rows(8, 0), 1)

    asyncio.run(main())
