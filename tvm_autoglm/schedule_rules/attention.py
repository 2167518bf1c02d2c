"""A CPU default schedule for the fused attention kernel (``fuse_attention``).

The fused kernel holds two matmuls, softmax's reductions and the elementwise
glue, so none of the single-pattern CPU rules in ``tvm_autoglm.schedule_rules``
claim it and, untuned, it runs as a scalar single-threaded loop nest -- which
made O2 slower than O1 untuned. This rule inlines what can be inlined and
then gives every remaining block a parallel outer loop (batch x heads x rows
for the reductions) and a vectorized inner loop for the spatial ones. It is
a ``dlight`` ScheduleRule listed first in ``DEFAULT_RULES``.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target


def _matmul_like(sch, block) -> bool:
    """A multiply-accumulate reading two buffers (Q.K^T, P.V), not a max/sum."""
    stmt = sch.get(block)
    return len(stmt.reads) >= 2 and isinstance(stmt.body, tirx.BufferStore) and isinstance(stmt.body.value, tirx.Add)


class AttentionCPU(ScheduleRule):
    """Multi-block kernels (matmul + softmax + matmul): parallel per block."""

    def is_target_available(self, target: Target) -> bool:
        return target.kind.name == "llvm"

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        from . import _common as C
        from .elementwise import schedule_spatial_block

        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        try:
            sch = s_tir.Schedule(func)
            infos = normalize_prim_func(sch)
            if infos is None or sum(1 for b in infos if b.is_reduction()) < 2:
                return None
            infos = C.try_inline(sch, infos, single_consumer=True)
            for info in infos:
                if info.is_reduction():
                    loops = sch.get_loops(info.block_rv)
                    kinds = info.dom_kind()
                    lead = []
                    for loop, kind in zip(loops, kinds):
                        if kind != "S":
                            break
                        lead.append(loop)
                    if kinds == "S" * (len(kinds) - 1) + "R" and len(loops) >= 3 and _matmul_like(sch, info.block_rv):
                        # s.., j, k -> s.., k, j: the innermost loop walks the
                        # contiguous last axis of the RHS and the output, so it vectorizes
                        if len(lead) > 1:
                            C.parallelize_prefix(sch, lead[:-1], target)
                        loops = sch.get_loops(info.block_rv)
                        j, k = loops[-2], loops[-1]
                        sch.reorder(k, j)
                        lanes = C.vector_lanes(target, "float32")
                        extent = C.const_extent(sch, j)
                        if extent is not None and extent % lanes == 0:
                            _, vec = sch.split(j, factors=[None, lanes])
                            try:
                                sch.vectorize(vec)
                            except Exception:  # pylint: disable=broad-except  # stays a plain (reordered) loop
                                pass
                    elif lead:
                        C.parallelize_prefix(sch, lead, target)
                else:
                    schedule_spatial_block(sch, info.block_rv, target)
            return sch
        except Exception:  # pylint: disable=broad-except  # a rule bug must not break the build
            return None
