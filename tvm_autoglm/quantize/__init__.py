"""``--quantize``: lower-precision builds, dispatched by mode.

fp16/bf16 are mixed precision (``mixed_precision``): matmul and conv take
half-precision operands and accumulate in fp32; everything else stays fp32.
int8 (``int8``) is dynamic quantization of every constant-weight matmul, in the
style of onnxruntime's ``quantize_dynamic``. auto (``sensitivity``) picks int8,
fp16 or fp32 per matmul layer by measured sensitivity so that the end-to-end
error (1 - mean cosine vs fp32) stays within ``budget``. wint8 (``wint8_build``) is
weight-only int8 for memory-bound decode: int8 weights, fp32 activations and
arithmetic, layers kept fp32 where the worst output-row cosine would break ``budget``.
"""

from __future__ import annotations

from ..errors import AutoGLMError

MODES = ("none", "fp16", "bf16", "int8", "auto", "wint8")
#: The LLVM CPU feature behind bf16: hardware fp32<->bf16 conversion (Zen 4/5, Cooper Lake, Sapphire Rapids).
#: ``--quantize bf16`` says what it does without it; ``--quantize auto`` offers bf16 only with it.
from .cpu_features import BF16_FEATURE


def passes_off_for(mode: str | None) -> tuple[str, ...]:
    """Graph passes a precision mode needs turned off before ``apply_quantization``.

    Every mode rewrites ``R.matmul`` with a constant [K, N] weight, which
    ``pack_dense_weights`` has already turned into a packed kernel call. fp16/bf16
    also go through ToMixedPrecision, which rewrites named ops only: it cannot
    see through the call_tir kernels of ``fast_math`` (whose approximations are
    float32 formulas), ``winograd_conv`` or ``pack_conv_weights``, so they keep
    the named GELU/erf/tanh ops and ``R.nn.conv2d``. (With those passes on, the
    convs stayed fp32 under ``--quantize fp16``, and a packed conv fed by an fp16
    producer made ToMixedPrecision fail outright: which convs the passes took
    depends on the SIMD width, so it failed on AVX-512 only.) int8 and auto
    rewrite matmuls per layer without ToMixedPrecision, so their GELU stays the
    vectorized float32 one and their convs stay packed; but they rewrite the
    graph function only, and ``fuse_epilogue`` moves a matmul whose output is
    reshaped into a composite function: every ONNX ``Gemm`` of a Hugging Face
    ``Conv1D`` export (GPT-2: reshape to 2-D, Gemm, reshape back) ended there,
    and ``--quantize int8`` found the LM head only (or nothing at all).
    """
    mode = (mode or "none").lower()
    if mode == "none":
        return ()
    if mode in ("fp16", "bf16"):
        return ("pack_dense_weights", "fast_math", "winograd_conv", "pack_conv_weights")
    return ("pack_dense_weights", "fuse_epilogue")


def apply_quantization(build, mode: str, budget: float | None = None, calibration=None, log=None):
    """RelaxBuild -> RelaxBuild at the requested precision (``build.notes`` says which)."""
    mode = (mode or "none").lower()
    if mode == "none":
        return build
    clash = [p for p in passes_off_for(mode) if p in build.passes]
    if clash:
        raise AutoGLMError(
            f"--quantize {mode}: the build ran {', '.join(clash)}, which hides the matmuls this mode rewrites",
            hint=f"build with disabled_passes={passes_off_for(mode)!r} (tvm_autoglm.compile does this itself)",
        )
    if mode in ("fp16", "bf16"):
        from .mixed_precision import apply_mixed_precision

        return apply_mixed_precision(build, mode, log=log)
    if mode == "int8":
        from .int8 import apply_plan

        return apply_plan(build, None, {}, "int8", log=log)
    if mode == "wint8":
        from .wint8_build import apply_wint8

        if calibration is not None:
            raise AutoGLMError("--quantize wint8 measures its error on seeded inputs and takes no --calibration")
        return apply_wint8(build, budget, log=log)
    if mode == "auto":
        from .sensitivity import apply_auto

        return apply_auto(build, budget, calibration, log=log)
    raise AutoGLMError(f"--quantize {mode}: unknown mode; choose one of {', '.join(MODES)}")


__all__ = ["BF16_FEATURE", "MODES", "apply_quantization", "passes_off_for"]
