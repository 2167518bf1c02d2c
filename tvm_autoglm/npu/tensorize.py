"""The TensorIntrin route: NPU matmuls reached through ``sch.tensorize``.

Two intrinsics live here:

* the **block intrinsic** ``npu_gemm_{bm}x{bn}x{bk}_{a}{b}{c}`` (registered on demand per
  size): desc = a (bm x bn x bk) multiply-accumulate block ``C += A x B``, impl = one
  ``T.call_extern("npu_gemm_block", ...)`` that the simulator executes as LOAD A/B sub-panels
  into rotating buffers, one GEMM of ceil(bm/16) x ceil(bn/16) x ceil(bk/16) 16x16x16 tiles
  accumulating in the accumulator scratchpad, and STORE C on the last k step. A kernel
  (``block_kernel``) brackets the tensorized loop nest with ``npu_block_begin`` /
  ``npu_block_end``, and the simulator keeps the per-core engine timelines between the
  block calls of one op, so the loads of the next block overlap the GEMM of the previous
  one (``depth`` rotating buffers). This is the route models take when
  ``route == "tensorize"`` (partition.py); docs/npu.md has the cycle rule and the numbers.
* the original **tile intrinsic** ``npu_tile_gemm_16x16x16_*`` (``tensorize_matmul``): every
  16x16x16 step is its own NPU op with nothing to overlap; kept as the measured
  lower bound of what a tile-sized intrinsic can do.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T

from . import isa
from .config import Machine

INTRINS = {"int8": "npu_tile_gemm_16x16x16_i8i8i32", "float32": "npu_tile_gemm_16x16x16_f16f16f32"}
MAX_BLOCK = {"m": 256, "n": 256, "k": 512}  # as the program route's search
DEPTHS = (1, 2, 3)
_SHORT = {"int8": "i8", "int32": "i32", "float32": "f32", "float16": "f16"}


# ---------------------------------------------------------------- the 16x16x16 tile intrinsic (comparison)

def _make(in_dtype: str, acc_dtype: str, fp: int):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16, 16), in_dtype, offset_factor=1)
        B = T.match_buffer(b, (16, 16), in_dtype, offset_factor=1)
        C = T.match_buffer(c, (16, 16), acc_dtype, offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], A[0:16, 0:16], B[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            for i, j, k in T.grid(16, 16, 16):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], acc_dtype) * T.cast(B[vk, vj], acc_dtype)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa0 = T.int32()
        sa1 = T.int32()
        sb0 = T.int32()
        sb1 = T.int32()
        sc0 = T.int32()
        sc1 = T.int32()
        A = T.match_buffer(a, (16, 16), in_dtype, offset_factor=1, strides=[sa0, sa1])
        B = T.match_buffer(b, (16, 16), in_dtype, offset_factor=1, strides=[sb0, sb1])
        C = T.match_buffer(c, (16, 16), acc_dtype, offset_factor=1, strides=[sc0, sc1])
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], A[0:16, 0:16], B[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            T.evaluate(T.call_extern("int32", "npu_gemm_tile", A.access_ptr("r"), B.access_ptr("r"), C.access_ptr("rw"), sa0, sb0, sc0, fp, 0))

    return desc, impl


def register() -> None:
    """Register both tile intrinsics once (idempotent)."""
    for in_dtype, name in INTRINS.items():
        if TensorIntrin.get(name, allow_missing=True) is None:
            acc = "int32" if in_dtype == "int8" else "float32"
            TensorIntrin.register(name, *_make(in_dtype, acc, 0 if in_dtype == "int8" else 1))


def tensorize_matmul(func: tvm.tirx.PrimFunc, dtype: str = "int8", block: str = "C") -> tvm.IRModule:
    """Tile a matmul PrimFunc (M, N, K multiples of 16; operands ``dtype``) by 16 and tensorize the inner tile."""
    register()
    sch = Schedule(func)
    blk = sch.get_sblock(block)
    i, j, k = sch.get_loops(blk)
    io, ii = sch.split(i, [None, 16])
    jo, ji = sch.split(j, [None, 16])
    ko, ki = sch.split(k, [None, 16])
    sch.reorder(io, jo, ko, ii, ji, ki)
    sch.decompose_reduction(blk, ko)
    sch.tensorize(ii, INTRINS[dtype])
    return sch.mod


# ---------------------------------------------------------------- the block intrinsic

@dataclass(frozen=True)
class BlockConfig:
    """One block-route op: block sizes (each divides its dimension) and the prefetch depth."""

    bm: int
    bn: int
    bk: int
    depth: int

    def to_json(self) -> dict:
        return {"mb": self.bm, "nb": self.bn, "kb": self.bk, "depth": self.depth}


def block_intrin_name(bm: int, bn: int, bk: int, a_dtype: str, b_dtype: str, c_dtype: str) -> str:
    return f"npu_gemm_{bm}x{bn}x{bk}_{_SHORT[a_dtype]}{_SHORT[b_dtype]}{_SHORT[c_dtype]}"


def _block_pair(bm, bn, bk, a_dtype, b_dtype, c_dtype):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (bm, bk), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (bk, bn), b_dtype, offset_factor=1)
        C = T.match_buffer(c, (bm, bn), c_dtype, offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:bm, 0:bn], A[0:bm, 0:bk], B[0:bk, 0:bn])
            T.writes(C[0:bm, 0:bn])
            for i, j, k in T.grid(bm, bn, bk):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], c_dtype) * T.cast(B[vk, vj], c_dtype)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa0 = T.int32()
        sa1 = T.int32()
        sb0 = T.int32()
        sb1 = T.int32()
        sc0 = T.int32()
        sc1 = T.int32()
        A = T.match_buffer(a, (bm, bk), a_dtype, offset_factor=1, strides=[sa0, sa1])
        B = T.match_buffer(b, (bk, bn), b_dtype, offset_factor=1, strides=[sb0, sb1])
        C = T.match_buffer(c, (bm, bn), c_dtype, offset_factor=1, strides=[sc0, sc1])
        with T.sblock("root"):
            T.reads(C[0:bm, 0:bn], A[0:bm, 0:bk], B[0:bk, 0:bn])
            T.writes(C[0:bm, 0:bn])
            T.evaluate(T.call_extern(
                "int32", "npu_gemm_block", A.access_ptr("r"), B.access_ptr("r"), C.access_ptr("rw"),
                T.Cast("int64", A.elem_offset), T.Cast("int64", C.elem_offset),
                T.Cast("int32", sa0), T.Cast("int32", sb0), T.Cast("int32", sc0),
                T.int32(bm), T.int32(bn), T.int32(bk)))

    return desc, impl


def register_block(bm: int, bn: int, bk: int, a_dtype: str = "int8", b_dtype: str = "int8", c_dtype: str = "int32") -> str:
    """Register (once) the block intrinsic of this size and dtypes; returns its name."""
    name = block_intrin_name(bm, bn, bk, a_dtype, b_dtype, c_dtype)
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, *_block_pair(bm, bn, bk, a_dtype, b_dtype, c_dtype))
    return name


def _esz(shape) -> int:
    return 1 if shape.mode == isa.MODE_INT8 else 2


def fits_block(shape, cfg: BlockConfig, machine: Machine) -> bool:
    """Sizes divide the op, and depth input/weight buffers + two accumulators fit the scratchpads."""
    if shape.m % cfg.bm or shape.n % cfg.bn or shape.k % cfg.bk or cfg.depth < 1:
        return False
    mt, nt, kt = (math.ceil(v / 16) for v in (cfg.bm, cfg.bn, cfg.bk))
    sp, esz = machine.scratchpad, _esz(shape)
    return (cfg.depth * mt * kt * 256 * esz <= sp["input"] and cfg.depth * kt * nt * 256 * esz <= sp["weight"]
            and 2 * mt * nt * 256 * 4 <= sp["accumulator"])


def config_words(shape, cfg: BlockConfig, machine: Machine, op_id: int = 0) -> np.ndarray:
    """The (2, 16) int32 header ``npu_block_begin`` reads: CONFIG + {CONFIG, 0, batch, bm, bn, bk, depth, dtypes}."""
    prog = isa.Program()
    prog.config(op_id, shape.mode, machine.cores, machine, shape.m, shape.n, shape.k, batch=shape.batch)
    words = prog.array()
    words[1, 3:10] = [cfg.bm, cfg.bn, cfg.bk, cfg.depth] + [isa.DTYPE_CODES[d] for d in (shape.a_dtype, shape.b_dtype, shape.out_dtype)]
    return words


def _lib():
    from . import build

    lib = build.global_library()
    lib.npu_time_blocks.restype = ctypes.c_int64
    lib.npu_time_blocks.argtypes = [ctypes.c_void_p]
    return lib


def time_blocks(shape, cfg: BlockConfig, machine: Machine) -> int:
    """Cycles of the op's tensorized kernel, by replaying its block calls in timing-only mode."""
    words = np.ascontiguousarray(config_words(shape, cfg, machine), dtype=np.int32)
    cycles = _lib().npu_time_blocks(words.ctypes.data)
    if cycles < 0:
        raise ValueError(f"npu-sim rejected block config {cfg} for {shape} (code {cycles})")
    return int(cycles)


