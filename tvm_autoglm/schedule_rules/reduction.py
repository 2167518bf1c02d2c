"""Row reductions and normalizations: softmax, layer_norm, rms_norm, mean, sum.

These kernels are chains of blocks that share leading spatial axes (the rows)
and reduce over the trailing ones. Untuned they run single-threaded with scalar
reductions. The rule:

* parallelizes the rows of the last block and pulls every other block under
  that loop (``compute_at``), so one row's data stays in L1 across the chain;
* vectorizes reductions with ``rfactor``: the innermost reduction axis is split
  by the SIMD width and factored out, giving ``lanes`` partial sums computed as
  one vector, then a short horizontal sum. This reorders the additions, so
  results differ from numpy's pairwise sums by float rounding (tests use
  rtol=atol=1e-4);
* vectorizes the injective blocks on their inner axis.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block, normalize_prim_func
from tvm.target import Target

from . import _common as C


def _leading_spatial(dom_kind: str) -> int:
    return len(dom_kind) - len(dom_kind.lstrip("S"))


def _reduces_innermost_axis(block) -> bool:
    """True if some read indexes its contiguous (last) axis with a reduction variable.

    The iteration order can say "rows, then reduce" ("SSSSRR") for an NHWC max-pool too,
    whose window walks H and W while C, the contiguous axis, is an output axis. rfactor
    on such a kernel vectorizes nothing; the Pool rule vectorizes across C instead
    (resnet50's 3x3/2 max-pool: 0.86 -> 0.10 ms, 2 threads).
    """
    import tvm_ffi
    from tvm.ir.expr import TensorLoad
    from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr

    reduce_vars = [iv.var for iv in block.iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
    loads = []
    tvm_ffi.structural_walk(block.body.value if hasattr(block.body, "value") else block.body, (TensorLoad, loads.append), order="post")
    for load in loads:
        if load.source.same_as(block.writes[0].source) or not load.indices:
            continue
        used = collect_vars_used_in_prim_expr(load.indices[-1])
        if any(v in used for v in reduce_vars):
            return True
    return False


class Reduction(C.CPURule):
    """Reductions over trailing axes, with their injective pre/epilogues."""

    def __init__(self, rfactor: bool = True):
        self.rfactor = rfactor

    def _apply(self, func: tirx.PrimFunc, target: Target):
        # The rfactor schedule fails on some shapes; the plain one is the fallback, not the next rule.
        for use_rfactor in ((True, False) if self.rfactor else (False,)):
            try:
                sch = self._schedule(func, target, use_rfactor)
            except Exception:  # pylint: disable=broad-except
                sch = None
            if sch is not None:
                return sch
        return None

    def _schedule(self, func, target, use_rfactor):
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        infos = C.try_inline(sch, infos, single_consumer=True)
        if not any(b.is_reduction() for b in infos):
            return None
        kinds = [b.dom_kind() for b in infos]
        # Reductions must be over trailing axes only ("SS..RR"): a reduction
        # whose innermost axis is spatial is a pooling-style kernel instead.
        for kind in kinds:
            if "R" in kind and kind.rstrip("R") != kind[: len(kind.rstrip("R"))] or "RS" in kind:
                return None
        if any(info.is_reduction() and not _reduces_innermost_axis(sch.get(info.block_rv)) for info in infos):
            return None
        n_rows = min(_leading_spatial(k) for k in kinds)
        if n_rows == 0:
            return None
        # All blocks must agree on the row extents.
        row_ext = [tuple(str(it.dom) for it in b.iters[:n_rows]) for b in infos]
        if len(set(row_ext)) != 1:
            return None

        dtype = str(sch.get(infos[-1].block_rv).writes[0].source.dtype)
        lanes = C.vector_lanes(target, dtype)

        rf_blocks = []
        if use_rfactor:
            for info in infos:
                if info.is_reduction():
                    rf = self._rfactor(sch, info.block_rv, lanes)
                    if rf is not None:
                        rf_blocks.append(rf)
        blocks = list(sch.get_child_blocks(get_root_block(sch)))

        last = blocks[-1]
        loops = sch.get_loops(last)
        rows = sch.fuse(*loops[:n_rows]) if n_rows > 1 else loops[0]
        if C.num_cores(target) > 1:
            sch.parallel(rows)
        for block in reversed(blocks[:-1]):
            sch.compute_at(block, rows, preserve_unit_loops=True)
        rf_names = {sch.get(b).name_hint for b in rf_blocks}
        for block in blocks:
            stmt = sch.get(block)
            if stmt.name_hint in rf_names:
                self._vectorize_rf(sch, block, lanes)
            elif all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars):
                C.vectorize_innermost(sch, block, lanes, min_depth=1)
        return sch

    @staticmethod
    def _rfactor(sch, block, lanes):
        loops = sch.get_loops(block)
        inner = loops[-1]
        extent = C.const_extent(sch, inner)
        if extent is None or extent < 2 * lanes or extent % lanes:
            return None
        _, lane = sch.split(inner, factors=[None, lanes])
        return sch.rfactor(lane, factor_axis=len(sch.get(block).writes[0].region))

    @staticmethod
    def _vectorize_rf(sch, rf, lanes) -> None:
        """Make the partial-sum (lane) axis innermost, split off the init, vectorize both."""
        stmt = sch.get(rf)
        loops = sch.get_loops(rf)
        n = len(stmt.iter_vars)
        below = loops[len(loops) - n :]
        # compute_at created one loop per block iter, in iter order; the lane
        # iter is the one indexing the rfactor buffer's last (factor) axis.
        kinds = [iv.iter_type for iv in stmt.iter_vars]
        lane_var = stmt.body.indices[-1]
        positions = [i for i, iv in enumerate(stmt.iter_vars) if iv.var.same_as(lane_var)]
        if len(positions) != 1:
            return
        lane_loop = below[positions[0]]
        if C.const_extent(sch, lane_loop) != lanes:
            return
        reduce_loops = [below[i] for i, k in enumerate(kinds) if k == tirx.IterVar.CommReduce]
        sch.reorder(*reduce_loops, lane_loop)
        sch.vectorize(lane_loop)
        init = sch.decompose_reduction(rf, reduce_loops[0])
        sch.vectorize(sch.get_loops(init)[-1])
