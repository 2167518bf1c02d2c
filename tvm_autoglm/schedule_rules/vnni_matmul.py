"""CPU rule for the quantized matmul on AVX-512 VNNI: tensorized with ``vpdpbusd`` on zmm.

The kernel is the one ``quantize.int8`` emits on VNNI targets
(``quantize/pack_vnni.py``): ``C[i, j] += int32(Xu[i, 4p + q]) * int32(W[j // 16, p, j % 16, q])``,
Xu uint8 (the int8 activation + 128), W int8 packed ``[N/16, K/4, 16, 4]``, then
``C - comp[j]`` (the shift's compensation) and the dequantize epilogue. Each
``16 x 4`` step becomes ``acc = vpdpbusd(acc, broadcast(4 bytes of Xu), 64 bytes of W)``:
64 MACs per instruction, against 16 for AVX2's ``vpmaddwd`` (which LLVM fuses
into the 8-lane ``vpdpwssd`` on these CPUs).

The schedule is :class:`Int8MatmulAVX2`'s (quantize step materialized, a
rows x 16-column-groups register tile over the whole K loop, parallel over
column panels, epilogue on the tile in registers) with this layout and
intrinsic; only the tile sizes differ, for 32 zmm registers.

TVM 0.27 ships ``dot_16x4_vnni`` (``s_tir/tensor_intrin/x86.py``), but it passes
``<16 x i32>`` operands to ``llvm.x86.avx512.vpdpbusd.512``, whose LLVM 22
signature takes ``<64 x i8>``: the module fails LLVM verification. The
intrinsic here passes the bytes as ``int8x64``. Its accumulator is in
``global`` scope like the AVX2 rule's (``_common.ACC_SCOPE``).

Must come before :class:`Int8MatmulAVX2` and :class:`Matmul` in the rule list;
it claims only uint8 x int8 kernels of this layout on targets with avx512vnni.
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target import Target

from ..quantize.pack_vnni import LANES, QUAD, target_has_vnni
from .int8_matmul import Int8MatmulAVX2

INTRIN = "autoglm_avx512_vpdpbusd_16x4_u8i8i32"


@T.prim_func(s_tir=True)
def _desc(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1, scope="global"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])


@T.prim_func(s_tir=True)
def _impl(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1, scope="global"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        # One expression, no named temporaries (each would become a workspace-allocated "local" buffer).
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16), dtype="int8x64"),
            B.vload([0, 0], dtype="int8x64"),
            dtype="int32x16",
        )


TensorIntrin.register(INTRIN, _desc, _impl, override=True)

EMULATED_INTRIN = "autoglm_portable_dot_16x4_u8i8i32"


@T.prim_func(s_tir=True)
def _impl_portable(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1, scope="global"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        # vpdpbusd's arithmetic in plain vector ops: int32 lanes, the 4 weight columns read with
        # stride 4 through a flat view of B (only the last index of an access may be a vector)
        flat = T.decl_buffer((64,), "int8", data=B.data, elem_offset=B.elem_offset)
        C[T.ramp(T.int32(0), 1, 16)] = (
            C.vload([0], dtype="int32x16")
            + T.broadcast(T.Cast("int32", A[0]), 16) * T.Cast("int32x16", flat[T.ramp(T.int32(0), 4, 16)])
            + T.broadcast(T.Cast("int32", A[1]), 16) * T.Cast("int32x16", flat[T.ramp(T.int32(1), 4, 16)])
            + T.broadcast(T.Cast("int32", A[2]), 16) * T.Cast("int32x16", flat[T.ramp(T.int32(2), 4, 16)])
            + T.broadcast(T.Cast("int32", A[3]), 16) * T.Cast("int32x16", flat[T.ramp(T.int32(3), 4, 16)])
        )


TensorIntrin.register(EMULATED_INTRIN, _desc, _impl_portable, override=True)

# (rows, 16-column groups), best first. The tile's int32 accumulators must stay under 1 KiB
# (mr * nv * 64 bytes < 1024, i.e. at most 15 zmm): LowerTVMBuiltin keeps only smaller
# allocations on the stack, a 4x4 tile (exactly 1 KiB) became a workspace alloc/free pair per
# tile. Within that, fill the 32 zmm registers (accumulators + weight vectors + a broadcast).
# Not timed (no VNNI machine here); bert-shaped extents (rows 128, 48/192 groups) take 4x3.
_TILES = ((4, 3), (6, 2), (3, 4), (7, 2), (5, 3), (4, 2), (2, 6), (8, 1), (2, 4), (2, 3), (4, 1), (3, 2), (2, 2),
          (1, 6), (1, 4), (1, 3), (3, 1), (2, 1), (1, 2), (1, 1))
MAX_TILE_BYTES = 1023  # LowerTVMBuiltin's stack limit (kMaxStackAlloca = 1024, strict)


class Int8MatmulVNNI(Int8MatmulAVX2):
    """The uint8 x packed int8 matmul of ``quantize/pack_vnni.py``, tensorized with ``vpdpbusd``."""

    intrin = INTRIN
    lanes = LANES
    group = QUAD
    x_dtype = "uint8"
    w_dtype = "int8"
    tiles = _TILES

    def is_target_available(self, target: Target) -> bool:
        return target_has_vnni(target)


class Int8MatmulVNNIPortable(Int8MatmulVNNI):
    """:class:`Int8MatmulVNNI`'s schedule with the dot product in portable vector ops (not in DEFAULT_RULES).

    Same kernel, layout, tiles and epilogue; only the tensorized 16x4 step is ordinary int32
    arithmetic, so hosts without VNNI (the AVX2 build boxes) can run the VNNI schedule and check
    its packing, K padding, compensation and tiling against numpy.
    """

    intrin = EMULATED_INTRIN

    def is_target_available(self, target: Target) -> bool:
        return target.kind.name == "llvm"


__all__ = ["EMULATED_INTRIN", "INTRIN", "Int8MatmulVNNI", "Int8MatmulVNNIPortable"]
