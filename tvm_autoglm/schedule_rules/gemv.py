"""Bandwidth schedule for one-row matmuls (GEMV): an LLM's decode step.

A decode step multiplies one token's activation ``x[1, K]`` by every weight
matrix ``W[K, N]`` once: two flops per weight, each weight read once. Such a
kernel is bound by memory bandwidth, not by FMA throughput, and the Matmul
rule's register blocking (rows x vectors, panels reused across row tiles) has
nothing to reuse: with one row it only has to *stream* the weights. This rule
schedules for that:

* the weight arrives panel-packed by ``passes/pack_dense_weights.py``
  (``Wp[N / W, K, W]``, each panel one contiguous ``K x W`` stream; for one row
  the pass zero-pads ``N`` up to whole panels, see there), or plain ``W[K, N]``
  with ``N`` a whole number of vectors;
* the output columns are cut into tiles of one panel (``W`` = up to 4 vectors)
  and the tiles are spread over the target's cores (``T.parallel``, contiguous
  runs of tiles per thread, so each thread reads one contiguous region);
* within a tile the reduction over ``K`` is split ``K = K/U x U``
  (``rfactor``): ``U`` independent sets of vector accumulators, so at least
  8 FMAs are in flight (FMA latency 4 x 2 ports on Zen 3/4) while the weights
  are still read strictly in order; a final ``U``-way add per column;
* the fused epilogue (bias, GELU, residual adds, head-split reshape) runs on the
  tile right after its reduction, so the output is written once.

It claims a kernel only when it can prove it is such a GEMV: one reduction
block ``out[.., n] += x[.., k] * w[..]`` in float32, a single reduction axis,
every spatial axis but the output column of extent 1 (static), the activation
indexed by ``k`` alone and the weight as ``[k, n]`` or the packed
``[n // W, k, n % W]`` (leading indices constant). Anything else -- rows > 1,
symbolic extents, a weight batched over another axis, a transposed ``[n, k]``
weight, int8/int32/bf16 kernels, producers it cannot inline -- returns None and
goes to the next rule (Matmul).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.target import Target

from . import _common as C
from .contraction import analyze_contraction
from .elementwise import schedule_spatial_block

__all__ = ["Gemv", "GemvPlan", "plan_gemv"]

#: FMAs to keep in flight per thread: latency (4 cycles) x FMA ports (2) on Zen 3 / Zen 4 / Intel since Skylake.
FMAS_IN_FLIGHT = 8
#: Most vectors per column tile: one panel of pack_dense_weights (its widths are at most 4 vectors).
MAX_TILE_VECTORS = 4


@dataclass(frozen=True)
class GemvPlan:
    """How one GEMV kernel is cut: ``tile`` columns (``lane``-wide vectors) per task, ``split_k`` accumulator sets."""

    n: int  # output columns (the vec axis extent)
    k: int  # reduction extent
    lane: int  # vector width in fp32 lanes (1: scalar)
    tile: int  # columns per parallel task
    split_k: int  # independent accumulator sets (K = K / split_k x split_k)


def _is_const(expr) -> bool:
    return isinstance(expr, tirx.IntImm)


def _weight_layout(load, n_var, k_var) -> int | None:
    """Panel width W for ``w[.., n // W, k, n % W]``, ``0`` for plain ``w[.., k, n]``, None for anything else.

    Leading indices must be constants: a weight indexed by another loop is batched
    (one matrix per head or per batch row), which is not a GEMV this rule can prove.
    """
    idx = list(load.indices)
    if len(idx) >= 3:
        panel_idx, k_idx, lane_idx = idx[-3:]
        if (isinstance(panel_idx, tirx.FloorDiv) and panel_idx.a.same_as(n_var) and _is_const(panel_idx.b)
                and k_idx.same_as(k_var) and isinstance(lane_idx, tirx.FloorMod) and lane_idx.a.same_as(n_var)
                and _is_const(lane_idx.b) and int(lane_idx.b.value) == int(panel_idx.b.value)
                and all(_is_const(i) for i in idx[:-3])):
            return int(lane_idx.b.value)
    if len(idx) >= 2 and idx[-2].same_as(k_var) and idx[-1].same_as(n_var) and all(_is_const(i) for i in idx[:-2]):
        return 0
    return None


def _activation_is_a_row(load, k_var) -> bool:
    """``x[0, .., 0, k]``: the activation is one row, read along the reduction only."""
    idx = list(load.indices)
    return bool(idx) and idx[-1].same_as(k_var) and all(_is_const(i) for i in idx[:-1])


def _largest_pow2_lane(width: int, lanes: int) -> int:
    lane = lanes
    while lane > 1 and width % lane:
        lane //= 2
    return lane


def plan_gemv(n: int, k: int, panel: int, lanes: int, nregs: int, cores: int = 1) -> GemvPlan | None:
    """The tiling for ``N = n`` columns, ``K = k``, weight panel width ``panel`` (0: plain layout), or None.

    Packed: one tile per panel (vectors of the widest power of two dividing it).
    Plain: the tile is the most vectors (up to 4) dividing ``n`` that still gives
    every one of ``cores`` a tile (else the most vectors); ``n`` must be a
    whole number of vectors of at least 4 lanes, else a ragged tail would force a
    predicate into the vector loop (LLVM then scalarises it) -- declined.
    ``split_k`` is the smallest divisor of ``k`` giving ``FMAS_IN_FLIGHT``
    accumulators, within the register budget (accumulators + 1 broadcast + 1 load).
    """
    if panel:
        if n % panel:
            return None
        lane = _largest_pow2_lane(panel, lanes)
        if lane < 4:
            return None
        tile = panel
        if tile // lane > MAX_TILE_VECTORS:
            return None
    else:
        lane = _largest_pow2_lane(n, lanes)
        if lane < 4:
            return None
        vectors = n // lane
        fits = [v for v in range(MAX_TILE_VECTORS, 0, -1) if vectors % v == 0]
        nv = next((v for v in fits if vectors // v >= cores), fits[0])
        tile = nv * lane
    nv = tile // lane
    want = -(-FMAS_IN_FLIGHT // nv)
    budget = max((nregs - 2) // nv, 1)
    split_k = 1
    for u in range(min(want, budget, k), 0, -1):
        if k % u == 0:
            split_k = u
            break
    return GemvPlan(n=n, k=k, lane=lane, tile=tile, split_k=split_k)


class Gemv(C.CPURule):
    """One-row fp32 matmul against a weight (decode GEMV): parallel column panels, split-K accumulators, fused epilogue."""

    def _apply(self, func: tirx.PrimFunc, target: Target):
        try:
            return self._schedule(func, target, fuse_epilogue=True)
        except C.EpilogueNotExact:
            return self._schedule(func, target, fuse_epilogue=False)

    def _schedule(self, func: tirx.PrimFunc, target: Target, fuse_epilogue: bool):
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        infos = C.try_inline(sch, infos)
        reductions = [b for b in infos if b.is_reduction()]
        if len(reductions) != 1 or infos[0] is not reductions[0] or len(infos) > 2:
            return None  # producers left over, several reductions or several epilogues: not a plain GEMV
        main, consumers = infos[0], infos[1:]
        block = sch.get(main.block_rv)
        ana = analyze_contraction(block, main.iters)
        if ana is None or len(ana.reduce) != 1 or ana.dtype != "float32":
            return None
        if any(str(r.source.dtype) != "float32" for r in block.reads):
            return None  # int8 weights, fp16 activations ...: other rules (or none) own them
        loops = sch.get_loops(main.block_rv)
        if len(loops) != len(block.iter_vars):
            return None
        extents = [C.const_extent(sch, lp) for lp in loops]
        if any(e is None for e in extents):
            return None  # symbolic rows or columns
        if any(extents[i] != 1 for i in ana.spatial if i != ana.vec):
            return None  # more than one row, or a weight batched over another axis
        n_var = block.iter_vars[ana.vec].var
        k_var = block.iter_vars[ana.reduce[0]].var
        if ana.vec_load is None or ana.other_load is None or not _activation_is_a_row(ana.other_load, k_var):
            return None
        panel = _weight_layout(ana.vec_load, n_var, k_var)
        if panel is None:
            return None  # transposed [n, k] or batched weights
        plan = plan_gemv(extents[ana.vec], extents[ana.reduce[0]], panel, C.vector_lanes(target, "float32"),
                         C.num_vector_registers(target), C.num_cores(target))
        if plan is None:
            return None
        self._tile(sch, main.block_rv, loops, ana, plan, consumers if fuse_epilogue else [], target)
        if not fuse_epilogue:
            for epi in consumers:
                schedule_spatial_block(sch, epi.block_rv, target)
        return sch

    @staticmethod
    def _tile(sch: s_tir.Schedule, block, loops, ana, plan: GemvPlan, epilogues, target: Target) -> None:
        unit = [loops[i] for i in ana.spatial if i != ana.vec]
        n_o, n_v, n_l = sch.split(loops[ana.vec], factors=[None, plan.tile // plan.lane, plan.lane])
        k_o, k_i = sch.split(loops[ana.reduce[0]], factors=[None, plan.split_k])
        sch.reorder(*unit, n_o, k_o, k_i, n_v, n_l)
        # rfactor: the partial sums over k_o for each k_i land in their own accumulators.
        partial = sch.rfactor(k_i, factor_axis=0)
        sch.set_scope(partial, 0, C.ACC_SCOPE)
        p_loops = sch.get_loops(partial)
        tile_loop = p_loops[len(unit)]
        tile_loop = C.fuse_and_parallel(sch, [*p_loops[: len(unit)], tile_loop], target)
        p_loops = sch.get_loops(partial)
        k_o, k_i, n_v, n_l = p_loops[-4:]
        # The final add of the split_k partial sums per column, right after its tile.
        sch.reverse_compute_at(block, tile_loop, preserve_unit_loops=True)
        for epi in epilogues:
            sch.reverse_compute_at(epi.block_rv, tile_loop, preserve_unit_loops=True)
            if not C.epilogue_covers_tile(sch, epi.block_rv, tile_loop, plan.tile):
                raise C.EpilogueNotExact("last")
            C.vectorize_innermost(sch, epi.block_rv, plan.lane)
        sch.unroll(k_i)
        sch.unroll(n_v)
        if plan.lane > 1:
            sch.vectorize(n_l)
        init = sch.decompose_reduction(partial, k_o)
        i_loops = sch.get_loops(init)
        if plan.lane > 1:
            sch.vectorize(i_loops[-1])
        for lp in i_loops[-3:-1]:
            sch.unroll(lp)
        # Final reduction: loops (.., k_i, n) under the tile; columns innermost and vectorized
        # (vectorize before decompose_reduction: an update block without its init is not a
        # "reduction block" the vectorize primitive accepts).
        f_red = sch.get_loops(block)[-2]
        C.vectorize_innermost(sch, block, plan.lane)
        sch.unroll(f_red)
        f_init = sch.decompose_reduction(block, f_red)
        C.vectorize_innermost(sch, f_init, plan.lane)
