"""--quantize auto: per-layer precision under an accuracy budget (1 - mean cosine vs fp32)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest


import tvm_autoglm  # noqa: E402
from helpers import assert_clean_error, cli, ort_run  # noqa: E402
from quantize_models import deep_mlp, one_minus_cos  # noqa: E402
from tvm_autoglm.errors import AutoGLMError, InputError  # noqa: E402
from tvm_autoglm.quantize import sensitivity  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return deep_mlp()


@pytest.fixture(scope="module")
def builds(model):
    """Same model under a tight and a loose budget (compiled once for the module).

    Pinned to AVX2 (runs on every x86 host of the suite): the ``cpu`` target's ladder depends
    on the host (bf16 joins it on CPUs with AVX512-BF16, test_bf16_feature.py)."""
    return {budget: tvm_autoglm.compile(model, target="cpu-x86-avx2", quantize="auto", accuracy_budget=budget) for budget in (1e-9, 2e-3, 0.2)}


def _count(m, precision):
    return m.manifest["quantization"]["counts"][precision]


def test_tight_budget_keeps_more_layers_fp32_than_loose(builds):
    tight, mid, loose = builds[1e-9], builds[2e-3], builds[0.2]
    assert _count(tight, "fp32") == 5  # nothing fits in 1e-9, not even fp16 rounding
    assert _count(loose, "int8") == 5  # a 20% budget takes int8 everywhere
    assert _count(tight, "fp32") > _count(mid, "fp32") >= _count(loose, "fp32")
    assert _count(mid, "int8") < _count(loose, "int8")
    weights = [m.manifest["quantization"]["weight_bytes"] for m in (tight, mid, loose)]
    assert weights[0] > weights[1] > weights[2]


def test_the_outlier_layer_is_the_sensitive_one(builds):
    # deep_mlp puts an x60 activation outlier channel in front of layer 1: its int8 error dominates
    rows = builds[2e-3].manifest["quantization"]["layers"]
    errors = [row["error_int8"] for row in rows]
    assert int(np.argmax(errors)) == 1
    assert rows[1]["precision"] != "int8"


@pytest.mark.parametrize("budget", [2e-3, 0.2])
def test_error_within_budget_on_held_back_inputs(model, builds, budget):
    compiled = builds[budget]
    quant = compiled.manifest["quantization"]
    assert quant["end_to_end_error"] <= budget * quant["headroom"]
    errors = []
    for seed in (101, 202, 303):  # calibration used seeds 0..3
        x = {"x": np.random.default_rng(seed).standard_normal((4, 32)).astype("float32")}
        errors.append(one_minus_cos(ort_run(model, x), compiled.run(x)))
    assert np.mean(errors) <= budget
    assert np.mean(errors) > 0  # something really was quantized


def test_manifest_records_every_layer(builds, tmp_path):
    from tvm_autoglm.pipeline import build_relax
    from tvm_autoglm.quantize import int8, passes_off_for

    sites = int8.count_sites(int8.unfused_module(build_relax(deep_mlp(), "cpu", 3, disabled_passes=passes_off_for("auto"))))
    path = builds[2e-3].export(tmp_path / "auto.so")
    quant = json.loads(path.with_suffix(".json").read_text())["quantization"]
    assert len(quant["layers"]) == len(sites) == 5
    assert len(quant["sensitivity"]) == 5
    for row in quant["layers"]:
        assert row["precision"] in ("int8", "fp16", "fp32")
        assert {"error_int8", "error_fp16", "error_chosen", "weight_shape", "weight_bytes"} <= row.keys()
    assert quant["budget"] == 2e-3 and "generated from input specs" in quant["calibration"]
    assert any("quantize auto: budget" in note for note in json.loads(path.with_suffix(".json").read_text())["notes"])


def test_calibration_npz_is_used(model, tmp_path):
    data = np.random.default_rng(9).standard_normal((3, 4, 32)).astype("float32")
    np.savez(tmp_path / "calib.npz", x=data)
    compiled = tvm_autoglm.compile(model, quantize="auto", accuracy_budget=0.2, calibration=str(tmp_path / "calib.npz"))
    quant = compiled.manifest["quantization"]
    assert quant["calibration_samples"] == 3 and quant["calibration"].endswith("calib.npz")


def test_bad_calibration_and_budget_are_clear_errors(tmp_path):
    specs = [{"name": "x", "shape": [4, 32], "dtype": "float32"}]
    np.savez(tmp_path / "wrong.npz", y=np.zeros((4, 32), "float32"))
    with pytest.raises(InputError, match="no array for input 'x'"):
        sensitivity.load_calibration(tmp_path / "wrong.npz", specs)
    np.savez(tmp_path / "shape.npz", x=np.zeros((4, 31), "float32"))
    with pytest.raises(InputError, match="shape"):
        sensitivity.load_calibration(tmp_path / "shape.npz", specs)
    assert len(sensitivity.load_calibration(tmp_path / "shape.npz", [{"name": "x", "shape": [31], "dtype": "float32"}])) == 4
    with pytest.raises(AutoGLMError, match="accuracy-budget"):
        tvm_autoglm.compile(deep_mlp(), quantize="auto", accuracy_budget=1.5)


def test_cli_missing_calibration_file(tmp_path):
    onnx.save(deep_mlp(), tmp_path / "m.onnx")
    result = cli("compile", "--model", tmp_path / "m.onnx", "--output", tmp_path / "m.so", "--quantize", "auto",
                 "--calibration", tmp_path / "nope.npz", "--quiet")
    assert_clean_error(result, "--calibration", "no such file")


def test_greedy_prefers_cheap_error_per_byte():
    # layer 0 is big and insensitive, layer 1 small and sensitive: with room for one int8 move, layer 0 gets it
    sens = [{"fp32": 0.0, "int8": 0.001, "fp16": 1e-7}, {"fp32": 0.0, "int8": 0.001, "fp16": 1e-7}]
    moves = sensitivity.choose(sens, sizes=[1000, 10], limit=0.0015)
    plan = sensitivity.plan_from(moves, 2)
    assert plan == ["int8", "fp16"]


def test_cpu_ladder_has_no_fp16(builds):
    """On CPU targets an fp16 layer converts to fp32 in the kernel and runs slower than fp32,
    so auto chooses between int8 and fp32 only; targets that compute in fp16 keep it."""
    from tvm_autoglm.targets import load_target

    for m in builds.values():
        quant = m.manifest["quantization"]
        assert quant["ladder"] == ["int8", "fp32"]
        assert quant["counts"]["fp16"] == 0
        assert all(row["error_fp16"] is None for row in quant["layers"])
    assert sensitivity.ladder_for(load_target("cpu-x86-avx2")) == ("int8", "fp32")
    assert sensitivity.ladder_for(load_target("cpu-x86-avx512")) == ("int8", "fp32")  # cascadelake: no AVX512-BF16
    assert sensitivity.ladder_for(load_target("gpu-ampere")) == ("int8", "fp16", "fp32")
    assert sensitivity.ladder_for(load_target("npu-sim")) == ("int8", "fp16", "fp32")


def test_inspect_shows_each_layers_choice(tmp_path):
    onnx.save(deep_mlp(), tmp_path / "m.onnx")
    result = cli("inspect", "--model", tmp_path / "m.onnx", "--target", "cpu-x86-avx2", "--quantize", "auto", "--accuracy-budget", "0.2", "--json", check=True)
    quant = json.loads(result.stdout)["quantization"]
    assert [row["precision"] for row in quant["layers"]] == ["int8"] * 5  # the loose budget of test_tight_budget...
    assert quant["ladder"] == ["int8", "fp32"] and quant["end_to_end_error"] <= 0.2
    text = cli("inspect", "--model", tmp_path / "m.onnx", "--target", "cpu-x86-avx2", "--quantize", "auto", "--accuracy-budget", "1e-9", check=True).stdout
    assert "quantization (auto): int8 0, fp16 0, fp32 5" in text
    assert text.count(" fp32 ") >= 5 and "matmul_4" in text
