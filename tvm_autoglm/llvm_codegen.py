"""``tvm.compile`` with a fallback for an LLVM optimizer bug that TVM's module verifier catches.

TVM 0.27 ships LLVM 22, whose SLP vectorizer emits invalid IR for some small unscheduled
kernels on AVX2 targets (``-mcpu=haswell`` / ``znver3``; not on AVX-512): after SROA splits a
stack buffer, a ``shufflevector`` uses a load defined after it, and TVM's post-optimization
verification fails with "Instruction does not dominate all uses". Seen on a grouped Conv1d
with SAME_LOWER padding at O0 (difftest seed 1, case 410: the kernel copies its input into
a 36-float ``pad_temp`` and reads it back with ``ff // 2 * 3 + rc`` indices).

The verifier rejects the module, so no wrong code runs; we then compile once more with the SLP
vectorizer off (``cl-opt: -vectorize-slp=false``; TVM scopes the option to that build), which
only costs the straight-line vectorization of that one build: our scheduled kernels vectorize
their loops explicitly. Any other failure, or the same failure again, propagates.
"""

from __future__ import annotations

import tvm

#: the verifier message of an invalid module after LLVM's optimization passes
LLVM_VERIFY_FAILURE = "LLVM module verification failed"
SLP_OFF = "-vectorize-slp=false"


def without_slp_vectorizer(target: tvm.target.Target) -> tvm.target.Target:
    """``target`` with LLVM's SLP vectorizer off (its host target, if any, unchanged)."""
    config = {k: v for k, v in _plain(target.export()).items() if k != "host"}
    config["cl-opt"] = list(config.get("cl-opt", [])) + [SLP_OFF]
    host = target.host
    return tvm.target.Target(config, host) if host is not None else tvm.target.Target(config)


def _plain(value):
    """TVM containers (Map/Array from ``Target.export``) as dicts and lists."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
        return [_plain(v) for v in value]
    return value


def compile_module(mod: tvm.IRModule, target: tvm.target.Target, on_fallback=None):
    """``tvm.compile(mod, target)``; on an LLVM verification failure, once more without SLP vectorization.

    ``on_fallback(reason)`` is told when the second build is used (the build log records it).
    """
    try:
        return tvm.compile(mod, target)
    except Exception as err:  # noqa: BLE001 - only the verifier's failure is retried, see below
        if target.kind.name != "llvm" or LLVM_VERIFY_FAILURE not in str(err) or SLP_OFF in str(target):
            raise
        reason = str(err).split("\n", 2)
        if on_fallback is not None:
            on_fallback(" ".join(reason[:2]).strip())
    return tvm.compile(mod, without_slp_vectorizer(target))
