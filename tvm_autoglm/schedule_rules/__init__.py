"""Default CPU schedules for kernels that have no tuning record.

Untuned, every fused kernel TVM emits is a scalar single-threaded loop nest,
25-80x slower than onnxruntime, and dlight has no CPU matmul rule. These rules
give each kernel a reasonable schedule at compile time, without search:

========================  ======================================================
rule                      kernels
========================  ======================================================
:class:`Int8MatmulVNNI`   int8 matmuls packed for vpdpbusd (``--quantize int8``, AVX-512 VNNI)
:class:`Int8MatmulAVX2`   int8 matmuls packed for vpmaddwd (``--quantize int8``, AVX2)
:class:`BF16MatmulAVX512` bf16 matmuls packed for vdpbf16ps (``--quantize bf16``, AVX512-BF16)
:class:`Gemv`             one-row fp32 matmuls against a weight (LLM decode):
                          streamed at memory bandwidth, epilogue fused
:class:`Matmul`           matmul, dense, batch matmul, conv2d (+ fused epilogue)
:class:`Reduction`        softmax, layer_norm, rms_norm, mean/sum over last axes
:class:`Pool`             pooling, reductions over a non-trailing axis
:class:`Elementwise`      every injective kernel
:class:`Fallback`         multi-stage kernels (fused attention ...): per block
========================  ======================================================

Rules are tried in that order and the first that returns a schedule wins; a
rule that does not apply to a kernel returns None, so an unknown kernel is left
exactly as it was (unscheduled but compilable). A rule that *raises*, or whose
schedule does not lower, has a bug: the kernel falls through to the next rule
and a ``ScheduleRuleWarning`` names kernel and rule (with ``AUTOGLM_STRICT_RULES=1``,
set by the test suite, the exception propagates instead). Kernels already scheduled (tuning
records applied by MetaSchedule, marked ``tirx.is_scheduled``) are untouched.
"""

from __future__ import annotations

import logging
import os
import warnings

import tvm
from tvm import tirx
from tvm.target import Target

from ..errors import ScheduleRuleWarning, error_summary
from ..ir_utils import copy_module, is_scheduled
from .bf16_stores import serialize_bf16_constant_stores
from .elementwise import Elementwise
from .fallback import Fallback
from .gemv import Gemv
from .int8_matmul import Int8MatmulAVX2
from .vnni_matmul import Int8MatmulVNNI
from .bf16_matmul import BF16MatmulAVX512
from .matmul import Matmul
from .pool import Pool
from .reduction import Reduction

__all__ = ["AttentionCPU", "BF16MatmulAVX512", "DEFAULT_RULES", "default_schedule", "Elementwise", "Fallback", "Gemv", "Int8MatmulAVX2", "Int8MatmulVNNI", "Matmul", "Pool", "Reduction", "apply_default_schedules", "schedule_func"]

_LOG = logging.getLogger(__name__)

from .attention import AttentionCPU  # noqa: E402  (fused matmul-softmax-matmul kernels from passes/attention.py)

# AttentionCPU claims any kernel with two or more reductions, so it comes after the
# single-pattern rules (layer_norm's mean/variance pair belongs to Reduction).
# Int8MatmulAVX2 claims only the packed int16 (vpmaddwd) matmuls of --quantize int8; it must come
# before Matmul, which would otherwise take them with a generic (7x slower) schedule. Int8MatmulVNNI
# claims only the uint8 x int8 (vpdpbusd) kernels emitted for avx512vnni targets; the two int8 rules
# match disjoint kernels (int16 vs uint8 operands), VNNI goes first as the more specific.
# BF16MatmulAVX512 claims only the packed bf16 kernels (float32 accumulator, uint16 activation bits)
# emitted for avx512bf16 targets; also before Matmul.
# Gemv claims only one-row fp32 matmuls (decode); Matmul would register-block them for reuse that
# one row does not have.
DEFAULT_RULES = (Int8MatmulVNNI(), Int8MatmulAVX2(), BF16MatmulAVX512(), Gemv(), Matmul(), Reduction(), Pool(), AttentionCPU(), Elementwise(), Fallback())


STRICT_ENV = "AUTOGLM_STRICT_RULES"


