"""fp16/bf16 mixed precision on CPU: the kernels really take half-precision operands, the result
stays close to onnxruntime's fp32, and the manifest says which precision was built.

Tolerances: fp16 rtol 1e-2, atol 1e-2 (10-bit mantissa: each operand rounds by up to 2^-11
relative; a 64-256 long dot product and a layernorm on top keep the error near 1e-3 of scale);
bf16 rtol 5e-2, atol 5e-2 (7-bit mantissa, 8x coarser than fp16).
"""

from __future__ import annotations


import pytest
import tvm


from gpu.gpu_models import bert_layer, small_cnn  # noqa: E402
from helpers import assert_close, ort_run  # noqa: E402

TOL = {"fp16": (1e-2, 1e-2), "bf16": (5e-2, 5e-2)}
DTYPE = {"fp16": "float16", "bf16": "bfloat16"}
# conv/matmul kernels after fusion: bert_layer's merged QKV, output and two FFN projections;
# small_cnn's two convs and its classifier
CONTRACTIONS = {bert_layer: 4, small_cnn: 3}


def _half_kernels(mod, dtype: str) -> list[str]:
    return sorted(
        gv.name_hint
        for gv, func in mod.functions.items()
        if isinstance(func, tvm.tirx.PrimFunc) and any(str(getattr(p, "dtype", "")) == dtype for p in func.params)
    )


def _assert_every_conv_and_matmul_is_half(mod, dtype: str, expected: int) -> None:
    """The kernels doing the model's convs and matmuls (named after them by FuseOps), all on half operands.

    A conv that a CPU pass turned into its own call_tir kernel first (Winograd, packed
    weights) would be invisible to ToMixedPrecision and stay fp32 under a
    "mixed precision" note.
    """
    names = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    # (fuse_attention's composite kernel, fused_relax_matmul_..._softmax_..., is not a plain matmul and stays fp32)
    contractions = sorted(n for n in names if n.startswith(("conv2d", "fused_conv2d", "matmul", "fused_matmul")) or "winograd" in n)
    assert len(contractions) == expected, contractions
    assert set(contractions) <= set(_half_kernels(mod, dtype)), (contractions, _half_kernels(mod, dtype))


@pytest.mark.parametrize(
    "make,mode",
    [(bert_layer, "fp16"), (small_cnn, "fp16"), (small_cnn, "bf16")],
    ids=["bert-fp16", "cnn-fp16", "cnn-bf16"],
)
def test_mixed_precision_on_cpu_matches_onnxruntime(make, mode):
    import tvm_autoglm

    model = make()
    compiled = tvm_autoglm.compile(model, target="cpu", quantize=mode)
    _assert_every_conv_and_matmul_is_half(compiled.build.mod, DTYPE[mode], CONTRACTIONS[make])
    assert any(note.startswith(f"precision: {mode} mixed precision") for note in compiled.manifest["notes"])
    assert f"to_mixed_precision_{mode}" in compiled.manifest["passes"]
    assert [spec["dtype"] for spec in compiled.outputs] == ["float32"], "outputs stay fp32"
    inputs = compiled.example_inputs(seed=2)
    rtol, atol = TOL[mode]
    assert_close(compiled.run(inputs), ort_run(model, inputs), rtol=rtol, atol=atol)


@pytest.mark.parametrize("target,mode", [("cpu-x86-avx512", "fp16"), ("cpu-x86-avx512", "bf16"), ("cpu-znver5", "bf16")])
def test_mixed_precision_cnn_compiles_for_avx512(target, mode):
    """Compile only (this host may lack AVX-512). With 16 fp32 lanes the CPU conv passes took
    other convs than on AVX2, and a packed conv fed by an fp16 producer made ToMixedPrecision
    fail ("Expected TensorType, but got R.Callable"); bf16 pooling then failed in codegen."""
    from tvm_autoglm.pipeline import compile_model

    done = compile_model(small_cnn(), target, 3, quantize=mode)
    build, scheduled, executable, manifest = done.build, done.scheduled, done.executable, done.manifest
    _assert_every_conv_and_matmul_is_half(build.mod, DTYPE[mode], CONTRACTIONS[small_cnn])
    assert f"to_mixed_precision_{mode}" in manifest["passes"]
    assert not {"winograd_conv", "pack_conv_weights"} & set(manifest["passes"])
    assert executable is not None


def test_mixed_precision_rejects_other_modes():
    from tvm_autoglm.errors import AutoGLMError
    from tvm_autoglm.quantize.mixed_precision import apply_mixed_precision

    with pytest.raises(AutoGLMError, match="supports fp16 and bf16"):
        apply_mixed_precision(None, "int4")
