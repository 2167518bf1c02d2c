"""Which schedule each kernel gets: tuning records first, then default rules.

Order matters and is the same for every target: a measured record always wins;
a kernel without one gets its backend's default schedule (``Backend.schedule_defaults``:
CPU rules in ``tvm_autoglm.schedule_rules``, dlight's GPU rules on CUDA); a kernel
no rule knows stays a plain loop nest on CPU (correct, slow) and is refused on
CUDA, where an unscheduled kernel would silently become host code. Kernels a
backend offloaded (npu-sim) are born scheduled and counted apart.
"""

from __future__ import annotations

import tvm

from .ir_utils import copy_module, is_scheduled  # re-exported: scheduling.copy_module / is_scheduled are imported by name
from .targets import TargetSpec


def count_scheduled(mod: tvm.IRModule, backend=None) -> int:
    """Scheduled kernels of ``mod``, less those ``backend`` offloaded (none without a backend)."""
    return sum(1 for gv, f in mod.functions.items()
               if isinstance(f, tvm.tirx.PrimFunc) and is_scheduled(f) and not (backend and backend.is_offloaded(gv, f)))


def schedule_module(mod, spec: TargetSpec, opt_level: int, tuning_db, use_shipped_schedules: bool, honor_vetoes: bool = True):
    from .backends import for_target

    backend = for_target(spec)
    mod = copy_module(mod)
    tuning = {"database": None, "records_applied": 0, "tuned_kernels": 0, "default_scheduled_kernels": 0, "plain_kernels": 0, "shipped_schedules": []}
    kernels = [(gv, f) for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    offloaded = sum(1 for gv, f in kernels if backend.is_offloaded(gv, f))
    total = len(kernels) - offloaded
    if offloaded:
        tuning[f"{backend.name}_kernels"] = offloaded

    if backend.applies_tuning_records(opt_level):
        from .tuning.apply import apply_tuning_records

        mod, applied = apply_tuning_records(mod, spec, tuning_db, use_shipped_schedules and opt_level >= 3, honor_vetoes=honor_vetoes)
        tuning.update(applied)
        tuning["tuned_kernels"] = count_scheduled(mod, backend)

    mod = backend.schedule_defaults(mod, spec, opt_level, tuning)
    scheduled = count_scheduled(mod, backend)
    tuning["default_scheduled_kernels"] = scheduled - tuning["tuned_kernels"]
    tuning["plain_kernels"] = total - scheduled
    return mod, tuning