def _kernel_name(func: tirx.PrimFunc) -> str:
    symbol = func.attrs.get("global_symbol") if func.attrs else None
    return str(symbol) if symbol else "<unnamed kernel>"


def _rule_failed(kernel: str, rule, what: str, err: BaseException | None = None) -> None:
    """A rule bug: warn (the kernel falls back to the next rule), or raise under AUTOGLM_STRICT_RULES=1."""
    message = f"schedule rule {type(rule).__name__} {what} on kernel {kernel}"
    if err is not None:
        message += f": {type(err).__name__}: {error_summary(err)}"
    if os.environ.get(STRICT_ENV) == "1":
        raise RuntimeError(message + f" ({STRICT_ENV}=1)") from err
    warnings.warn(message + "; the kernel gets the next rule's schedule", ScheduleRuleWarning, stacklevel=3)


def default_schedule(func: tirx.PrimFunc, target: Target, rules=DEFAULT_RULES, kernel: str | None = None):
    """Return ``(Schedule, rule name)`` for the first rule whose schedule lowers, or ``(None, None)``.

    The Schedule (not just the scheduled function) is what tuning needs: its trace
    replays exactly on the same workload, so the tuner can measure it and commit it
    to the database as the baseline every search record has to beat.
    """
    named = kernel or _kernel_name(func)
    for rule in rules:
        try:
            sch = rule.apply(func, target, False)
        except Exception as err:  # pylint: disable=broad-except  # a rule bug must not break the build
            _rule_failed(named, rule, "raised", err)
            sch = None
        if sch is None:
            continue
        if isinstance(sch, list):
            sch = sch[0]
        if not _lowers(sch.mod["main"], target):
            _rule_failed(named, rule, "made a schedule that does not lower")
            continue
        return sch, type(rule).__name__
    return None, None


def schedule_func(func: tirx.PrimFunc, target: Target, rules=DEFAULT_RULES, kernel: str | None = None):
    """Return ``(scheduled PrimFunc, rule name)``, or ``(None, None)`` if no rule applies."""
    sch, rule = default_schedule(func, target, rules, kernel)
    if sch is None:
        return None, None
    return serialize_bf16_constant_stores(sch.mod["main"]).with_attr("tirx.is_scheduled", True), rule


def _lowers(func: tirx.PrimFunc, target: Target) -> bool:
    """Run TIR lowering (no LLVM codegen) on one scheduled kernel.

    A schedule can be valid for the scheduler yet trip a later lowering pass
    (buffer compaction / flattening); checking here keeps one odd kernel from
    failing the whole build: it falls through to the next rule instead.
    """
    from tvm import s_tir

    try:
        mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main").with_attr("target", target)})
        tvm.ir.transform.Sequential(
            [
                s_tir.transform.LowerInitBlock(),
                s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
                s_tir.transform.ConvertBlocksToOpaque(),
                s_tir.transform.CompactBufferAllocation(),
                s_tir.transform.LowerMatchBuffer(),
                s_tir.transform.LowerOpaqueBlock(),
                tirx.transform.FlattenBuffer(),
                tirx.transform.VectorizeLoop(True),
            ]
        )(mod)
        return True
    except Exception:  # pylint: disable=broad-except
        return False


def apply_default_schedules(mod: tvm.IRModule, target: Target, rules=None) -> tvm.IRModule:
    """Schedule every unscheduled PrimFunc in ``mod`` for the CPU ``target``.

    Returns a new module; ``mod`` itself is not modified. Non-CPU targets get
    the module back unchanged (copied). ``rules`` defaults to ``DEFAULT_RULES`` as it is
    at call time, so a benchmark can build the same model with one rule left out
    (``benchmarks/bench_generate.py --ab-without-rule``).
    """
    if rules is None:
        rules = DEFAULT_RULES
    if isinstance(target, dict):
        target = Target(target)
    new_mod = copy_module(mod)
    if target.kind.name != "llvm":
        return new_mod
    for gvar, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or is_scheduled(func):
            continue
        new_func, rule = schedule_func(func, target, rules, gvar.name_hint)
        if new_func is not None:
            _LOG.debug("%s scheduled by %s", gvar.name_hint, rule)
            new_mod[gvar] = new_func
    return new_mod
