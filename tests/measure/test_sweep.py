"""``auto-glm sweep``: the selection under an SLO (injected measurements) and one real tiny sweep."""

from __future__ import annotations

import json

import onnx
import pytest


from _measure_models import matmul_relu, token_sum  # noqa: E402
from _measure_cli import assert_one_line_error  # noqa: E402

from tvm_autoglm.errors import InputError  # noqa: E402
from tvm_autoglm.measure.sweep import SweepPoint, run_sweep, select_best, shapes_for  # noqa: E402
from tvm_autoglm.onnx_model import TensorSpec  # noqa: E402


def fake_latency(batch: int, seq: int) -> float:
    """1 ms fixed + 0.02 ms per token: bigger batches amortise the fixed cost (throughput rises with batch)."""
    return 1.0 + 0.02 * batch * seq


def test_best_is_max_throughput_meeting_the_slo():
    seen = []

    def measure(shapes):
        batch, seq = shapes["input_ids"]
        seen.append((batch, seq))
        ms = fake_latency(batch, seq)
        return {"median_ms": ms, "p90_ms": ms * 1.1}

    result = run_sweep(token_sum(), [1, 2, 4, 8], [64, 128, 256], slo_ms=12.0, measure=measure)
    assert sorted(seen) == sorted((b, s) for b in (1, 2, 4, 8) for s in (64, 128, 256))
    # By hand: p90 = 1.1 * (1 + 0.02*b*s) <= 12  <=>  b*s <= 495, so b*s = 512 ((8,64), (4,128), (2,256)) misses.
    # Throughput b / (1 + 0.02*b*s): (4,64) 0.654/ms beats (2,128) 0.327, (2,64) 0.562, (1,64) 0.439.
    # Without the SLO (8,64) would win (0.712/ms): the SLO is what decides here.
    ok = [(b, s) for b in (1, 2, 4, 8) for s in (64, 128, 256) if 1.1 * fake_latency(b, s) <= 12.0]
    expected = max(ok, key=lambda bs: bs[0] / fake_latency(*bs))
    assert expected == (4, 64)
    unconstrained = max(((b, s) for b in (1, 2, 4, 8) for s in (64, 128, 256)), key=lambda bs: bs[0] / fake_latency(*bs))
    assert unconstrained == (8, 64)
    assert (result.best.batch, result.best.seq) == expected
    assert all(p.meets_slo == ((p.batch, p.seq) in ok) for p in result.points)


def test_slo_uses_p90_and_nothing_meets_a_tiny_slo():
    points = [SweepPoint(1, 8, median_ms=5.0, p90_ms=9.0), SweepPoint(2, 8, median_ms=6.0, p90_ms=7.0)]
    assert select_best(points, slo_ms=8.0) is points[1]  # batch 1's median meets 8 ms but its p90 does not
    assert select_best(points, slo_ms=1.0) is None
    assert select_best(points, slo_ms=None) is points[1]  # no SLO: max throughput


def test_dims_map_by_position():
    specs = [TensorSpec("input_ids", ("batch", "seq"), "int64"), TensorSpec("pixel_values", ("n", 3, 32, 32), "float32")]
    assert shapes_for(specs, 4, 128) == {"input_ids": [4, 128], "pixel_values": [4, 3, 32, 32]}
    with pytest.raises(InputError, match="hidden"):
        shapes_for([TensorSpec("emb", ("batch", "seq", "hidden"), "float32")], 1, 8)


def test_image_like_model_sweeps_batch_only():
    model = matmul_relu()  # x[batch, 64]: no --seq given, so only the batch changes
    calls = []
    result = run_sweep(
        model, [1, 2], None, measure=lambda shapes: calls.append(shapes) or {"median_ms": 1.0, "p90_ms": 1.0}
    )
    assert [p.label for p in result.points] == ["b1", "b2"] and calls == [{"x": [1, 64]}, {"x": [2, 64]}]


def test_a_failing_shape_reports_the_line_that_says_what_failed():
    """A TVM error ends in the IR it failed on; the point's error is its reason, not the dump's last line."""
    tvm_style = RuntimeError(
        "Check failed: (extent > 0) is false: loop extent must be positive\n"
        "# from tvm.script import tirx as T\n@T.prim_func\ndef main():\n    T.evaluate(0)\n"
        "# Metadata omitted. Use show_meta=True in script() method to show it."
    )

    def measure(shapes):
        if shapes["x"][0] == 2:
            raise tvm_style
        return {"median_ms": 1.0, "p90_ms": 1.0}

    result = run_sweep(matmul_relu(), [1, 2], None, measure=measure)
    ok, failed = result.points
    assert ok.error is None and ok.median_ms == 1.0
    assert failed.error == "RuntimeError: Check failed: (extent > 0) is false: loop extent must be positive"
    assert result.best is ok


def test_real_tiny_sweep_table_has_every_shape(tmp_path, auto_glm):
    model = tmp_path / "tok.onnx"
    onnx.save(token_sum(), model)
    html = tmp_path / "sweep.html"
    code, out, err = auto_glm("sweep", "--model", model, "--batch", "1,2", "--seq", "8,16", "--slo-ms", "1000", "--repeat", "3", "--html", html, "--json")
    assert code == 0, err
    data = json.loads(out)
    labels = sorted(p["label"] for p in data["points"])
    assert labels == ["b1 s16", "b1 s8", "b2 s16", "b2 s8"]
    assert all(p["median_ms"] > 0 and p["error"] is None for p in data["points"])
    best = max(data["points"], key=lambda p: p["throughput"])
    assert data["best"]["label"] == best["label"]  # a 1 s SLO: every shape meets it
    text = html.read_text()
    assert all(label in text for label in labels)


def test_sweep_bad_batch_is_one_line_error(tmp_path, auto_glm):
    model = tmp_path / "tok.onnx"
    onnx.save(token_sum(), model)
    assert_one_line_error(auto_glm("sweep", "--model", model, "--batch", "1,x"), "--batch")
