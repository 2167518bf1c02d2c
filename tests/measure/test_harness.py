"""measure.harness: the one way benchmarks set up peers and time candidates (issue #21)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from tvm_autoglm.errors import InputError
from tvm_autoglm.measure import harness

REPO = Path(__file__).resolve().parents[2]
#: Constructors of onnxruntime sessions; only measure/candidates.py may call them.
SESSION_CONSTRUCTORS = re.compile(r"\b(InferenceSession|SessionOptions)\(")


def test_no_benchmark_script_makes_its_own_onnxruntime_session():
    scripts = sorted((REPO / "benchmarks").glob("*.py"))
    assert len(scripts) >= 10  # the folder is where we think it is
    offenders = [f"{path.name}:{n}: {line.strip()}" for path in scripts for n, line in enumerate(path.read_text().splitlines(), 1)
                 if SESSION_CONSTRUCTORS.search(line)]
    assert offenders == [], "benchmarks must get onnxruntime sessions from tvm_autoglm.measure.harness:\n" + "\n".join(offenders)


def test_onnxruntime_sessions_are_made_in_one_place():
    """Inside the measurement code and the CLI, only candidates.ort_session builds a session."""
    files = sorted((REPO / "tvm_autoglm" / "measure").glob("*.py")) + sorted((REPO / "tvm_autoglm" / "cli").glob("*.py"))
    makers = sorted({path.name for path in files if SESSION_CONSTRUCTORS.search(path.read_text())})
    assert makers == ["candidates.py"]


def test_stale_scripts_are_gone():
    for name in ("shipped_vs_default.py", "check_in_model.py", "bench_int8_avx2.py", "kernel_ab.py"):
        assert not (REPO / "benchmarks" / name).exists(), name
    make = (REPO / "Makefile").read_text()
    assert "benchmarks/run_benchmarks.py" in make  # make bench still runs the suite


def _tiny_onnx(tmp_path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "relu.onnx"
    onnx.save(model, path)
    return path


def test_ort_session_runs_with_our_threads_and_one_inter_op_thread(tmp_path):
    path = _tiny_onnx(tmp_path)
    for model in (str(path), path, path.read_bytes()):  # a path or serialized bytes
        options = harness.ort_session(model, threads=3).get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
    with pytest.raises(ValueError, match="ORT_ENABLE_FAST"):
        harness.ort_session(path, 1, level="ORT_ENABLE_FAST")


def test_ort_candidate_and_reference_agree_with_numpy(tmp_path):
    path = _tiny_onnx(tmp_path)
    x = np.linspace(-2, 2, 15, dtype=np.float32).reshape(3, 5)
    prepared = harness.ort_candidate(str(path), {"x": x}, threads=1, probe_runs=1)
    assert "1 intra-op threads" in prepared.detail and "fastest of 3 levels" in prepared.detail
    np.testing.assert_array_equal(prepared.outputs()["y"], np.maximum(x, 0))  # Relu is exact
    np.testing.assert_array_equal(harness.ort_reference(path, {"x": x}, threads=1)["y"], np.maximum(x, 0))


def test_peer_candidates_refuse_unknown_peers_and_note_skipped_ones(tmp_path, monkeypatch):
    path = str(_tiny_onnx(tmp_path))
    x = {"x": np.ones((3, 5), np.float32)}
    with pytest.raises(InputError, match="tensorflow"):
        harness.peer_candidates(["tensorflow"], path, x, 1)
    with pytest.raises(InputError, match="needs the ONNX model"):
        harness.peer_candidates(["ort"], None, x, 1)
    monkeypatch.setattr(harness.cands, "openvino_available", lambda: False)
    notes: list[str] = []
    assert harness.peer_candidates(["openvino", "torch"], path, x, 1, notes) == []
    assert any("openvino skipped" in n for n in notes) and any("torch skipped" in n and "not a zoo model" in n for n in notes)


class _FakeClock:
    """Every timed run of candidate i lasts ``durations[i]`` seconds (runs alternate start/stop calls)."""

    def __init__(self, candidates, durations):
        self.now, self.pending = 0.0, None
        self.by_run = {id(c.run): d for c, d in zip(candidates, durations)}
        self.last = None
        for c in candidates:
            inner = c.run

            def run(inner=inner, d=self.by_run[id(c.run)]):
                self.last = d
                inner()

            c.run = run

    def __call__(self):
        if self.pending is None:
            self.pending = self.now
            return self.now
        self.now += self.last
        self.pending = None
        return self.now


def test_race_keeps_order_renames_duplicates_and_reports_ratios():
    prepared = [harness.function_candidate("x", lambda: None, pool="p1"), harness.function_candidate("x", lambda: None, pool="p2"),
                harness.function_candidate("z", lambda: None, pool="p3")]
    clock = _FakeClock([p.candidate for p in prepared], [2e-3, 1e-3, 4e-3])
    result = harness.race(prepared, repeat=5, warmup=0, idle_wait=0.0, threads=1, clock=clock, read_wait=lambda: None, cooldown_s=0.0)
    assert [r["name"] for r in result.rows] == ["x#0", "x#1", "z"]
    assert [r["median_ms"] for r in result.rows] == pytest.approx([2.0, 1.0, 4.0])
    assert [r["ratio_to_first"] for r in result.rows] == pytest.approx([1.0, 0.5, 2.0])
    assert all(r["runs"] == 5 and r["dropped"] == 0 for r in result.rows)
    assert result.median_ms("z") == pytest.approx(4.0)
    with pytest.raises(KeyError, match="nope"):
        result.median_ms("nope")
    assert result.to_json()["candidates"] == result.rows and result.machine["threads"] == 1
    with pytest.raises(InputError, match="nothing to time"):
        harness.race([], idle_wait=0.0)


def test_time_alone_times_one_candidate_and_drops_disturbed_runs():
    calls = []
    prepared = harness.function_candidate("f", lambda: calls.append(1), pool="p")
    clock = _FakeClock([prepared.candidate], [3e-3])
    waits = iter([0, 0, 0, 10**9] + [0] * 100)  # the 2nd timed run waited 1 s for a CPU: dropped, one more run
    timings = harness.time_alone(prepared, repeat=4, warmup=2, clock=clock, read_wait=lambda: {1: next(waits)})
    assert len(calls) == 2 + 5
    assert timings.clean_s == pytest.approx([3e-3] * 4) and timings.dropped == 1 and timings.attempts == 5