def _sizes(dim: int, cap: int) -> list[int]:
    """Block sizes along one dimension: divisors that are multiples of 16 up to ``cap``; a dimension that is
    not a multiple of 16 also allows its divisors >= 16 (padded to 16 on chip), or itself when small."""
    divs = [d for d in range(1, min(dim, cap) + 1) if dim % d == 0]
    out = [d for d in divs if d % 16 == 0]
    if dim % 16:
        out += [d for d in divs if d % 16 and d >= 16] or ([dim] if dim <= cap else [])
    return sorted(set(out))


def candidate_block_configs(shape, machine: Machine, depths=(2,)) -> list[BlockConfig]:
    out = []
    for bm in _sizes(shape.m, MAX_BLOCK["m"]):
        for bn in _sizes(shape.n, MAX_BLOCK["n"]):
            for bk in _sizes(shape.k, MAX_BLOCK["k"]):
                if (bm < 32 and shape.m > 64) or (bn < 32 and shape.n > 64) or (bk < 32 and shape.k > 64):
                    continue
                for depth in depths:
                    cfg = BlockConfig(bm, bn, bk, depth)
                    if fits_block(shape, cfg, machine):
                        out.append(cfg)
    return out


_CACHE: dict = {}


def best_block_config(shape, machine: Machine):
    """(config, cycles, tried) by exhaustive search (depth 2, then 1/3/4 for the best three); None if nothing fits."""
    key = (shape, repr(machine))
    if key not in _CACHE:
        scored = [(time_blocks(shape, cfg, machine), cfg) for cfg in candidate_block_configs(shape, machine)]
        if not scored:
            _CACHE[key] = None
            return None
        scored.sort(key=lambda item: (item[0], -item[1].bm * item[1].bn))
        for _, cfg in scored[:3]:
            for depth in (1, 3, 4):
                other = BlockConfig(cfg.bm, cfg.bn, cfg.bk, depth)
                if fits_block(shape, other, machine):
                    scored.append((time_blocks(shape, other, machine), other))
        cycles, best = min(scored, key=lambda item: item[0])
        _CACHE[key] = (best, cycles, len(scored))
    return _CACHE[key]


