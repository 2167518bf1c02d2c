"""Reductions whose innermost output axis is spatial: pooling, and sums/means
over a non-trailing axis.

Here the contiguous axis is an output axis, so instead of rfactor the rule
vectorizes *across outputs*: the output's last axis is split to the SIMD width
and moved inside the reduction loops, so each step of the window/axis updates
a whole vector of outputs. Outer spatial loops are fused and parallelized; a
padding producer is materialized (an inlined pad leaves an if_then_else in the
vector loop) and a fused epilogue is computed per tile.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.ir.expr import TensorLoad
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.target import Target

from . import _common as C
from .contraction import is_pad
from .elementwise import schedule_spatial_block


def _has_select(expr) -> bool:
    """True if ``expr`` has an if_then_else (an inlined pad): a vector loop around
    it would be scalarized by LLVM, slower than the plain loop."""
    import tvm_ffi
    from tvm.ir.expr import Call

    hits = []

    def _visit(node):
        if str(getattr(node.op, "name", "")).endswith("if_then_else"):
            hits.append(node)

    tvm_ffi.structural_walk(expr, (Call, _visit), order="post")
    return bool(hits)


class Pool(C.CPURule):
    """Window / non-trailing-axis reductions, vectorized across outputs."""

    @staticmethod
    def _unit_stride(block, vec_pos) -> bool:
        """Every read indexes its last dim by ``vec_var (+ other vars)`` with coefficient 1."""
        from tvm.sym.pattern import detect_linear_equation

        var = block.iter_vars[vec_pos].var
        found = []

        def _visit(node):
            if isinstance(node, TensorLoad):
                found.append(node)

        import tvm_ffi

        tvm_ffi.structural_walk(block.body.value, (TensorLoad, _visit), order="post")
        for load in found:
            last = load.indices[-1]
            coeff = detect_linear_equation(last, [var])
            if not coeff or not isinstance(coeff[0], tirx.IntImm) or int(coeff[0].value) not in (0, 1):
                return False
        return True

    def _apply(self, func, target):
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        pads = [b for b in infos if is_pad(sch.get(b.block_rv))]
        infos = pads + C.try_inline(sch, [b for b in infos if b not in pads])
        reductions = [b for b in infos if b.is_reduction()]
        if len(reductions) != 1:
            return None
        main = reductions[0]
        idx = infos.index(main)
        producers, consumers = infos[:idx], infos[idx + 1 :]
        if len(consumers) > 1 or not all(p.is_injective() for p in producers):
            return None
        block = sch.get(main.block_rv)
        store = block.body
        if not isinstance(store, tirx.BufferStore) or not store.indices:
            return None
        kinds = main.dom_kind()
        if "R" not in kinds:
            # a block with an init but no reduction loop left (a depthwise 1x1 conv after
            # normalize_prim_func drops its unit reduction loops): nothing to window over
            return None
        vec_pos = None
        for pos, iv in enumerate(block.iter_vars):
            if kinds[pos] == "S" and store.indices[-1].same_as(iv.var):
                vec_pos = pos
        if vec_pos is None:
            return None
        for producer in producers:
            schedule_spatial_block(sch, producer.block_rv, target)

        loops = sch.get_loops(main.block_rv)
        lanes = C.vector_lanes(target, str(store.buffer.dtype))
        vec_extent = C.const_extent(sch, loops[vec_pos])
        if vec_extent is None:
            return None
        lane = lanes
        while lane > 1 and vec_extent % lane:
            lane //= 2
        if not self._unit_stride(block, vec_pos) or _has_select(block.body.value):
            # Strided (e.g. stride-2 window) reads would become gathers; the
            # plain loop with parallel outer axes is faster.
            lane = 1
        spatial = [loops[i] for i, k in enumerate(kinds) if k == "S" and i != vec_pos]
        red = [loops[i] for i, k in enumerate(kinds) if k == "R"]
        if lane >= 4:
            v_o, v_i = sch.split(loops[vec_pos], factors=[None, lane])
            outer = spatial + [v_o]
            sch.reorder(*outer, *red, v_i)
        else:
            # Keep the loop order (scalar accumulator in a register); only
            # parallelize the leading spatial loops.
            first_r = kinds.index("R")
            outer = [loops[i] for i in range(first_r) if i != vec_pos]
        tile = C.parallelize_prefix(sch, outer, target) if outer else None
        if lane >= 4:
            sch.vectorize(v_i)
            init = sch.decompose_reduction(main.block_rv, red[0])
            sch.vectorize(sch.get_loops(init)[-1])
        if consumers:
            epi = consumers[0].block_rv
            if tile is not None:
                sch.reverse_compute_at(epi, tile, preserve_unit_loops=True)
                C.vectorize_innermost(sch, epi, lanes, min_depth=1)
            else:
                schedule_spatial_block(sch, epi, target)
        return sch
