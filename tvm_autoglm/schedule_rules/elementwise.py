"""Injective kernels (elementwise, broadcast, transpose, reshape, concat ...).

Untuned, these are scalar single-thread loop nests. After inlining every block
that can be inlined, each remaining spatial block gets its innermost axis split
to the SIMD width and vectorized, and everything above fused into one parallel
loop. Works on any injective kernel because it only looks at the loop nest.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.target import Target

from . import _common as C


def _out_dtype(sch: s_tir.Schedule, block) -> str:
    writes = sch.get(block).writes
    return str(writes[0].source.dtype) if writes else "float32"


def schedule_spatial_block(sch: s_tir.Schedule, block, target: Target) -> None:
    """Parallel over the outer loops, vectorize the innermost (contiguous) one."""
    loops = sch.get_loops(block)
    if not loops:
        return
    lanes = C.vector_lanes(target, _out_dtype(sch, block))
    inner = loops[-1]
    extent = C.const_extent(sch, inner)
    vec = None
    outer = list(loops[:-1])
    if extent is not None and extent >= lanes and extent % lanes == 0:
        o, vec = sch.split(inner, factors=[None, lanes])
        outer.append(o)
    elif extent is not None and 2 <= extent < lanes and len(loops) > 1:
        vec = inner
    elif len(loops) == 1 or (extent is not None and extent < 4 * lanes):
        outer.append(inner)
    # else: a long inner loop of odd length stays whole and serial (no
    # div/mod per element; LLVM's loop vectorizer may still handle it).
    if outer:
        total = 1
        for loop in outer:
            total *= C.const_extent(sch, loop) or 1 << 20
        if total >= 2 * C.num_cores(target):
            C.parallelize_prefix(sch, outer, target)
    if vec is not None:
        sch.vectorize(vec)


class Elementwise(C.CPURule):
    """Every block spatial: parallel outer, vectorized inner."""

    def _apply(self, func: tirx.PrimFunc, target: Target):
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None or any(b.is_reduction() for b in infos):
            return None
        infos = C.try_inline(sch, infos)
        for info in infos:
            if not info.is_injective():
                return None
        for info in infos:
            schedule_spatial_block(sch, info.block_rv, target)
        return sch
