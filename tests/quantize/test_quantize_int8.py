"""--quantize int8: the int8 x int8 -> int32 kernel is exact; whole models stay close to fp32."""

from __future__ import annotations


import numpy as np
import pytest
import tvm
from tvm import relax


import tvm_autoglm  # noqa: E402
from helpers import mlp_model, ort_run  # noqa: E402
from quantize_models import deep_mlp, one_minus_cos  # noqa: E402
from tvm_autoglm.quantize import int8, passes_off_for  # noqa: E402
from tvm_autoglm.quantize.sensitivity import cosine  # noqa: E402


def _compile_cpu(mod):
    """The build path's lowering: fusion, our default CPU schedules, codegen."""
    from tvm_autoglm.scheduling import schedule_module
    from tvm_autoglm.targets import load_target

    spec = load_target("cpu")
    with spec.tvm_target():
        mod = relax.get_pipeline("zero")(mod)
    mod, _ = schedule_module(mod, spec, 3, None, False)
    return relax.VirtualMachine(tvm.compile(mod, spec.tvm_target()), tvm.cpu())


@pytest.mark.parametrize("m,k,n", [(4, 32, 16), (1, 16, 128, ), (3, 200, 24)])
def test_int8_matmul_kernel_is_bit_exact(m, k, n):
    # extremes (+-127, -128) included: int32 accumulation must not saturate or round
    rng = np.random.default_rng(k)
    x = rng.integers(-128, 128, size=(m, k)).astype(np.int8)
    x[0, :] = 127
    w = rng.integers(-128, 128, size=(k, n)).astype(np.int8)
    w[:, 0] = 127
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((m, k), "int8"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(xv, relax.const(w, "int8"), out_dtype="int32"))
        bb.emit_func_output(out)
    got = _compile_cpu(bb.get())["main"](tvm.runtime.tensor(x)).numpy()
    expected = x.astype(np.int32) @ w.astype(np.int32)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


def test_weight_quantization_is_symmetric_per_output_channel():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((24, 10)).astype(np.float32) * np.arange(1, 11, dtype=np.float32)
    wq, scale = int8.quantize_weight(w)
    assert wq.dtype == np.int8 and scale.shape == (10,)
    np.testing.assert_array_equal(np.abs(wq).max(axis=0), 127)  # every channel uses the full grid
    assert np.all(np.abs(wq.astype(np.float32) * scale - w) <= scale / 2 + 1e-6)


def test_rewrite_finds_constant_weight_matmuls_only():
    from tvm_autoglm.pipeline import build_relax
    mod = int8.unfused_module(build_relax(mlp_model(), "cpu", 3, disabled_passes=passes_off_for("int8")))
    rewritten, sites = int8.rewrite(mod)
    assert [s["weight_shape"] for s in sites] == [[16, 32], [32, 8]]
    text = rewritten.script()
    assert text.count('out_dtype="int32"') == 2
    assert text.count('dtype="int8"') >= 2


def test_int8_mlp_matches_fp32(tmp_path):
    model = deep_mlp(outlier_layer=-1)
    x = {"x": np.random.default_rng(7).standard_normal((4, 32)).astype("float32")}
    ref = ort_run(model, x)
    q = tvm_autoglm.compile(model, quantize="int8")
    out = q.run(x)
    # 5 layers of ~0.4% relative rounding noise each: cosine well above 0.99
    assert cosine(ref["y"], out["y"]) >= 0.99
    quant = q.manifest["quantization"]
    assert quant["mode"] == "int8" and quant["counts"] == {"int8": 5, "fp16": 0, "bf16": 0, "fp32": 0}
    assert quant["weight_bytes"] * 4 == quant["weight_bytes_fp32"]
    assert "quantize_int8" in q.manifest["passes"]
    # and it is really different from the fp32 build (the rewrite took effect)
    assert np.abs(ref["y"] - out["y"]).max() > 1e-5


def test_int8_exported_manifest_records_layers(tmp_path):
    import json

    q = tvm_autoglm.compile(mlp_model(), quantize="int8")
    path = q.export(tmp_path / "mlp_int8.so")
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert [row["precision"] for row in manifest["quantization"]["layers"]] == ["int8", "int8"]
    again = tvm_autoglm.load(path)
    x = {"x": np.ones((2, 16), "float32"), "scale": np.array([0.5], "float32")}
    np.testing.assert_allclose(again.run(x)["logits"], q.run(x)["logits"], rtol=0, atol=0)


def test_int8_tiny_bert_matches_fp32(zoo_build):
    from tvm_autoglm import zoo

    path = zoo_build("bert", "torchscript")
    inputs = zoo.example_inputs("bert", "tiny", seq=16, seed=1)
    ref = ort_run(path, inputs)
    q = tvm_autoglm.compile(path, quantize="int8")
    assert q.manifest["quantization"]["counts"]["int8"] >= 8  # QKV/out/FFN per layer + pooler
    assert one_minus_cos(ref, q.run(inputs)) <= 0.01


from zoo_fixtures import zoo_build, zoo_dir  # noqa: E402,F401  (fixtures)


def test_cli_compile_int8_quantizes_the_same_layers_as_the_api(tmp_path):
    """`auto-glm compile --quantize int8` goes through the API's compile flow: the passes that
    hide matmuls from the rewrite are turned off there too (both constant-weight matmuls quantized)."""
    import json

    import onnx
    from helpers import cli

    onnx.save(mlp_model(), tmp_path / "m.onnx")
    cli("compile", "--model", tmp_path / "m.onnx", "--output", tmp_path / "m.so", "--quantize", "int8", "--quiet", check=True)
    quant = json.loads((tmp_path / "m.json").read_text())["quantization"]
    assert quant["counts"] == {"int8": 2, "fp16": 0, "bf16": 0, "fp32": 0}


def test_quantizing_a_build_with_packed_weights_is_a_clear_error():
    from tvm_autoglm.errors import AutoGLMError
    from tvm_autoglm.pipeline import build_relax
    from tvm_autoglm.quantize import apply_quantization

    build = build_relax(mlp_model(), "cpu", 3)
    assert "pack_dense_weights" in build.passes
    with pytest.raises(AutoGLMError, match="pack_dense_weights.*hides the matmuls"):
        apply_quantization(build, "int8")
