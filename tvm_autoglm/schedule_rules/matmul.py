"""Register-blocked CPU schedule for contractions: matmul, dense, batch-matmul, conv.

TVM's dlight ships no CPU matmul rule, and an untuned FuseTIR kernel is a plain
loop nest that runs 25-80x slower than onnxruntime. This rule treats any kernel
whose single reduction block is ``C[...] += A[...] * B[...]`` as a contraction
and builds the classic micro-kernel for it:

* the output's innermost axis (contiguous in memory) is vectorized, ``nv``
  vectors wide;
* a second spatial axis -- preferably one the vector-side operand does not
  use, so its values are broadcast from the other operand (``m`` for matmul,
  the output channel for conv) -- is unrolled ``mr`` times, giving an
  ``mr x nv`` tile of vector accumulators that LLVM keeps in registers;
* all reduction loops sit between the tile loops and the register tile;
* all tile loops are fused into one parallel loop, with the register-tile
  column (``n``) outside the row so consecutive tiles reuse the same panel of
  the right-hand operand from cache;
* the fused epilogue (bias, gelu, residual add ...) is computed right after
  its tile (``reverse_compute_at``) so the accumulator never goes to memory,
  and the init is split off (``decompose_reduction``) and vectorized.

Nothing here matches operator names: the axes are classified from the buffer
accesses, so transposed operands (NT/TN) and conv2d's im2col-free form fall out
of the same analysis.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.target import Target

from dataclasses import replace

from . import _common as C
from . import symbolic_rows
from .contraction import Contraction, analyze_contraction, is_pad
from .conv import conv_rows, schedule_conv
from .elementwise import schedule_spatial_block

__all__ = ["Contraction", "Matmul", "analyze_contraction", "choose_tile", "tile_candidates"]


def tile_candidates(row_extent: int, vec_extent: int, lanes: int, nregs: int) -> list[tuple[int, int, int]]:
    """Every (mr, nv, lanes) accumulator tile that fits, best first (see :func:`choose_tile`)."""
    lane = lanes
    while lane > 1 and vec_extent % lane:
        lane //= 2
    if lane < 4 and vec_extent >= 4:
        lane = 1  # leave odd widths to the scalar path; LLVM may still SLP them
    lane = max(lane, 1)
    n_vecs = vec_extent // lane
    scored = []
    for nv in range(1, 5):
        if n_vecs % nv:
            continue
        for mr in range(1, 17):
            if row_extent % mr:
                continue
            if mr * nv + nv + 1 > nregs:
                continue
            scored.append((round(mr * nv / (mr + nv), 9), (mr, nv, lane)))
    # Stable sort: among equal scores the first found (smallest nv, then mr) wins.
    scored.sort(key=lambda item: -item[0])
    return [tile for _, tile in scored] or [(1, 1, lane)]


def choose_tile(row_extent: int, vec_extent: int, lanes: int, nregs: int) -> tuple[int, int, int]:
    """Pick (mr, nv, lanes): accumulator tile of ``mr`` rows x ``nv`` vectors.

    Maximises FMAs per load (``mr*nv / (mr+nv)``) under the register budget
    ``mr*nv`` accumulators + ``nv`` loads + 1 broadcast, using only exact
    divisors so no predicate lands inside the vector loop.
    """
    return tile_candidates(row_extent, vec_extent, lanes, nregs)[0]


class Matmul(C.CPURule):
    """Contraction rule (matmul / dense / batch matmul / conv) with fused epilogue."""

    def __init__(self, pack: bool = True, conv: bool = True):
        self.pack = pack
        self.conv = conv  # channels-last convolutions get the pixel-tiled schedule of .conv

    def _apply(self, func: tirx.PrimFunc, target: Target, choices=None):
        # A layout epilogue (reshape + permute to heads) only fuses into a tile
        # whose columns do not straddle its split (see C.epilogue_covers_tile):
        # try the tiles best first, then give up fusing and run it as its own nest.
        rank = 0
        while True:
            try:
                return self._schedule(func, target, rank, fuse_epilogue=True, choices=choices)
            except C.EpilogueNotExact as exc:
                rank += 1
                if exc.args and exc.args[0] == "last":
                    break
        return self._schedule(func, target, 0, fuse_epilogue=False, choices=choices)

    def schedule_with(self, func: tirx.PrimFunc, target: Target, choices):
        """The schedule for the decisions ``choices`` forces (the tuning design space), or None.

        Unlike :meth:`_apply` the tile is not searched for: a tile the epilogue cannot
        fuse with runs the epilogue as its own nest, which is what :meth:`_apply` ends
        with when no tile fits (at the default tile, 0).
        """
        try:
            return self._schedule(func, target, 0, fuse_epilogue=True, choices=choices)
        except C.EpilogueNotExact:
            return self._schedule(func, target, 0, fuse_epilogue=False, choices=choices)

    def _schedule(self, func: tirx.PrimFunc, target: Target, rank: int, fuse_epilogue: bool, choices=None):
        # Symbolic rows are first tried padded to a multiple of the tile (symbolic_rows); where TVM
        # refuses a step of that, the schedule starts over with the 1-row walk.
        try:
            return self._schedule_once(func, target, rank, fuse_epilogue, choices, pad_rows=True)
        except symbolic_rows.NotPadded:
            return self._schedule_once(func, target, rank, fuse_epilogue, choices, pad_rows=False)

    def _schedule_once(self, func: tirx.PrimFunc, target: Target, rank: int, fuse_epilogue: bool, choices, pad_rows: bool):
        # ``choices`` (tuning/rule_space.py) turns the fixed choices below into recorded
        # decisions: ``choices.pick(name, n_options, default)`` returns the option to use.
        # Without it every choice is its default, which is the rule's schedule.
        sch = s_tir.Schedule(func)
        if choices is None:
            def pick(_name, _n, default):
                return default
        else:
            def pick(name, n, default):
                return choices.pick(sch, name, n, default)

        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        # A padding producer would put an if_then_else inside the vector loop
        # (LLVM then scalarizes it); materialize it instead: one cheap copy.
        pads = [b for b in infos if is_pad(sch.get(b.block_rv))]
        infos = C.try_inline(sch, [b for b in infos if b not in pads])
        infos = pads + infos
        reductions = [b for b in infos if b.is_reduction()]
        if len(reductions) != 1:
            return None
        main = reductions[0]
        idx = infos.index(main)
        producers, consumers = infos[:idx], infos[idx + 1 :]
        if len(consumers) > 1 or not all(p.is_injective() for p in producers):
            return None
        for producer in producers:
            schedule_spatial_block(sch, producer.block_rv, target)
        block = sch.get(main.block_rv)
        ana = analyze_contraction(block, main.iters)
        if ana is None:
            return None
        unfused = [] if fuse_epilogue else consumers
        if not fuse_epilogue:
            consumers = []
        if self.conv:
            rows = conv_rows(block, ana)
            if rows is not None:
                try:
                    done = schedule_conv(sch, main.block_rv, consumers, ana, rows, target)
                except C.EpilogueNotExact as exc:
                    raise C.EpilogueNotExact("last") from exc  # conv has one tile: go unfused
                if done:
                    for epi in unfused:
                        schedule_spatial_block(sch, epi.block_rv, target)
                    return sch

        loops = sch.get_loops(main.block_rv)
        if len(loops) != len(block.iter_vars):
            return None
        extents = [C.const_extent(sch, lp) for lp in loops]
        sym_row = symbolic_rows.row_axis(block, ana, extents) if ana.row is None and pad_rows else None
        if extents[ana.vec] is None or (ana.row is not None and extents[ana.row] is None):
            return None

        lanes = C.vector_lanes(target, ana.dtype)
        nregs = C.num_vector_registers(target)
        if sym_row is not None:
            row_extent = symbolic_rows.NOMINAL_ROWS
        else:
            row_extent = extents[ana.row] if ana.row is not None else 1
        tiles = tile_candidates(row_extent, extents[ana.vec], lanes, nregs)
        if ana.panel is not None:
            # Pre-packed operand: tile columns that nest with its panels keep the packed
            # index affine (n // W, n % W fold away), so the vector loads stay contiguous.
            tiles = [t for t in tiles if ana.panel % (t[1] * t[2]) == 0 or (t[1] * t[2]) % ana.panel == 0] or tiles
        padded_by = None
        if sym_row is not None:
            # rows a kernel already padded (pack_dense_weights' packed kernel): only tiles whose
            # mr divides the padded count, so no pad_einsum (which refuses a packed operand)
            row_dom = sch.get(loops[sym_row]).extent
            exact = [t for t in tiles if t[0] > 1 and symbolic_rows.is_exact_multiple(row_dom, t[0])]
            if exact:
                tiles, padded_by = exact, row_dom
        rank = pick("tile", len(tiles), min(rank, len(tiles) - 1))
        mr, nv, lane = tiles[rank]
        last_tile = rank >= len(tiles) - 1
        if sym_row is not None and mr > 1 and padded_by is not None:
            ana = replace(ana, row=sym_row)
        elif sym_row is not None and mr > 1:
            main, consumers = symbolic_rows.pad_rows(sch, main.block_rv, sym_row, mr, consumers)
            for pad in symbolic_rows.padded_producers(sch, main.block_rv):
                schedule_spatial_block(sch, pad, target)
            block = sch.get(main.block_rv)
            ana = replace(ana, row=sym_row)
            loops = sch.get_loops(main.block_rv)
            if not symbolic_rows.is_exact_multiple(sch.get(loops[sym_row]).extent, mr):
                raise symbolic_rows.NotPadded("padded rows not provably a multiple of the tile")
        elif sym_row is not None:
            sym_row = None

        # Split the vector axis into (outer, nv, lane) and the row axis into (outer, mr).
        v_o, v_n, v_l = sch.split(loops[ana.vec], factors=[None, nv, lane])
        if ana.row is not None:
            r_o, r_i = sch.split(loops[ana.row], factors=[None, mr])
        else:
            r_o = r_i = None
        others = [loops[i] for i in ana.spatial if i not in (ana.vec, ana.row)]
        red = [loops[i] for i in ana.reduce]
        outer = others + [v_o]
        if ana.row is None and any(extents[i] is None for i in ana.spatial):
            # Symbolic rows that could not be padded to the tile (symbolic_rows declined) are not
            # register-blocked; walk them inside each column tile instead, so consecutive tiles of
            # a thread reuse one K x tile panel of the weights from cache.
            outer = [v_o] + others
        k_block = None
        # (not for padded symbolic rows: K-blocking keeps every row's accumulators, seq x width)
        if r_o is not None and len(red) == 1 and sym_row is None:
            # Cache blocking of a deep panel: walk K in chunks, all row tiles per chunk
            # (the accumulators then live in a tile-sized buffer, not in registers).
            depth = extents[ana.reduce[0]] or 0
            blocks = [f for f in (64, 128, 256, 512) if f < depth and depth % f == 0]
            if blocks:
                k = pick("k_block", len(blocks) + 1, 0)
                k_block = blocks[k - 1] if k else None
        if k_block is not None:
            k_o, k_i = sch.split(red[0], factors=[None, k_block])
            red = [k_o, k_i]
            inner = [k_o, r_o, k_i, r_i, v_n, v_l]
        else:
            inner = ([r_o] if r_o is not None else []) + red + ([r_i] if r_i is not None else []) + [v_n, v_l]
        sch.reorder(*outer, *inner)
        tile = C.fuse_and_parallel(sch, outer, target)
        pack = r_o is not None and self.pack and ana.pack_operand is not None and row_extent // mr > 1
        if pack and pick("pack", 2, 0) == 1:
            pack = False
        if pack:
            # Copy the K x (nv*lane) panel of the vector-side operand into a
            # contiguous buffer once per column tile: the original rows are a
            # large power-of-two-ish stride apart and alias in L1/L2, and the
            # panel is reused by every row tile below.
            packed = sch.cache_read(main.block_rv, ana.pack_operand, "global")
            width = nv * lane
            sch.transform_layout(
                packed,
                ("write", 0),
                lambda *idx: (idx[-1] // width, *idx[:-1], idx[-1] % width),
            )
            sch.compute_at(packed, tile, preserve_unit_loops=True)
            C.vectorize_innermost(sch, packed, lane)
        anchor = r_o if r_o is not None and k_block is None else tile
        rows_under_anchor = row_extent if k_block is not None else (mr if r_i is not None else 1)
        if consumers:
            epi = consumers[0].block_rv
            # Keep the accumulator tile-local so it lives in registers.
            sch.set_scope(main.block_rv, 0, C.ACC_SCOPE)
            sch.reverse_compute_at(epi, anchor, preserve_unit_loops=True)
            if not C.epilogue_covers_tile(sch, epi, anchor, rows_under_anchor * nv * lane):
                raise C.EpilogueNotExact("last" if last_tile else "")
            self._vectorize_tail(sch, epi, lane)
        else:
            out = sch.cache_write(main.block_rv, 0, C.ACC_SCOPE)
            sch.reverse_compute_at(out, anchor, preserve_unit_loops=True)
            self._vectorize_tail(sch, out, lane)

        for epi in unfused:
            schedule_spatial_block(sch, epi.block_rv, target)

        if r_i is not None:
            sch.unroll(r_i)
        sch.unroll(v_n)
        if lane > 1:
            sch.vectorize(v_l)
        init = sch.decompose_reduction(main.block_rv, red[0])
        init_loops = sch.get_loops(init)
        # init loops below the tile: (r_i?, v_n, v_l)
        if lane > 1:
            sch.vectorize(init_loops[-1])
        for lp in init_loops[len(sch.get_loops(init)) - (3 if r_i is not None else 2) : -1]:
            sch.unroll(lp)
        return sch

    @staticmethod
    def _vectorize_tail(sch: s_tir.Schedule, block, lane: int) -> None:
        if lane > 1:
            C.vectorize_innermost(sch, block, lane)