# ---------------------------------------------------------------- kernels

def kernel_source(name: str, a_shape, b_shape, out_shape, shape, bias: bool, op_id: int) -> str:
    """TVMScript of the op before scheduling: begin, Out = bias (or 0) on the host, Out += A x B, end.

    The init is its own block (not ``T.init``) so the update block's read regions are
    exactly the intrinsic's: C, A, B."""
    nb = len(out_shape) - 2
    bv = [f"b{i}" for i in range(nb)]
    vb = [f"v{i}" for i in range(nb)]
    buf = lambda n, shp, dt: f"{n}: T.Buffer(({', '.join(map(str, shp))},), \"{dt}\")"  # noqa: E731
    params = [buf("A", a_shape, shape.a_dtype), buf("B", b_shape, shape.b_dtype)]
    if bias:
        params.append(buf("Bias", [shape.n], shape.out_dtype))
    params += [buf("P", [2, 16], "int32"), buf("Out", out_shape, shape.out_dtype)]
    a_idx = ", ".join(vb + ["vi", "vk"])
    b_idx = ", ".join((vb if len(b_shape) > 2 else []) + ["vk", "vj"])
    o_idx = ", ".join(vb + ["vi", "vj"])
    acc = shape.out_dtype
    init = "Bias[vj]" if bias else f"T.{acc}(0)"
    grid = ", ".join(map(str, list(out_shape[:-2]) + [shape.m, shape.n, shape.k]))
    ob = [f"o{i}" for i in range(nb)]
    return (
        "@T.prim_func(s_tir=True)\n"
        f"def {name}({', '.join(params)}):\n"
        "    T.evaluate(T.call_extern(\"int32\", \"npu_block_begin\", P.data))\n"
        f"    for {', '.join(ob + ['i', 'j'])} in T.grid({', '.join(map(str, out_shape))}):\n"
        "        with T.sblock(\"C_init\"):\n"
        f"            {', '.join(vb + ['vi', 'vj'])} = T.axis.remap(\"{'S' * nb}SS\", [{', '.join(ob + ['i', 'j'])}])\n"
        f"            Out[{o_idx}] = {init}\n"
        f"    for {', '.join(bv + ['i', 'j', 'k'])} in T.grid({grid}):\n"
        "        with T.sblock(\"C\"):\n"
        f"            {', '.join(vb + ['vi', 'vj', 'vk'])} = T.axis.remap(\"{'S' * nb}SSR\", [{', '.join(bv + ['i', 'j', 'k'])}])\n"
        f"            Out[{o_idx}] = Out[{o_idx}] + T.Cast(\"{acc}\", A[{a_idx}]) * T.Cast(\"{acc}\", B[{b_idx}])\n"
        f"    T.evaluate(T.call_extern(\"int32\", \"npu_block_end\", {op_id}))\n"
    )


