"""FLOPs per kernel, computed at compile time for the manifest.

The exported ``.so`` holds machine code only, so ``auto-glm profile`` cannot
recover FLOP counts from it; the compiler writes them into the manifest
(``kernel_flops``) while the TIR is still at hand. The count is TVM's static
estimate (multiply-adds count 2, loads/stores 0), taken on the unscheduled
kernel so that schedule-introduced padding does not inflate it.
"""

from __future__ import annotations


def kernel_flops(mod) -> dict[str, float]:
    """{kernel name: estimated FLOPs} for every TIR PrimFunc in ``mod``; kernels TVM cannot estimate are left out."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    flops: dict[str, float] = {}
    for gvar, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        try:
            value = float(estimate_tir_flops(tvm.IRModule({"main": func.with_attr("global_symbol", "main")})))
        except Exception:  # dynamic extents or an intrinsic the estimator does not know
            continue
        if value >= 0:
            flops[gvar.name_hint] = value
    return dict(sorted(flops.items()))
