"""CPU rule for the quantized matmul: tensorized with AVX2 ``vpmaddwd`` (no VNNI needed).

TVM's x86 int8 intrinsics (``dot_16x4_vnni`` / ``dot_16x4_avx512``) need
AVX-512; on an AVX2-only CPU (Zen 3, most laptops) the int8 matmul falls to
LLVM's auto-vectorizer, which widens to int32 and multiplies with
``vpmulld``: no faster than fp32. ``vpmaddwd`` does 16 exact int16 MACs per
instruction, twice an fp32 FMA's 8, so with the weight pre-packed as int16
``[N/8, K/2, 8, 2]`` (``quantize/pack.py``) one instruction consumes one
broadcast pair of activations and one 32-byte load of weights.

The kernel this rule claims is the one ``quantize.int8`` emits on AVX2
targets: ``C[i, j] += int32(X[i, 2p + q]) * int32(W[j // 8, p, j % 8, q])``,
X and W int16, C int32, with the quantize step that writes X (fused before
it) and the dequantize epilogue (fused after it). Schedule:

* X's producer is materialized once, parallel and vectorized;
* an ``mr x nv`` tile of 8-lane int32 accumulators (rows x 8-column groups)
  sits in registers across the whole K loop, each ``8 x 2`` step tensorized
  into ``acc += vpmaddwd(broadcast(X pair), W block)``;
* the parallel loop runs over column panels (over row tiles as well only
  when there are too few panels for the cores), so the weight panel of a
  column group stays in L1 while every row tile passes;
* the accumulators are a global-scope tile buffer (``_common.ACC_SCOPE``),
  which lowers to a stack array that LLVM keeps in registers;
* the epilogue (int32 -> float, times the scales) runs on the tile while it
  is still in registers, vectorized.

It must come before :class:`Matmul` in the rule list, which would otherwise
take the kernel as a generic int32 contraction.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.ir.expr import TensorLoad
from tvm.s_tir import TensorIntrin
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.script import tirx as T
from tvm.target import Target

from ..quantize.pack import target_has_avx2
from . import _common as C
from .elementwise import schedule_spatial_block

INTRIN = "autoglm_avx2_pmaddwd_8x2_i16i16i32"
LANES = 8  # int32 accumulator lanes per ymm register
PAIR = 2


@T.prim_func(s_tir=True)
def _desc(
    A: T.Buffer((2,), "int16", offset_factor=1),
    B: T.Buffer((8, 2), "int16", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1, scope="global"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:2], B[0:8, 0:2])
        T.writes(C[0:8])
        for i in T.serial(0, 8):
            for k in T.serial(0, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])


@T.prim_func(s_tir=True)
def _impl(
    A: T.Buffer((2,), "int16", offset_factor=1),
    B: T.Buffer((8, 2), "int16", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1, scope="global"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:2], B[0:8, 0:2])
        T.writes(C[0:8])
        # a: the two int16 of X as one int32, broadcast: (a0, a1) x 8; b: (w[l, 0], w[l, 1]) for
        # the 8 columns l. Written as one expression: a named temporary would become a "local"
        # buffer, which LowerTVMBuiltin turns into a workspace alloc/free per parallel iteration.
        C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int16x2"), dtype="int32"), 8), dtype="int16x16"),
            B.vload([0, 0], dtype="int16x16"),
            dtype="int32x8",
        )


TensorIntrin.register(INTRIN, _desc, _impl, override=True)

# (rows, 8-column groups) of the register tile, best first: 8 accumulators +
# 2 weight vectors + broadcasts fit the 16 ymm registers; measured on Zen 3
# ([128,768]x[768,3072]: 4x2 0.68x fp32 time, 8x1 0.75x, 2x3 0.75x, 4x3 0.87x).
_TILES = ((4, 2), (8, 1), (2, 3), (4, 1), (2, 2), (2, 1), (1, 3), (1, 2), (1, 1))


def _dtype(expr) -> str:
    return str(getattr(expr, "dtype", None) or expr.ty)


def _strip_cast(expr, dtype: str, to: str = "int32"):
    if isinstance(expr, tirx.Cast) and _dtype(expr) == to and _dtype(expr.value) == dtype:
        return expr.value
    return None


def _vars(indices) -> list:
    """Indices with the constant ones (unit axes normalization removed) dropped."""
    return [idx for idx in indices if not isinstance(idx, tirx.IntImm)]


def match_packed(block, x_dtype: str = "int16", w_dtype: str = "int16", lanes: int = LANES, group: int = PAIR,
                 acc_dtype: str = "int32", x_operand=None) -> tuple | None:
    """``(x_buffer, w_buffer)`` if ``block`` is ``C[.., i, j] += int32(X[.., i, 2p+q]) * int32(W[j//8, p, j%8, q])``.

    The defaults describe this rule's int16 layout; ``vnni_matmul`` asks the same question of its
    uint8 x int8 ``W[j//16, p, j%16, q]`` layout (``lanes`` columns, ``group`` reduction steps), and
    ``bf16_matmul`` of bf16 x bf16 -> float32 (``acc_dtype``), whose X side is not a plain cast
    (``x_operand``: the product's left factor -> X's load, or None).
    """
    body = block.body
    if not isinstance(body, tirx.BufferStore) or str(body.buffer.dtype) != acc_dtype or len(body.indices) < 2:
        return None
    value = body.value
    if not isinstance(value, tirx.Add):
        return None
    acc, prod = value.a, value.b
    if not (isinstance(acc, TensorLoad) and acc.source.same_as(body.buffer)):
        acc, prod = prod, acc
    if not (isinstance(acc, TensorLoad) and acc.source.same_as(body.buffer)) or not isinstance(prod, tirx.Mul):
        return None
    x = x_operand(prod.a) if x_operand is not None else _strip_cast(prod.a, x_dtype, acc_dtype)
    w = _strip_cast(prod.b, w_dtype, acc_dtype)
    if not (isinstance(x, TensorLoad) and isinstance(w, TensorLoad)):
        return None
    out_idx, x_idx = _vars(body.indices), _vars(x.indices[:-1])
    if len(w.source.shape) != 4 or not out_idx:  # a single-row matmul may keep only the column axis
        return None
    shape = [int(d) for d in w.source.shape]
    if shape[2] != lanes or shape[3] != group:
        return None
    ndim = len(out_idx)
    spatial, reduce = tirx.IterVar.DataPar, tirx.IterVar.CommReduce
    if [iv.iter_type for iv in block.iter_vars] != [spatial] * ndim + [reduce, reduce]:
        return None
    names = [iv.var for iv in block.iter_vars]
    *_, p, q = names
    if not all(idx.same_as(var) for idx, var in zip(out_idx, names[:ndim])):
        return None
    if not (w.indices[1].same_as(p) and w.indices[3].same_as(q)):
        return None
    if len(x_idx) != ndim - 1 or not all(idx.same_as(var) for idx, var in zip(x_idx, names[: ndim - 1])):
        return None
    return x.source, w.source


def choose_tile(rows: int, groups: int, tiles=_TILES) -> tuple[int, int]:
    for mr, nv in tiles:
        if rows % mr == 0 and groups % nv == 0:
            return mr, nv
    return 1, 1


class Int8MatmulAVX2(C.CPURule):
    """The packed int16 matmul of ``quantize/pack.py``, tensorized with ``vpmaddwd``.

    The class attributes describe the packed layout and the intrinsic; ``vnni_matmul.Int8MatmulVNNI``
    reuses the whole schedule with its own (16 int32 lanes, 4 uint8 x int8 steps, ``vpdpbusd``).
    """

    intrin = INTRIN
    lanes = LANES  # int32 accumulator lanes of one register = output columns per intrinsic call
    group = PAIR  # reduction steps per lane and call
    x_dtype = "int16"
    w_dtype = "int16"
    acc_dtype = "int32"
    tiles = _TILES

    def match(self, block) -> tuple | None:
        return match_packed(block, self.x_dtype, self.w_dtype, self.lanes, self.group, self.acc_dtype)

    def is_target_available(self, target: Target) -> bool:
        return target_has_avx2(target)

    def _apply(self, func: tirx.PrimFunc, target: Target):
        sch = self._schedule(func, target, attach_epilogue=True)
        if sch is None:  # an epilogue that does not follow the tile (e.g. a batch reshape): run it on its own
            sch = self._schedule(func, target, attach_epilogue=False)
        return sch

    def _schedule(self, func: tirx.PrimFunc, target: Target, attach_epilogue: bool):
        try:
            return self._build(func, target, attach_epilogue)
        except Exception:  # pylint: disable=broad-except  # the schedule primitives refused: not our kernel
            return None

    def _build(self, func: tirx.PrimFunc, target: Target, attach_epilogue: bool):
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        mains = [b for b in infos if b.is_reduction()]
        if len(mains) != 1:
            return None
        main = mains[0]
        matched = self.match(sch.get(main.block_rv))
        if matched is None:
            return None
        x_buf, _w_buf = matched
        # Keep the block that writes X (the quantize step) materialized: the
        # intrinsic loads X pairs from a buffer. Everything else inlines.
        keep = [b for b in infos if b is main or any(w.source.same_as(x_buf) for w in sch.get(b.block_rv).writes)]
        rest = C.try_inline(sch, [b for b in infos if all(b is not k for k in keep)])
        consumers = rest
        if len(consumers) > 1:
            return None
        for b in keep:
            if b is not main:
                schedule_spatial_block(sch, b.block_rv, target)

        loops = sch.get_loops(main.block_rv)
        if len(loops) != len(sch.get(main.block_rv).iter_vars) or len(loops) < 3:
            return None
        extents = [C.const_extent(sch, lp) for lp in loops]
        if any(e is None for e in extents) or extents[-3] % self.lanes or extents[-1] != self.group:
            return None
        *rows, j, p, q = loops
        mr, nv = choose_tile(extents[-4] if rows else 1, extents[-3] // self.lanes, self.tiles)
        j_o, j_n, j_l = sch.split(j, factors=[None, nv, self.lanes])
        if rows:
            *lead, i = rows
            i_o, i_i = sch.split(i, factors=[None, mr])
            sch.reorder(*lead, j_o, i_o, p, i_i, j_n, j_l, q)
            if C.extent_product(sch, [*lead, j_o]) >= C.min_parallel_tasks(target):
                # Parallel over column panels only; each task walks its row tiles serially
                # (4% faster on bert's FFN GEMMs than one task per tile).
                C.fuse_and_parallel(sch, [*lead, j_o], target)
                tile = i_o
            else:  # few column panels (a narrow output): row tiles must share the cores too
                tile = C.fuse_and_parallel(sch, [*lead, j_o, i_o], target)
        else:  # one row (normalization dropped the unit axes)
            i_i = None
            sch.reorder(j_o, p, j_n, j_l, q)
            tile = C.fuse_and_parallel(sch, [j_o], target)

        if consumers and attach_epilogue:
            epi = consumers[0].block_rv
            sch.set_scope(main.block_rv, 0, C.ACC_SCOPE)
            sch.reverse_compute_at(epi, tile, preserve_unit_loops=True)
            C.vectorize_innermost(sch, epi, self.lanes)
        else:
            out = sch.cache_write(main.block_rv, 0, C.ACC_SCOPE)
            sch.reverse_compute_at(out, tile, preserve_unit_loops=True)
            C.vectorize_innermost(sch, out, self.lanes)
            if consumers:
                schedule_spatial_block(sch, consumers[0].block_rv, target)

        init = sch.decompose_reduction(main.block_rv, p)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        for lp in init_loops[(-3 if i_i is not None else -2) : -1]:
            sch.unroll(lp)
        sch.tensorize(j_l, self.intrin)
        if i_i is not None:
            sch.unroll(i_i)
        sch.unroll(j_n)
        return sch


__all__ = ["INTRIN", "Int8MatmulAVX2", "choose_tile", "match_packed"]
