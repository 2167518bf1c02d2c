"""Register-blocked CPU schedule for channels-last KxK convolutions (NHWC data, packed weight).

The generic :mod:`.matmul` rule register-blocks one spatial axis, so on a
convolution it tiles only the output height: a 7x7 or 14x14 layer gets a
7 x 1-vector tile (9 of 16 registers, one weight load per seven FMAs), and its
parallel loop walks output channels innermost, so every row of tiles streams
the whole weight from memory again (resnet50's 512-channel 3x3 conv reads its
9 MiB weight seven times per call).

A convolution's output pixels are all equivalent rows of the implicit GEMM
``out[pixel, f] += patch[pixel, k] * w[k, f]``, so this schedule

* tiles an output row ``mr`` pixels deep (for a 1x1 stride-1 conv, whose
  pixels are evenly spaced in the input across rows too, the fused pixel axis
  when that allows a better tile: 196 = 14x14 gets a 4-deep one); where no good
  tile divides the row (7 and 14 wide), full tiles and one shorter tile, as two
  loops (:func:`choose_ragged_tile`);
* vectorizes the output channels ``nv`` vectors wide: the weight, pre-packed
  by ``passes/pack_conv_weights.py`` as ``[F/lanes, KH, KW, C, lanes]`` (or in
  HWIO), is contiguous along them, and the ``mr`` input values are broadcasts;
* orders the parallel loop so that the smaller operand is the one read again:
  output-channel blocks outermost when the weight is the larger (one block's
  weight panel, K x nv*lanes, stays in cache while every pixel tile uses it),
  pixel tiles outermost when the input is (:func:`pixels_outermost`);
* keeps the ``mr x nv`` accumulators local and computes the fused epilogue
  (bias, residual add, relu) right after each tile.

Which kernels count as a convolution: the contraction analysis of
:func:`.contraction.analyze_contraction` finds a vector axis whose operand (the
weight) is read at ``[..., f]`` and two or more spatial axes that only the
other operand (the input) reads. That includes 1x1 convs: as plain GEMMs
(generic rule) they got one row axis and a parallel loop with the other pixel
axis outermost, so each task used its weight panel for one row of pixels; on
resnet50 (interleaved per-kernel profiles, session 5) this rule is faster on
every 1x1 layer, e.g. 2048-channel 7x7 expand 4.97 -> 3.90 ms, 56x56 64->256
5.04 -> 3.03 ms (3 calls each).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.ir.expr import TensorLoad
from tvm.target import Target

from . import _common as C
from .contraction import vars_in

#: (rows, vectors) accumulator tiles tried in order of FMAs per load; the first
#: whose sizes divide the pixel and channel counts wins. No 7x2 with 16 ymm
#: registers: LLVM keeps both weight vectors in registers and spills one of the
#: 14 accumulators through the stack every step (measured 2x slower than 4x2 on
#: a 56x56 3x3 conv). AVX-512 (32 registers) allows the larger ones.
TILES_16 = ((4, 3), (6, 2), (5, 2), (4, 2), (2, 4), (7, 1), (8, 1), (2, 2), (4, 1), (2, 1), (1, 2), (1, 1))
TILES_32 = ((6, 4), (7, 4), (8, 3), (4, 4), (14, 2), (12, 2), (8, 2)) + TILES_16


def conv_rows(block, ana) -> list[int] | None:
    """Positions of the pixel axes of a conv-like contraction, or None if it is not one."""
    if ana.row is None:
        return None
    vec_load, other = ana.vec_load, ana.other_load
    vec_var = block.iter_vars[ana.vec].var
    vec_vars, other_vars = vars_in(vec_load.indices), vars_in(other.indices)
    if not _channel_last(vec_load.indices[-1], vec_var):
        return None  # weight not contiguous along the output channel (e.g. OHWI): vector loads would gather
    spatial_vars = {block.iter_vars[i].var for i in ana.spatial}
    if (vec_vars & spatial_vars) != {vec_var}:
        return None  # the weight must not depend on the pixel (not a depthwise/grouped or batched weight)

    def _extent(i):
        dom = block.iter_vars[i].dom.extent
        return int(dom.value) if isinstance(dom, tirx.IntImm) else 0

    rows = [i for i in ana.spatial if i != ana.vec and block.iter_vars[i].var in other_vars and _extent(i) > 1]
    if len(rows) < 2 or rows != list(range(rows[0], rows[0] + len(rows))):
        return None
    if ana.vec < rows[-1]:
        return None
    return rows


def _elements(load) -> int:
    """Element count of the buffer a load reads (0 if its shape is symbolic)."""
    total = 1
    for dim in load.source.shape:
        if not isinstance(dim, tirx.IntImm):
            return 0
        total *= int(dim.value)
    return total


def pixels_outermost(block, ana) -> bool:
    """Walk pixel tiles in the outer loop (each tile meets every channel block) rather than channel blocks.

    Either order re-reads one operand once per tile of the other: channel blocks
    outermost re-stream the input once per block, pixel tiles outermost re-stream
    the weight once per tile. Re-stream the smaller one, which then stays in L2.
    Measured on resnet50 (interleaved per-kernel profiles, 2 cores, Zen 3): with
    the order this picks, every layer but the 7x7 stem ran as fast as or faster
    than with the other, e.g. the 56x56 1x1 256->64 conv 1.77 vs 3.09 ms and the
    14x14 3x3 256->256 conv 9.8 vs 13.7 ms (5 calls).
    """
    return _elements(ana.other_load) > _elements(ana.vec_load)


def _channel_last(index, var) -> bool:
    """``w[..., f]`` (HWIO) or ``w[f // L, ..., f % L]`` (pre-packed by passes/pack_conv_weights.py)."""
    if index.same_as(var):
        return True
    return isinstance(index, tirx.FloorMod) and index.a.same_as(var) and isinstance(index.b, tirx.IntImm)


def choose_conv_tile(pixels: int, channels: int, lanes: int, nregs: int) -> tuple[int, int, int] | None:
    """(mr, nv, lane) for ``pixels`` output pixels and ``channels`` output channels."""
    lane = lanes
    while lane > 1 and channels % lane:
        lane //= 2
    if lane < 4:
        return None
    n_vecs = channels // lane
    for mr, nv in TILES_32 if nregs >= 32 else TILES_16:
        if pixels % mr == 0 and n_vecs % nv == 0:
            return mr, nv, lane
    return None


def _score(tile) -> float:
    mr, nv, _ = tile
    return mr * nv / (mr + nv)


#: main tiles for a row whose width no good tile divides: ``width // mr`` full
#: tiles, then one ``width % mr`` x ``nv`` tile (a second loop, not a predicate).
#: (4, 2) first: on a 7-wide row it ties (6, 2) in FMAs per load and measured
#: faster (resnet50's 7x7 layers, 15 % over the 7x1 tile); (6, 2) wins on 14.
RAGGED_TILES = ((4, 2), (6, 2))


def ragged_score(width: int, mr: int, nv: int) -> float:
    """FMAs per load over one row of ``width`` pixels cut into ``mr``-pixel tiles plus the rest."""
    full, rest = divmod(width, mr)
    loads = full * (mr + nv) + (rest + nv if rest else 0)
    return width * nv / loads


def choose_ragged_tile(width: int, channels: int, lanes: int, exact) -> tuple[int, int, int] | None:
    """A ragged (mr, nv, lane) tile that beats the ``exact`` one (or None) on FMAs per load."""
    if channels % lanes:
        return None
    best, best_score = None, _score(exact) if exact is not None else 0.0
    for mr, nv in RAGGED_TILES:
        if width % mr == 0 or width < mr or (channels // lanes) % nv:
            continue
        score = ragged_score(width, mr, nv)
        if score > best_score + 1e-9:
            best, best_score = (mr, nv, lanes), score
    return best


def rows_aligned(width: int, mr: int) -> bool:
    """Whether ``mr``-pixel tiles of the fused (y*width + x) axis never straddle a row boundary.

    The write-back of a tile (fused epilogue or accumulator copy) is placed with
    ``reverse_compute_at``, which covers the tile's pixels by their (y, x) bounding box. A tile
    from x = 56 of one 58-wide row to x = 1 of the next gets two full rows: 116 pixels written
    from a 4-pixel accumulator, the rest uninitialised (wrong outputs, up to 100% of the scale,
    for 1x1 stride-1 convs 58 or 82 pixels wide). Tiles of whole rows, or within a row, are exact.
    """
    return width % mr == 0 or mr % width == 0


def _contiguous_pixels(block, ana, rows: list[int]) -> bool:
    """True if the input reads pixel (y, x) at exactly ``[.., y, x, ..]`` (a 1x1, stride-1 conv).

    Only then are the pixels of a fused (y*W + x) tile equally spaced in the
    input: one base address for the whole tile. Otherwise each of the ``mr``
    pixels needs its own address register (div/mod by W is not hoistable across
    a row boundary), and 7 of them spill the x86 integer registers.
    """
    import tvm_ffi

    row_vars = [block.iter_vars[i].var for i in rows]
    loads = []
    tvm_ffi.structural_walk(block.body.value, (TensorLoad, loads.append), order="post")
    for load in loads:
        used = [idx for idx in load.indices if any(v.same_as(idx) for v in row_vars) or _mentions(idx, row_vars)]
        if used and not (len(used) == len(row_vars) and all(u.same_as(v) for u, v in zip(used, row_vars))):
            return False
    return True


def _mentions(expr, variables) -> bool:
    from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr

    found = collect_vars_used_in_prim_expr(expr)
    return any(v in found for v in variables)


def schedule_conv(sch: s_tir.Schedule, main_rv, consumers, ana, rows: list[int], target: Target) -> bool:
    """Schedule the conv block ``main_rv`` in place; False (schedule untouched) if the shape does not fit."""
    loops = sch.get_loops(main_rv)
    extents = [C.const_extent(sch, lp) for lp in loops]
    if any(extents[i] is None for i in rows + [ana.vec]):
        return False
    lanes, nregs = C.vector_lanes(target, ana.dtype), C.num_vector_registers(target)
    # Tile along the output width (one row: the mr input pixels are s*C apart);
    # fuse all pixel axes only for a 1x1 stride-1 conv, where that is still true.
    tile = choose_conv_tile(extents[rows[-1]], extents[ana.vec], lanes, nregs)
    fuse_rows = False
    if _contiguous_pixels(sch.get(main_rv), ana, rows):
        pixels = 1
        for i in rows:
            pixels *= extents[i]
        fused = choose_conv_tile(pixels, extents[ana.vec], lanes, nregs)
        if fused is not None and not rows_aligned(extents[rows[-1]], fused[0]):
            fused = None
        if fused is not None and (tile is None or _score(fused) > _score(tile)):
            tile, fuse_rows = fused, True
    pixels_first = pixels_outermost(sch.get(main_rv), ana)
    if not pixels_first:
        # The row's pixel loop runs inside each task, so it can end in a shorter tile.
        ragged = choose_ragged_tile(extents[rows[-1]], extents[ana.vec], lanes, tile)
        if ragged is not None:
            return _schedule_ragged_rows(sch, main_rv, consumers, ana, rows, target, ragged)
    if tile is None:
        return False
    mr, nv, lane = tile

    others = [loops[i] for i in ana.spatial if i != ana.vec and i not in rows]
    red = [loops[i] for i in ana.reduce]
    if fuse_rows:
        outer_rows, pix = [], sch.fuse(*[loops[i] for i in rows])
    else:
        outer_rows, pix = [loops[i] for i in rows[:-1]], loops[rows[-1]]
    p_o, p_i = sch.split(pix, factors=[None, mr])
    f_o, f_n, f_l = sch.split(loops[ana.vec], factors=[None, nv, lane])
    if pixels_first:
        tiles = [*others, *outer_rows, p_o, f_o]
    else:
        tiles = [f_o, *others, *outer_rows, p_o]
    sch.reorder(*tiles, *red, p_i, f_n, f_l)
    red = _merge_window_width(sch, red)
    par = C.fuse_and_parallel(sch, tiles, target)

    if consumers:
        epi = consumers[0].block_rv
        sch.set_scope(main_rv, 0, C.ACC_SCOPE)
        sch.reverse_compute_at(epi, par, preserve_unit_loops=True)
        if not C.epilogue_covers_tile(sch, epi, par, mr * nv * lane):
            raise C.EpilogueNotExact()
    else:
        epi = sch.cache_write(main_rv, 0, C.ACC_SCOPE)
        sch.reverse_compute_at(epi, par, preserve_unit_loops=True)
        if not C.epilogue_covers_tile(sch, epi, par, mr * nv * lane):
            raise C.EpilogueNotExact("write-back")
    C.vectorize_innermost(sch, epi, lane)

    _register_tile(sch, main_rv, red[0], p_i, f_n, f_l)
    return True


def _merge_window_width(sch: s_tir.Schedule, red: list) -> list:
    """Fuse the window-width and input-channel reduction loops into one.

    In NHWC the input a pixel reads over (kx, c) is one contiguous run of KW*C floats, and the
    packed weight ``[F/8, KH, KW, C, 8]`` is contiguous over (kx, c) too, so a 3x3 conv's
    reduction becomes three runs of 3*C instead of nine runs of C. Measured on resnet50's
    3x3 convs in isolation (session 6, min of 40 interleaved rounds, 2 threads): 512-channel
    7x7 layers 13-16% faster, the 256-channel 14x14 layer 5-11%, the 64/128-channel ones
    unchanged within noise (+-4%). A C model of the same register tile showed no difference
    between the two orders, so the gain is in the code LLVM makes of the shorter loop nest,
    not in memory behaviour. Fusing loops never changes the result, and the index arithmetic
    (``fused // C * C + fused % C``) folds back to ``fused`` (no div/mod in the loop).
    """
    if len(red) < 2 or any(C.const_extent(sch, lp) is None for lp in red[-2:]):
        return red
    return [*red[:-2], sch.fuse(red[-2], red[-1])]


def _register_tile(sch: s_tir.Schedule, block, first_reduce, p_i, f_n, f_l) -> None:
    """Unroll the ``p_i x f_n`` accumulator tile, vectorize its lanes, split off a vectorized init."""
    sch.unroll(p_i)
    sch.unroll(f_n)
    sch.vectorize(f_l)
    init = sch.decompose_reduction(block, first_reduce)
    init_loops = sch.get_loops(init)
    sch.vectorize(init_loops[-1])
    for lp in init_loops[-3:-1]:
        sch.unroll(lp)


def _schedule_ragged_rows(sch: s_tir.Schedule, main_rv, consumers, ana, rows: list[int], target: Target, tile) -> bool:
    """Channel blocks x rows in parallel; each task walks its row in ``mr``-pixel tiles and one shorter tile.

    ``loop_partition`` splits the row into a loop of full tiles and a remainder loop
    (two copies of the conv block), so neither has a predicate in its inner loop.
    The epilogue runs once per task over the task's row. The accumulators are one row x
    ``nv*lane`` channels: 448 B on a 7-wide row and 896 B on a 14-wide one stay on the
    stack; a 28-wide row's 1792 B become a workspace allocation per task (over the 1 KiB
    stack limit, see docs/tvm-notes.md), which on resnet50's 28x28 3x3 conv measured as
    fast as the exact 4x2 tile it replaced (5.07 vs 5.01 ms, 3 calls).
    """
    mr, nv, lane = tile
    loops = sch.get_loops(main_rv)
    width = C.const_extent(sch, loops[rows[-1]])
    others = [loops[i] for i in ana.spatial if i != ana.vec and i not in rows]
    red = [loops[i] for i in ana.reduce]
    outer_rows, pix = [loops[i] for i in rows[:-1]], loops[rows[-1]]
    f_o, f_n, f_l = sch.split(loops[ana.vec], factors=[None, nv, lane])
    sch.reorder(f_o, *others, *outer_rows, pix, *red, f_n, f_l)
    red = _merge_window_width(sch, red)
    par = C.fuse_and_parallel(sch, [f_o, *others, *outer_rows], target)
    task_elems = width * nv * lane
    if consumers:
        epi = consumers[0].block_rv
        sch.set_scope(main_rv, 0, C.ACC_SCOPE)
        sch.reverse_compute_at(epi, par, preserve_unit_loops=True)
        if not C.epilogue_covers_tile(sch, epi, par, task_elems):
            raise C.EpilogueNotExact()
    else:
        epi = sch.cache_write(main_rv, 0, C.ACC_SCOPE)
        sch.reverse_compute_at(epi, par, preserve_unit_loops=True)
        if not C.epilogue_covers_tile(sch, epi, par, task_elems):
            raise C.EpilogueNotExact("write-back")
    C.vectorize_innermost(sch, epi, lane)

    full = width - width % mr
    for index, part in enumerate(sch.loop_partition(pix, [full, None])):
        (block,) = _leaf_blocks(sch, part)
        nest = sch.get_loops(block)
        start = next(i for i, lp in enumerate(nest) if sch.get(lp).same_as(sch.get(part)))
        p, reduce_loops, fn, fl = nest[start], nest[start + 1 : -2], nest[-2], nest[-1]
        if index == 0:
            p_o, p_i = sch.split(p, factors=[None, mr])
            sch.reorder(p_o, *reduce_loops, p_i, fn, fl)
        else:
            p_i = p
            sch.reorder(*reduce_loops, p_i, fn, fl)
        _register_tile(sch, block, reduce_loops[0], p_i, fn, fl)
    return True


def _leaf_blocks(sch: s_tir.Schedule, loop) -> list:
    """The blocks under ``loop`` that have no child blocks (loop_partition wraps its copies)."""
    leaves, pending = [], list(sch.get_child_blocks(loop))
    while pending:
        block = pending.pop(0)
        children = sch.get_child_blocks(block)
        if len(children):
            pending.extend(children)
        else:
            leaves.append(block)
    return leaves
