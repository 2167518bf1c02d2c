"""fp16 / bf16 mixed precision via ``relax.transform.ToMixedPrecision``.

``ToMixedPrecision(out_dtype="float32")`` casts the operands of matmul/conv to
fp16 and keeps their accumulator and output in fp32, so reductions (softmax,
layernorm) and residual adds stay fp32: on GPUs this is what tensor cores want
(dlight's Matmul tensorizes fp16 x fp16 -> fp32), and accuracy drops only by
the operand rounding.

It rewrites high-level Relax ops, so it must run *before* fusion/legalization;
``RelaxBuild.mod`` is already fused, so the module is rebuilt from the cleaned
ONNX with the same passes, then mixed precision, then the same fusion.
bf16 is the fp16 result with every fp16 cast turned into bf16 (same policy,
wider exponent, fewer mantissa bits).
"""

from __future__ import annotations

import dataclasses
import time

import tvm
from tvm import relax

from ..errors import AutoGLMError, CompileError, stage_errors
from ..backends import for_target
from ..ir_utils import copy_module, op_histogram
from ..fusion import fuse_module
from ..pass_report import PassReport
from ..progress import StageLog
from .cpu_features import BF16_FEATURE
from .kernel_choice import use_bf16_kernel
from .pack_bf16 import pack_bf16_matmuls

_FUSION = ("fuse_ops", "legalize_ops")


def unfused_module(build) -> tvm.IRModule:
    """The build's Relax module after our passes and before fusion (kept by the pipeline)."""
    if build.pre_fusion_mod is None:
        raise CompileError("mixed precision needs the build's pre-fusion module, and this build has none")
    return build.pre_fusion_mod


@relax.expr_functor.mutator
class _HalfToBFloat16(relax.PyExprMutator):
    """Every ``astype(x, "float16")`` becomes ``astype(x, "bfloat16")``; the ops that consume it re-infer."""

    def visit_call_(self, call):  # noqa: D102 - visitor hook
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.astype" and str(call.attrs.dtype) == "float16":
            return relax.op.astype(call.args[0], "bfloat16")
        return call


def _to_bf16(mod: tvm.IRModule) -> tvm.IRModule:
    out = copy_module(mod)
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            mutator = _HalfToBFloat16(mod)
            out[gvar] = mutator.visit_expr(func)
    return out


def _count_dtype(mod: tvm.IRModule, dtype: str) -> int:
    """astype calls to ``dtype`` across Relax functions (how many operands were converted)."""
    count = 0

    def visit(expr):
        nonlocal count
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.astype":
            if str(expr.attrs.dtype) == dtype:
                count += 1

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return count


def apply_mixed_precision(build, mode: str, log=None):
    if mode not in ("fp16", "bf16"):
        raise AutoGLMError(f"mixed precision supports fp16 and bf16, not '{mode}'")
    log = log or StageLog(enabled=False)
    dtype = "float16" if mode == "fp16" else "bfloat16"
    with log.stage(f"mixed precision ({mode}, fp32 accumulation)"):
        with stage_errors(f"--quantize {mode} (rebuilding the unfused module)"):
            mod = unfused_module(build)
        before = op_histogram(mod)
        start = time.perf_counter()
        target = build.target.tvm_target()
        with stage_errors(f"--quantize {mode} on target {build.target.name}"):
            with target:
                mod = relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
                packed = 0
                if mode == "bf16":
                    mod = _to_bf16(mod)
                    converted = _count_dtype(mod, dtype)
                    if use_bf16_kernel(build.target):
                        mod, packed = pack_bf16_matmuls(mod)  # vdpbf16ps kernels (schedule_rules/bf16_matmul.py)
                else:
                    converted = _count_dtype(mod, dtype)
                report = PassReport(f"to_mixed_precision_{mode}", time.perf_counter() - start, before, op_histogram(mod))
                mod = fuse_module(mod, build.target, 1 if "fuse_ops" in build.passes else 0)
    notes = [*build.notes]
    if mode == "bf16" and for_target(build.target).checks_bf16_codegen:
        _check_bf16_codegen(build.target)
        missing = bf16_feature_note(build.target)
        if missing:
            log.note(missing)
            notes.append(missing)
    passes = [p for p in build.passes if p not in _FUSION] + [report.name] + [p for p in build.passes if p in _FUSION]
    reports = [r for r in build.pass_reports if r.name not in _FUSION] + [report] + [r for r in build.pass_reports if r.name in _FUSION]
    note = f"precision: {mode} mixed precision (matmul/conv operands {dtype}, fp32 accumulation and outputs; {converted} casts)"
    if packed:
        note += f"; {packed} matmuls on the packed vdpbf16ps kernel"
    return dataclasses.replace(build, mod=mod, passes=passes, pass_reports=reports, notes=[*notes, note])


def bf16_feature_note(spec) -> str | None:
    """One line when ``spec`` is a CPU target without AVX512-BF16: what ``--quantize bf16`` does there instead.

    Without the feature there is no hardware fp32<->bf16 conversion, so every bf16 operand is
    widened to fp32 in software and the arithmetic runs in fp32: the build keeps bf16's
    rounding (and half the weight bytes) but gains no speed. None on CPUs that have it.
    """
    from ..targets import cpu_has_feature

    if cpu_has_feature(spec, BF16_FEATURE):
        return None
    mcpu = spec.tvm_config.get("mcpu", "?")
    return (f"--quantize bf16: target {spec.name} (mcpu {mcpu}) lacks the CPU feature AVX512-BF16 ({BF16_FEATURE}); "
            "bf16 operands will be converted to fp32 in software and computed in fp32 (bf16 rounding and weight size, no bf16 speed-up)")


_BF16_OK: dict[str, bool] = {}


def _check_bf16_codegen(spec) -> None:
    """bf16 arithmetic on an LLVM CPU target: compile a 4x4 bf16 matmul once per target, refuse clearly if it fails."""
    key = str(spec.tvm_config)
    if key not in _BF16_OK:
        bb = relax.BlockBuilder()
        a = relax.Var("a", relax.TensorType((4, 4), "bfloat16"))
        with bb.function("main", [a]):
            with bb.dataflow():
                out = bb.emit_output(relax.op.matmul(a, a, out_dtype="float32"))
            bb.emit_func_output(out)
        try:
            tvm.compile(bb.get(), spec.tvm_target())
            _BF16_OK[key] = True
        except Exception:
            _BF16_OK[key] = False
    if not _BF16_OK[key]:
        raise AutoGLMError(f"--quantize bf16 is not supported on target {spec.name} (TVM cannot generate bf16 code for it); use fp16 or none")
