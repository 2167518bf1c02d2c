"""bf16 and the CPU feature behind it (AVX512-BF16), issue #22.

``--quantize bf16`` on a CPU target without AVX512-BF16 says so in one line (the feature it
lacks, what it does instead); ``--quantize auto`` offers bf16 as a rung only on targets that
have it. Targets are pinned (cpu-x86-avx2 = haswell and cpu-x86-avx512 = cascadelake have
no AVX512-BF16; cpu-znver5 has it) or the host is pretended with AUTOGLM_HOST_CPU, so these
tests mean the same on AVX2 and AVX-512 machines. AVX-512 builds are compiled, never run.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tvm_autoglm  # noqa: E402
from helpers import ort_run  # noqa: E402
from quantize_models import deep_mlp  # noqa: E402
from tvm_autoglm.quantize import int8, sensitivity  # noqa: E402
from tvm_autoglm.quantize.mixed_precision import bf16_feature_note  # noqa: E402
from tvm_autoglm.targets import HOST_CPU_ENV, cpu_has_feature, load_target  # noqa: E402

NO_BF16 = ("cpu-x86-avx2", "cpu-x86-avx512")
WITH_BF16 = "cpu-znver5"


@pytest.mark.parametrize("name,expected", [("cpu-x86-avx2", False), ("cpu-x86-avx512", False), ("cpu-znver5", True),
                                           ("gpu-ampere", False), ("npu-sim", False)])
def test_bf16_feature_is_read_from_the_target(name, expected):
    assert cpu_has_feature(load_target(name), "avx512bf16") is expected


@pytest.mark.parametrize("host,expected", [("znver3", False), ("znver4", True)])
def test_cpu_target_asks_the_pretended_host(host, expected, monkeypatch):
    monkeypatch.setenv(HOST_CPU_ENV, host)
    spec = load_target("cpu")
    assert spec.tvm_config["mcpu"] == host
    assert cpu_has_feature(spec, "avx512bf16") is expected
    assert ("bf16" in sensitivity.ladder_for(spec)) is expected
    assert (bf16_feature_note(spec) is None) is expected


def test_auto_ladder_offers_bf16_only_where_the_target_has_it():
    for name in NO_BF16:
        assert sensitivity.ladder_for(load_target(name)) == ("int8", "fp32")
    assert sensitivity.ladder_for(load_target(WITH_BF16)) == ("int8", "bf16", "fp32")
    assert sensitivity.ladder_for(load_target("gpu-ampere")) == ("int8", "fp16", "fp32")  # GPUs: unchanged


@pytest.mark.parametrize("target", NO_BF16)
def test_quantize_bf16_without_the_feature_says_so_in_one_line(target):
    from tvm_autoglm.pipeline import compile_model
    from tvm_autoglm.progress import StageLog

    stream = io.StringIO()
    done = compile_model(deep_mlp(), target, 3, quantize="bf16", log=StageLog(stream=stream))
    build, manifest = done.build, done.manifest
    lines = [line for line in stream.getvalue().splitlines() if "AVX512-BF16" in line]
    assert len(lines) == 1, stream.getvalue()
    line = lines[0]
    assert "avx512bf16" in line and target in line and "converted to fp32" in line  # the feature, and what it does instead
    assert line.removeprefix("[compile] ") in manifest["notes"]
    assert "bfloat16" in build.mod.script()  # it still builds bf16, as said


def test_quantize_bf16_with_the_feature_is_silent():
    from tvm_autoglm.pipeline import compile_model
    from tvm_autoglm.progress import StageLog

    stream = io.StringIO()
    manifest = compile_model(deep_mlp(), WITH_BF16, 3, quantize="bf16", log=StageLog(stream=stream)).manifest
    assert "AVX512-BF16" not in stream.getvalue()
    assert not any("AVX512-BF16" in n for n in manifest["notes"])


def test_bf16_build_without_the_feature_matches_onnxruntime():
    """The AVX2 build runs on every x86 host of the suite: bf16 tolerance (7-bit mantissa) vs onnxruntime fp32."""
    model = deep_mlp()
    x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    got = tvm_autoglm.compile(model, target="cpu-x86-avx2", quantize="bf16").run({"x": x})
    want = ort_run(model, {"x": x})
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=5e-2, atol=5e-2)


@pytest.fixture(scope="module")
def auto_builds():
    """deep_mlp under --quantize auto, budget 1e-4, for a target with and one without AVX512-BF16 (compiled, not run)."""
    return {t: tvm_autoglm.compile(deep_mlp(), target=t, quantize="auto", accuracy_budget=1e-4) for t in ("cpu-x86-avx2", WITH_BF16)}


def test_auto_uses_bf16_only_on_a_bf16_target(auto_builds):
    without, with_ = auto_builds["cpu-x86-avx2"].manifest["quantization"], auto_builds[WITH_BF16].manifest["quantization"]
    assert without["ladder"] == ["int8", "fp32"] and without["counts"]["bf16"] == 0
    assert all(row["error_bf16"] is None for row in without["layers"])
    assert with_["ladder"] == ["int8", "bf16", "fp32"]
    # bf16 rounds operands to 8 significant bits, int8 to ~7 over the whole tensor range: measured, per layer
    assert all(0 < row["error_bf16"] < row["error_int8"] for row in with_["layers"])
    # under the same budget the bf16 rung takes layers that stay fp32 without it (cheap error per byte saved)
    assert with_["counts"]["bf16"] > 0 and with_["counts"]["fp32"] < without["counts"]["fp32"]
    assert with_["end_to_end_error"] <= 1e-4 * sensitivity.HEADROOM
    assert "bfloat16" in auto_builds[WITH_BF16].build.mod.script()


def _round_to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 (ties to even), returned as float32: an independent reference."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("rows,k,n", [(3, 17, 5), (1, 64, 33)])
def test_bf16_layer_rewrite_matches_rounded_float64(rows, k, n):
    """A plan with a bf16 layer (what auto builds on a bf16 target), run on this host: operands rounded to bf16,
    products and sums in fp32. Reference: the same rounding in numpy, then float64 (tolerance 1e-5 relative)."""
    import tvm
    from tvm import relax

    rng = np.random.default_rng(k)
    w = rng.standard_normal((k, n)).astype(np.float32)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((rows, k), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(xv, relax.const(w)))
        bb.emit_func_output(out)
    mod, sites = int8.rewrite(bb.get(), ["bf16"])
    assert len(sites) == 1
    target = load_target("cpu-x86-avx2").tvm_target()
    with target:
        mod = relax.get_pipeline("zero")(mod)
    got = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = _round_to_bf16(x).astype(np.float64) @ _round_to_bf16(w).astype(np.float64)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-5 * scale
    assert np.abs(got - exact).max() > 1e-4 * scale  # the operands really were rounded (not an fp32 matmul)
