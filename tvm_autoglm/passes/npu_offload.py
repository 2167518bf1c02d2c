"""npu-sim only: matmul and dense conv2d (+bias)(+relu/gelu) onto the NPU, before fusion.

The work lives in tvm_autoglm/npu/partition.py; this file only registers it.
The npu backend's plan (passes/plan.py) runs it at every opt level (an NPU target
without offload would silently be a CPU build), after the GELU/LayerNorm idiom
rewrites, whose ``R.nn.gelu`` it folds into the NPU epilogue, and before
``fuse_attention``, which would otherwise wrap the attention matmuls in a
host-only fused group. The backend hands it the target's NPU settings.
"""

from __future__ import annotations

import tvm

from .registry import register_pass


@register_pass("npu_offload")
def npu_offload(settings=None):
    """Rewrite supported matmuls/convs to NPU kernels: tensorized GEMM blocks by default, or one npu_exec program per op (route "program")."""

    @tvm.transform.module_pass(opt_level=0, name="npu_offload")
    def transform(mod, _ctx):
        from ..npu.partition import offload

        from .tally import current

        mod, summary = offload(mod, settings)
        tally = current()
        tally.rewrote(len(summary["npu_ops"]))
        for row in summary["kept_on_host"]:
            tally.declined(f"{row['count']} op(s) kept on the host: {row['reason']}")
        return mod

    return transform
