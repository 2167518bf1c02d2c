"""``auto-glm bench``: interleaved candidates, ratios to the first, baselines given their best shot."""

from __future__ import annotations

import json

import pytest


from _measure_cli import assert_one_line_error  # noqa: E402

from tvm_autoglm.cli.cmd_bench import bench, format_result  # noqa: E402
from tvm_autoglm.measure.candidates import ORT_LEVELS, zoo_origin  # noqa: E402


def test_bench_against_ort_and_another_build(mm_build, chain_builds, monkeypatch):
    monkeypatch.setenv("TVM_NUM_THREADS", "2")  # restored after the test; bench sets it too
    result = bench(str(mm_build["so"]), ["ort", str(mm_build["so"]), "torch"], model=str(mm_build["onnx"]), threads=2, repeat=5, warmup=1, idle_wait=0)
    rows = result["candidates"]
    assert [r["name"] for r in rows] == ["mm_o0.so#0", "onnxruntime", "mm_o0.so#2"]
    assert rows[0]["ratio_to_first"] == 1.0
    assert all(r["runs"] == 5 for r in rows)
    for r in rows:
        assert r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["max_ms"]
        assert r["ratio_to_first"] == pytest.approx(r["median_ms"] / rows[0]["median_ms"])
    assert any(level in rows[1]["detail"] for level in ORT_LEVELS) and "2 intra-op threads" in rows[1]["detail"]
    assert result["machine"]["threads"] == 2
    assert any("--vs torch skipped" in n for n in result["notes"])  # not a zoo model
    text = format_result(result)
    assert "machine:" in text and "dropped" in text


def test_zoo_origin_parses_cache_names():
    assert zoo_origin("/x/bert-base-s128-b1-dynamo-seed0.onnx") == {"name": "bert", "size": "base", "seq": 128, "batch": 1, "seed": 0}
    assert zoo_origin("gpt-neox-small-s64-b2-torchscript-seed3.onnx")["name"] == "gpt-neox"
    assert zoo_origin("resnet50-base-img-b1-dynamo-seed0.onnx")["name"] == "resnet50"
    assert zoo_origin("my-model.onnx") is None and zoo_origin(None) is None


def test_cli_bench_errors_are_one_line(mm_build, auto_glm):
    assert_one_line_error(auto_glm("bench", "--binary", mm_build["so"], "--vs", "tensorflow"), "tensorflow")
    assert_one_line_error(auto_glm("bench", "--binary", mm_build["so"], "--vs", "ort", "--model", "/nonexistent/m.onnx"), "m.onnx")


def test_cli_bench_json_uses_manifest_source(mm_build, auto_glm):
    code, out, err = auto_glm("bench", "--binary", mm_build["so"], "--vs", "ort", "--repeat", "3", "--warmup", "1", "--idle-wait", "0", "--threads", "1", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["model"] == str(mm_build["onnx"])  # --model defaulted to the manifest's source path
    assert [r["name"] for r in data["candidates"]] == ["mm_o0.so", "onnxruntime"]
    assert data["machine"]["threads"] == 1


@pytest.mark.slow
def test_bench_vs_torch_for_a_zoo_model(tmp_path, monkeypatch):
    import tvm_autoglm
    from tvm_autoglm import zoo

    monkeypatch.setenv("AUTOGLM_CACHE", str(tmp_path))
    onnx_path = zoo.cached("bert", "tiny", seq=16, exporter="torchscript")
    so = tvm_autoglm.compile(onnx_path).export(tmp_path / "bert.so")
    result = bench(str(so), ["torch", "ort"], threads=2, repeat=5, warmup=1, idle_wait=0)
    assert [r["name"] for r in result["candidates"]] == ["bert.so", "pytorch", "onnxruntime"]
    assert "torch" in result["candidates"][1]["detail"] and not result["notes"]


def test_bench_against_openvino_f32_and_its_default_precision(mm_build, monkeypatch):
    pytest.importorskip("openvino")
    import numpy as np

    from tvm_autoglm.measure import candidates as cands
    from tvm_autoglm.runtime import Session, example_inputs

    monkeypatch.setenv("TVM_NUM_THREADS", "2")
    result = bench(str(mm_build["so"]), ["openvino"], model=str(mm_build["onnx"]), threads=2, repeat=3, warmup=1, idle_wait=0)
    rows = result["candidates"]
    assert [r["name"] for r in rows][:2] == ["mm_o0.so", "openvino-f32"]
    assert rows[2]["name"].startswith("openvino-default-")  # named after the precision it reports
    assert "inference precision float32" in rows[1]["detail"] and "2 threads" in rows[1]["detail"]
    # the f32 peer computes the same function as our build (fp32 tolerance 1e-4 relative, 1e-5 absolute)
    session = Session.open(mm_build["so"])
    inputs = example_inputs(session.input_specs)
    ours = session.run(inputs)
    ov_f32 = cands.openvino_candidates(str(mm_build["onnx"]), inputs, threads=2, default_precision=False)
    assert len(ov_f32) == 1
    theirs = ov_f32[0].outputs()
    for name, value in ours.items():
        np.testing.assert_allclose(theirs[name], value, rtol=1e-4, atol=1e-5)


def test_bench_skips_openvino_with_a_note_when_not_installed(mm_build, monkeypatch):
    from tvm_autoglm.measure import candidates as cands

    monkeypatch.setattr(cands, "openvino_available", lambda: False)
    result = bench(str(mm_build["so"]), ["openvino-f32"], model=str(mm_build["onnx"]), threads=1, repeat=3, warmup=1, idle_wait=0)
    assert [r["name"] for r in result["candidates"]] == ["mm_o0.so"]
    assert any("--vs openvino skipped" in n and "peers" in n for n in result["notes"])
