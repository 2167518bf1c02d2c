"""``--quantize``: lower-precision builds, dispatched by mode.

fp16/bf16 are mixed precision (``mixed_precision``): matmul and conv take
half-precision operands and accumulate in fp32; everything else stays fp32.
int8 (``int8``) is dynamic quantization of every constant-weight matmul, in the
style of onnxruntime's ``quantize_dynamic``. auto (``sensitivity``) picks int8,
fp16 or fp32 per matmul layer by measured sensitivity so that the end-to-end
error (1 - mean cosine vs fp32) stays within ``budget``.
"""

from __future__ import annotations

from ..errors import AutoGLMError

MODES = ("none", "fp16", "bf16", "int8", "auto")


def apply_quantization(build, mode: str, budget: float | None = None, calibration=None, log=None):
    """RelaxBuild -> RelaxBuild at the requested precision (``build.notes`` says which)."""
    mode = (mode or "none").lower()
    if mode == "none":
        return build
    if mode in ("fp16", "bf16"):
        from .mixed_precision import apply_mixed_precision

        return apply_mixed_precision(build, mode, log=log)
    if mode == "int8":
        from .int8 import apply_plan

        return apply_plan(build, None, {}, "int8", log=log)
    if mode == "auto":
        from .sensitivity import apply_auto

        return apply_auto(build, budget, calibration, log=log)
    raise AutoGLMError(f"--quantize {mode}: unknown mode; choose one of {', '.join(MODES)}")


__all__ = ["MODES", "apply_quantization"]