def schedule_blocks(sch: Schedule, shape, cfg: BlockConfig, block: str = "C") -> None:
    """Block loop nest of the op (batch, n blocks, m blocks, k steps), then ``sch.tensorize`` of the block."""
    blk = sch.get_sblock(block)
    loops = sch.get_loops(blk)
    batch, (i, j, k) = loops[:-3], loops[-3:]
    io, ii = sch.split(i, [None, cfg.bm])
    jo, ji = sch.split(j, [None, cfg.bn])
    ko, ki = sch.split(k, [None, cfg.bk])
    sch.reorder(*batch, jo, io, ko, ii, ji, ki)
    sch.tensorize(ii, register_block(cfg.bm, cfg.bn, cfg.bk, shape.a_dtype, shape.b_dtype, shape.out_dtype))


def block_kernel(name: str, a_shape, b_shape, out_shape, shape, cfg: BlockConfig, bias: bool, op_id: int) -> tvm.tirx.PrimFunc:
    """The scheduled, tensorized PrimFunc of one NPU op (args: A, B, [Bias], P = config_words, Out)."""
    func = tvm.script.from_source(kernel_source(name, a_shape, b_shape, out_shape, shape, bias, op_id), extra_vars={"T": T})
    sch = Schedule(func.with_attr("global_symbol", name))
    schedule_blocks(sch, shape, cfg)
    return sch.mod["main"]
