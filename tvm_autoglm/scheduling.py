"""Which schedule each kernel gets: tuning records first, then default rules.

Order matters and is the same for every target: a measured record always wins;
a kernel without one gets our default rule for its target kind (CPU rules in
``tvm_autoglm.schedule_rules``, dlight's GPU rules on CUDA); a kernel no rule
knows stays a plain loop nest on CPU (correct, slow) and is refused on CUDA,
where an unscheduled kernel would silently become host code.
"""

from __future__ import annotations

import tvm

from .ir_utils import copy_module, is_scheduled  # re-exported: scheduling.copy_module / is_scheduled are imported by name
from .targets import TargetSpec


def _is_npu_kernel(gv) -> bool:
    """npu-sim offloads are born scheduled (a call into the simulator); they are neither tuned nor defaulted."""
    return gv.name_hint.startswith("npu_")


def count_scheduled(mod: tvm.IRModule) -> int:
    return sum(1 for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc) and is_scheduled(f) and not _is_npu_kernel(gv))


def schedule_module(mod, spec: TargetSpec, opt_level: int, tuning_db, use_shipped_schedules: bool, honor_vetoes: bool = True):
    mod = copy_module(mod)
    target = spec.tvm_target()
    tuning = {"database": None, "records_applied": 0, "tuned_kernels": 0, "default_scheduled_kernels": 0, "plain_kernels": 0, "shipped_schedules": []}
    total = sum(1 for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc) and not _is_npu_kernel(gv))
    npu_kernels = sum(1 for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc) and _is_npu_kernel(gv))
    if npu_kernels:
        tuning["npu_kernels"] = npu_kernels

    if opt_level >= 1 or spec.device == "cuda":
        from .tuning.apply import apply_tuning_records

        mod, applied = apply_tuning_records(mod, spec, tuning_db, use_shipped_schedules and opt_level >= 3, honor_vetoes=honor_vetoes)
        tuning.update(applied)
        tuning["tuned_kernels"] = count_scheduled(mod)

    if spec.kind == "npu":
        from .npu import lower_for_npu

        mod, _export_options, notes = lower_for_npu(mod, spec)  # export options: npu.export_options_for(manifest)
        tuning["npu"] = notes
    if spec.device == "cuda":
        from .gpu import apply_gpu_default_schedules

        mod = apply_gpu_default_schedules(mod, target)
    elif opt_level >= 1:
        mod = _apply_cpu_defaults(mod, target)
    scheduled = count_scheduled(mod)
    tuning["default_scheduled_kernels"] = scheduled - tuning["tuned_kernels"]
    tuning["plain_kernels"] = total - scheduled
    return mod, tuning


def _apply_cpu_defaults(mod, target):
    from .schedule_rules import apply_default_schedules

    return apply_default_schedules(mod, target)
