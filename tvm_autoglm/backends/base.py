"""The one interface every backend implements (cpu, cuda, npu).

The compile flow (``pipeline.compile_model``) is the same for every target; what
differs is asked of the target's backend through the hooks below, so core modules
never test a target's kind. A hook a backend does not need keeps the default here
(no extra context, no export options, no notes). ``tests/test_backends.py`` checks
that every backend answers every hook.

Hooks, in the order the flow calls them:
  graph      ``pass_names`` (the pass plan), ``make_pass``, ``build_notes``
  schedule   ``applies_tuning_records``, ``shipped_schedules_key``, ``is_offloaded``, ``schedule_defaults``
  codegen    ``codegen_context``
  export     ``export_options``
  run        ``runs_on_build_host``
  generate   ``builds_generators``
  tuning     ``tuner`` / ``tune_elsewhere``, ``measure_number``, ``flush_cpu_cache``,
             ``records_baselines``, ``checks_in_model``
  quantize   ``packs_int8``, ``fast_fp16``, ``checks_bf16_codegen``
"""

from __future__ import annotations

import contextlib
import importlib
from abc import ABC, abstractmethod
from typing import Callable, ClassVar


class Backend(ABC):
    """What one kind of target adds to the compile flow. Stateless: hooks take the TargetSpec."""

    #: the backend's name: the key of its pass plan, and the manifest's ``target.kind``
    name: ClassVar[str]

    # ---------------------------------------------------------------- graph

    def pass_names(self, opt_level: int) -> list[str]:
        """Our graph passes at ``opt_level``, in the order they run (``passes/plan.py``)."""
        from ..passes.plan import pass_plan

        return pass_plan(self.name, opt_level)

    def make_pass(self, pass_spec, spec, tuning_db):
        """A fresh pass for ``pass_spec``; a backend binds its own settings (from ``spec``) here."""
        return pass_spec.make()

    def build_notes(self, fused_mod) -> list[str]:
        """Manifest notes about the fused module (e.g. which kernels are offloaded)."""
        return []

    # ---------------------------------------------------------------- schedule

    def applies_tuning_records(self, opt_level: int) -> bool:
        """Whether tuning records (ours and shipped ones) apply at ``opt_level``."""
        return opt_level >= 1

    def shipped_schedules_key(self, spec) -> str | None:
        """The folder of ``schedules/`` whose shipped records this target may use (None: none).

        By default the target's own name (``schedules/gpu-hopper/``): records serve exactly
        the target they were tuned for. The CPU backend widens this to the ISA family.
        """
        return spec.name

    def is_offloaded(self, global_var, func) -> bool:
        """A kernel born scheduled for another device: neither tuned nor given a default schedule."""
        return False

    @abstractmethod
    def schedule_defaults(self, mod, spec, opt_level: int, tuning: dict):
        """Default schedules for every kernel still unscheduled; may add keys to ``tuning`` (manifest)."""

    # ---------------------------------------------------------------- codegen, export, run

    def codegen_context(self, spec) -> contextlib.AbstractContextManager:
        """The context ``tvm.compile`` runs in."""
        return contextlib.nullcontext()

    def export_options(self, manifest: dict) -> dict | None:
        """Extra ``export_library`` options for an artifact built by this backend."""
        return None

    #: whether the build machine can run what it built (the CPU can; a GPU build may lack its device)
    runs_on_build_host: ClassVar[bool] = True

    #: whether ``compile --generate`` (prefill + decode over an in-place KV cache) is built for it yet
    builds_generators: ClassVar[bool] = False

    # ---------------------------------------------------------------- tuning

    #: "module:function" of a tuner replacing ``tuning.driver.tune``'s MetaSchedule loop (same
    #: arguments and result), or None. Named, not imported: a tuner compiles models, so it sits
    #: above the compile flow that imports the backends (no import cycle).
    tuner: ClassVar[str | None] = None

    def tune_elsewhere(self) -> Callable | None:
        """The ``tuner`` function, loaded, or None (then the driver's own MetaSchedule loop tunes)."""
        if self.tuner is None:
            return None
        module, _, function = self.tuner.partition(":")
        return getattr(importlib.import_module(module), function)

    #: runs per MetaSchedule measurement (short GPU kernels need several per timer read)
    measure_number: ClassVar[int] = 1
    #: flush the CPU caches between measurements
    flush_cpu_cache: ClassVar[bool] = True
    #: measure the default schedules and record them as baselines before tuning
    records_baselines: ClassVar[bool] = True
    #: after tuning, profile tuned against default kernels inside the model (and veto losers)
    checks_in_model: ClassVar[bool] = True

    # ---------------------------------------------------------------- quantize

    #: ``--quantize int8`` may use the packed int16 int8 matmul kernel (an LLVM CPU rule)
    packs_int8: ClassVar[bool] = False
    #: fp16 is a faster precision than fp32 here, so ``--quantize auto`` may choose it
    fast_fp16: ClassVar[bool] = True
    #: ``--quantize bf16`` must first check that TVM can generate bf16 code for the target
    checks_bf16_codegen: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"<backend {self.name}>"
