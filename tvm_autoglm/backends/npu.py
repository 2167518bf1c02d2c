"""The npu-sim backend: matmuls/convs offloaded to our simulated NPU, the rest on the host CPU.

The NPU settings (machine description, route, MetaSchedule tile records) are taken
from the target file and the compile's tuning database and handed to the offload
pass as arguments (``npu.settings.settings_for``), not through ambient context.
"""

from __future__ import annotations

from .cpu import CpuBackend


class NpuBackend(CpuBackend):
    """Host kernels get the CPU backend's schedules; the NPU kernels are born scheduled."""

    name = "npu"
    packs_int8 = False
    fast_fp16 = True
    checks_bf16_codegen = False
    records_baselines = False

    def shipped_schedules_key(self, spec):
        """Its own name, as before families: the host kernels of an npu-sim build are another
        fused module than a CPU build's, and none were tuned for it."""
        return spec.name

    def make_pass(self, pass_spec, spec, tuning_db):
        if pass_spec.name == "npu_offload":
            from ..npu.settings import settings_for

            return pass_spec.make(settings_for(spec, tuning_db))
        return pass_spec.make()

    def build_notes(self, fused_mod):
        from ..npu.partition import partition_notes

        return partition_notes(fused_mod)

    def is_offloaded(self, global_var, func):
        from ..npu.partition import is_npu_kernel

        return is_npu_kernel(func)

    def schedule_defaults(self, mod, spec, opt_level, tuning):
        from ..npu import lower_for_npu

        mod, tuning["npu"] = lower_for_npu(mod)
        return super().schedule_defaults(mod, spec, opt_level, tuning)

    def export_options(self, manifest):
        """Link the simulator object into the model library."""
        from ..npu.build import export_options

        return export_options()

    #: NPU tiles are tuned by MetaSchedule too, measured in simulated cycles, not host time
    tuner = "tvm_autoglm.npu.ms_tune:tune_for_driver"
