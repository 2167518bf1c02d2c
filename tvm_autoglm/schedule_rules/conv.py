"""Register-blocked CPU schedule for channels-last KxK convolutions (NHWC data, packed weight).

The generic :mod:`.matmul` rule register-blocks one spatial axis, so on a
convolution it tiles only the output height: a 7x7 or 14x14 layer gets a
7 x 1-vector tile (9 of 16 registers, one weight load per seven FMAs), and its
parallel loop walks output channels innermost, so every row of tiles streams
the whole weight from memory again (resnet50's 512-channel 3x3 conv reads its
9 MiB weight seven times per call).

A convolution's output pixels are all equivalent rows of the implicit GEMM
``out[pixel, f] += patch[pixel, k] * w[k, f]``, so this schedule

* fuses the output's spatial axes into one pixel axis and tiles it ``mr``
  pixels deep (any divisor of H*W, not of one side: 49 = 7x7 still gets a
  7-deep tile, 196 a 4-deep one);
* vectorizes the output channels ``nv`` vectors wide: the weight, pre-packed
  by ``passes/pack_conv_weights.py`` as ``[F/lanes, KH, KW, C, lanes]`` (or in
  HWIO), is contiguous along them, and the ``mr`` input values are broadcasts;
* orders the parallel loop output-channel block outermost, pixel block inner,
  so one block's weight panel (K x nv*lanes) stays in cache while every pixel
  tile uses it, and each core works on its own channel range;
* keeps the ``mr x nv`` accumulators local and computes the fused epilogue
  (bias, residual add, relu) right after each tile.

Which kernels count as a convolution: the contraction analysis of
:func:`.matmul.analyze_contraction` finds a vector axis whose operand (the
weight) is read at ``[..., f]`` and two or more spatial axes that only the
other operand (the input) reads, plus two or more reduction axes (kh, kw, c)
after unit loops are dropped. A 1x1 conv has one (c): it is a plain GEMM and
keeps the generic tile, which on resnet50's packed 1x1 layers measured the same
(interleaved per-kernel A/B, 176.1 vs 175.5 ms over all its 1x1 and 3x3 convs).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.ir.expr import TensorLoad
from tvm.target import Target

from . import _common as C

#: (rows, vectors) accumulator tiles tried in order of FMAs per load; the first
#: whose sizes divide the pixel and channel counts wins. No 7x2 with 16 ymm
#: registers: LLVM keeps both weight vectors in registers and spills one of the
#: 14 accumulators through the stack every step (measured 2x slower than 4x2 on
#: a 56x56 3x3 conv). AVX-512 (32 registers) allows the larger ones.
TILES_16 = ((4, 3), (6, 2), (5, 2), (4, 2), (2, 4), (7, 1), (8, 1), (2, 2), (4, 1), (2, 1), (1, 2), (1, 1))
TILES_32 = ((6, 4), (7, 4), (8, 3), (4, 4), (14, 2), (12, 2), (8, 2)) + TILES_16


MIN_REDUCE = 2


def conv_rows(block, ana) -> list[int] | None:
    """Positions of the pixel axes of a conv-like contraction, or None if it is not one."""
    if ana.row is None or len(ana.reduce) < MIN_REDUCE:
        return None
    from .matmul import _strip_cast, _vars_in

    body = block.body
    lhs, rhs = body.value.a, body.value.b
    if isinstance(lhs, TensorLoad) and lhs.source.same_as(body.buffer):
        product = _strip_cast(rhs)
    else:
        product = _strip_cast(lhs)
    if not isinstance(product, tirx.Mul):
        return None
    a, b = _strip_cast(product.a), _strip_cast(product.b)
    vec_var = block.iter_vars[ana.vec].var
    if not (isinstance(a, TensorLoad) and isinstance(b, TensorLoad)):
        return None
    vec_load, other = (a, b) if vec_var in _vars_in(a.indices) else (b, a)
    vec_vars, other_vars = _vars_in(vec_load.indices), _vars_in(other.indices)
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


def _contiguous_pixels(block, ana, rows: list[int]) -> bool:
    """True if the input reads pixel (y, x) at exactly ``[.., y, x, ..]`` (a 1x1, stride-1 conv).

    Only then are the pixels of a fused (y*W + x) tile equally spaced in the
    input: one base address for the whole tile. Otherwise each of the ``mr``
    pixels needs its own address register (div/mod by W is not hoistable across
    a row boundary), and 7 of them spill the x86 integer registers.
    """
    from tvm.ir.expr import TensorLoad as _Load
    import tvm_ffi

    row_vars = [block.iter_vars[i].var for i in rows]
    loads = []
    tvm_ffi.structural_walk(block.body.value, (_Load, loads.append), order="post")
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
        if fused is not None and (tile is None or _score(fused) > _score(tile)):
            tile, fuse_rows = fused, True
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
    sch.reorder(f_o, *others, *outer_rows, p_o, *red, p_i, f_n, f_l)
    par = C.fuse_and_parallel(sch, [f_o, *others, *outer_rows, p_o], target)

    if consumers:
        epi = consumers[0].block_rv
        sch.set_scope(main_rv, 0, C.ACC_SCOPE)
        sch.reverse_compute_at(epi, par, preserve_unit_loops=True)
        if not C.epilogue_covers_tile(sch, epi, par, mr * nv * lane):
            raise C.EpilogueNotExact()
    else:
        epi = sch.cache_write(main_rv, 0, C.ACC_SCOPE)
        sch.reverse_compute_at(epi, par, preserve_unit_loops=True)
    C.vectorize_innermost(sch, epi, lane)

    sch.unroll(p_i)
    sch.unroll(f_n)
    sch.vectorize(f_l)
    init = sch.decompose_reduction(main_rv, red[0])
    init_loops = sch.get_loops(init)
    sch.vectorize(init_loops[-1])
    for lp in init_loops[-3:-1]:
        sch.unroll(lp)
    return True
