"""npu-sim: our simulated NPU (ISA, C simulator, matmul offload, report).

Pipeline hooks (called by the npu backend, tvm_autoglm/backends/npu.py):
  * graph level: the ``npu_offload`` pass (tvm_autoglm/passes/npu_offload.py,
    in the npu backend's plan, given ``settings.settings_for(target, tuning_db)``) rewrites matmul(+bias)(+relu/gelu) and convs (im2col) to
    NPU kernels before legalization: by default tensorized block loop nests whose
    intrinsics call the simulator (``npu_acc_*``, ``npu_gemm_block``,
    ``npu_block_act``), or one ``npu_exec`` program per op (route "program");
  * scheduling: ``lower_for_npu(mod)`` loads the simulator for in-process runs
    and says which kernels are where;
  * export: ``build.export_options()`` links the simulator object into the
    model library.
"""

from __future__ import annotations


def lower_for_npu(mod):
    """(mod, notes) for a fused module compiled for npu-sim.

    The NPU kernels already exist (the offload pass made them, marked
    scheduled); the host kernels are left for the CPU default schedules.
    """
    from . import build
    from .partition import partition_notes, summary_from_module

    build.global_library()  # JIT-run models resolve the simulator's externs through it
    summary = summary_from_module(mod)
    notes = [
        f"npu-sim: {len(summary['npu_kernels'])} kernels on the NPU, {len(summary['host_kernels'])} on the host CPU"
    ] + partition_notes(mod)
    return mod, notes

