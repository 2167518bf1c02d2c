"""The CPU backend: LLVM targets, our default schedule rules (``tvm_autoglm.schedule_rules``)."""

from __future__ import annotations

from .base import Backend


class CpuBackend(Backend):
    name = "cpu"
    packs_int8 = True
    fast_fp16 = False  # fp16 arithmetic on the CPU is converted to fp32 anyway: only int8 saves time
    checks_bf16_codegen = True
    builds_generators = True

    def shipped_schedules_key(self, spec):
        """The target's ISA family (``targets.isa_family``): records tuned on one CPU of the family
        (e.g. Zen 3 for ``x86-avx2``) serve every CPU of it (Haswell, Alder Lake, Zen 2); None
        (nothing shipped) for x86 without AVX2+FMA."""
        from ..targets import isa_family

        return isa_family(spec)

    def schedule_defaults(self, mod, spec, opt_level, tuning):
        """O1+: our rules for every unscheduled kernel; O0 keeps plain loop nests (correct, slow)."""
        if opt_level < 1:
            return mod
        from ..schedule_rules import apply_default_schedules

        return apply_default_schedules(mod, spec.tvm_target())
