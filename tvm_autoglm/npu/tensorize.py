"""The TensorIntrin route: a 16x16x16 GEMM tile as a TVM tensor intrinsic.

``desc`` is the 16x16x16 multiply-accumulate block, ``impl`` one
``npu_gemm_tile`` call (csrc/npu_sim.c) on strided tiles. ``tensorize_matmul``
tiles a matmul PrimFunc by 16 and tensorizes the inner block. It works (see
tests/npu/test_tensorize.py), but every tile is then a separate NPU op that
loads A, B and C and stores C with no overlap, so it costs several times the
cycles of the program route (partition.py + codegen.py), which plans DMA,
buffers and reuse for the whole op. That is why models use the program route;
this module is kept as the measured comparison and for TIR-level experiments.
"""

from __future__ import annotations

import tvm
from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T

INTRINS = {"int8": "npu_gemm_16x16x16_i8i8i32", "float32": "npu_gemm_16x16x16_f16f16f32"}


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
    """Register both intrinsics once (idempotent)."""
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
