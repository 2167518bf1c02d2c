"""Last resort for multi-stage kernels no other rule claims (e.g. a fused
attention: matmul -> softmax -> matmul -> transpose in one PrimFunc).

Consumers are inlined where possible, producers are kept (a materialized
transpose is exactly the unit-stride layout the next stage wants), and then
every remaining block is scheduled on its own at the root:

* spatial blocks: parallel outer loops, vectorized inner loop;
* reduction blocks: parallel over leading spatial loops; if the output's last
  axis is spatial and every read is unit-stride along it, that axis is moved
  inside the reduction loops and vectorized (outputs computed a vector at a
  time, as in the Pool rule); otherwise the loop order is kept.

Much slower than a dedicated kernel, but parallel and mostly vectorized instead
of one scalar thread.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_sblock_info, normalize_prim_func
from tvm.target import Target

from . import _common as C
from .elementwise import schedule_spatial_block
from .pool import Pool, _has_select


def schedule_reduction_block(sch: s_tir.Schedule, block_rv, target: Target) -> None:
    """Parallel leading spatial loops; vectorize across outputs where reads allow."""
    info = get_sblock_info(sch, block_rv)
    block = sch.get(block_rv)
    kinds = info.dom_kind()
    loops = sch.get_loops(block_rv)
    if len(loops) != len(kinds) or "R" not in kinds:
        return
    store = block.body
    vec_pos = None
    if isinstance(store, tirx.BufferStore) and store.indices:
        for pos, iv in enumerate(block.iter_vars):
            if kinds[pos] == "S" and store.indices[-1].same_as(iv.var):
                vec_pos = pos
    lanes = C.vector_lanes(target, str(store.buffer.dtype)) if isinstance(store, tirx.BufferStore) else 1
    lane = 1
    if vec_pos is not None and Pool._unit_stride(block, vec_pos) and not _has_select(store.value):
        extent = C.const_extent(sch, loops[vec_pos])
        lane = lanes
        while extent is not None and lane > 1 and extent % lane:
            lane //= 2
        if extent is None:
            lane = 1
    red = [loops[i] for i, k in enumerate(kinds) if k == "R"]
    if lane >= 4:
        spatial = [loops[i] for i, k in enumerate(kinds) if k == "S" and i != vec_pos]
        v_o, v_i = sch.split(loops[vec_pos], factors=[None, lane])
        sch.reorder(*spatial, v_o, *red, v_i)
        C.parallelize_prefix(sch, spatial + [v_o], target)
        sch.vectorize(v_i)
        init = sch.decompose_reduction(block_rv, red[0])
        sch.vectorize(sch.get_loops(init)[-1])
    else:
        first_r = kinds.index("R")
        C.parallelize_prefix(sch, list(loops[:first_r]), target)


def _sole_consumer(sch: s_tir.Schedule, block_rv) -> bool:
    """Whether ``block_rv`` is the only reader of each of its producers' outputs.

    TVM 0.27's ``reverse_compute_inline`` accepts a consumer whose producer has other
    readers and drops the producer's buffer anyway: Llama's decode RMSNorm (x*x inlined
    into the identity cast that the final multiply also reads) then referenced an
    undefined buffer and failed to lower.
    """
    block = sch.get(block_rv)
    for producer in sch.get_producers(block_rv):
        if any(not sch.get(c).same_as(block) for c in sch.get_consumers(producer)):
            return False
    return True


class Fallback(C.CPURule):
    """Per-block parallel + vectorize for kernels the specific rules declined."""

    def _apply(self, func: tirx.PrimFunc, target: Target):
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        # An opaque iterator (a scan, a loop-carried dependency) can be neither parallelized nor
        # vectorized: decline rather than let the schedule primitives refuse it.
        if any("O" in info.dom_kind() for info in infos):
            return None
        remaining = list(infos)
        # Inline consumers only (reverse_compute_inline).
        changed = True
        while changed:
            changed = False
            for info in list(remaining):
                if info.is_reduction() or C.inline_loses_init(sch, info.block_rv, reverse=True):
                    continue
                if not _sole_consumer(sch, info.block_rv):
                    continue
                try:
                    sch.reverse_compute_inline(info.block_rv)
                except Exception:  # pylint: disable=broad-except
                    continue
                remaining.remove(info)
                changed = True
        for info in remaining:
            if info.is_reduction():
                schedule_reduction_block(sch, info.block_rv, target)
            else:
                schedule_spatial_block(sch, info.block_rv, target)
        return sch
