"""CPU rule for the packed bf16 matmul on AVX512-BF16: tensorized with ``vdpbf16ps``, fp32 accumulation.

The kernel is ``quantize/pack_bf16.py``'s: ``C[i, j] += f32(X[i, 2p + q]) * f32(W[j // 16, p, j % 16, q])``,
X and W bf16, C float32. Each ``16 x 2`` step becomes
``acc = vdpbf16ps(acc, broadcast(2 bf16 of X), 32 bf16 of W)``; the schedule is
:class:`Int8MatmulAVX2`'s (register tile over the whole K loop, parallel over
column panels, epilogue on the tile) with this layout and intrinsic.

Why the intrinsic goes through imported LLVM IR: ``llvm.x86.avx512bf16.dpbf16ps.512``
takes ``<32 x bfloat>`` operands, and TVM 0.27 cannot pass them. Its
``BF16ComputeLegalize`` widens every bf16 value (a ``call_llvm_pure_intrin``
argument included) to fp32 and ``BF16StorageLegalize`` turns the rest into
uint16, so the call gets ``<32 x float>`` or ``<32 x i16>`` and fails LLVM
verification; with both passes disabled the LLVM codegen segfaults on bf16
vectors. So the intrinsic calls a three-line LLVM IR function
(:data:`DPBF16_LL`: bitcast ``<32 x i16>`` to ``<32 x bfloat>``, call) that the
``pragma_import_llvm`` annotation links into the kernel's module, with the bf16
operands reinterpreted as uint16; LLVM inlines it (``alwaysinline``) into a
single ``vdpbf16ps``.

``vdpbf16ps`` flushes bf16 denormal inputs and fp32 denormal results to zero
and rounds to nearest even: within bf16 precision of the fp32 reference, not
bit-equal to the software path's fp32 multiply-adds.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.ir.expr import TensorLoad
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target import Target

from ..quantize.cpu_features import BF16_FEATURE
from ..quantize.pack_bf16 import LANES, PAIR
from .int8_matmul import Int8MatmulAVX2, match_packed

INTRIN = "autoglm_avx512bf16_dpbf16ps_16x2"
EMULATED_INTRIN = "autoglm_portable_dot_16x2_bf16f32"
DPBF16_FUNC = "autoglm_dpbf16ps_512"
# linkonce_odr: every kernel module that imports it keeps one copy, and duplicates merge
DPBF16_LL = f"""
define linkonce_odr <16 x float> @{DPBF16_FUNC}(<16 x float> %acc, <32 x i16> %a, <32 x i16> %b) #0 {{
  %abf = bitcast <32 x i16> %a to <32 x bfloat>
  %bbf = bitcast <32 x i16> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %abf, <32 x bfloat> %bbf)
  ret <16 x float> %r
}}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
attributes #0 = {{ alwaysinline nounwind }}
"""


@T.prim_func(s_tir=True)
def _desc(
    A: T.Buffer((2,), "uint16", offset_factor=1),
    B: T.Buffer((16, 2), "bfloat16", offset_factor=1),
    C: T.Buffer((16,), "float32", offset_factor=1, scope="global"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:2], B[0:16, 0:2])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.reinterpret("float32", T.Cast("uint32", A[vk]) << T.uint32(16)) * T.Cast("float32", B[vi, vk])


@T.prim_func(s_tir=True)
def _impl(
    A: T.Buffer((2,), "uint16", offset_factor=1),
    B: T.Buffer((16, 2), "bfloat16", offset_factor=1),
    C: T.Buffer((16,), "float32", offset_factor=1, scope="global"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:2], B[0:16, 0:2])
        T.writes(C[0:16])
        # the activation pair (bf16 bits) as one 32-bit value, broadcast to 16 lanes; the weight's
        # bf16 passed as its uint16 bits (a same-width reinterpret BF16ComputeLegalize leaves alone)
        C[T.ramp(T.int32(0), 1, 16)] = T.call_pure_extern(
            "float32x16",
            DPBF16_FUNC,
            C.vload([0], dtype="float32x16"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint16x2"), dtype="int32"), 16), dtype="uint16x32"),
            T.reinterpret(B.vload([0, 0], dtype="bfloat16x32"), dtype="uint16x32"),
        )


@T.prim_func(s_tir=True)
def _impl_portable(
    A: T.Buffer((2,), "uint16", offset_factor=1),
    B: T.Buffer((16, 2), "bfloat16", offset_factor=1),
    C: T.Buffer((16,), "float32", offset_factor=1, scope="global"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:2], B[0:16, 0:2])
        T.writes(C[0:16])
        flat = T.decl_buffer((32,), "bfloat16", data=B.data, elem_offset=B.elem_offset)
        C[T.ramp(T.int32(0), 1, 16)] = (
            C.vload([0], dtype="float32x16")
            + T.broadcast(T.reinterpret("float32", T.Cast("uint32", A[0]) << T.uint32(16)), 16)
            * T.Cast("float32x16", flat[T.ramp(T.int32(0), 2, 16)])
            + T.broadcast(T.reinterpret("float32", T.Cast("uint32", A[1]) << T.uint32(16)), 16)
            * T.Cast("float32x16", flat[T.ramp(T.int32(1), 2, 16)])
        )


TensorIntrin.register(INTRIN, _desc, _impl, override=True)
TensorIntrin.register(EMULATED_INTRIN, _desc, _impl_portable, override=True)

# (rows, 16-column groups): at most 15 zmm accumulators (the 1 KiB stack limit, see vnni_matmul).
# Not timed (no AVX512-BF16 machine here).
_TILES = ((4, 3), (6, 2), (3, 4), (7, 2), (5, 3), (4, 2), (2, 6), (8, 1), (2, 4), (2, 3), (4, 1), (3, 2), (2, 2),
          (1, 6), (1, 4), (1, 3), (3, 1), (2, 1), (1, 2), (1, 1))


def _bf16_bits_load(expr):
    """The uint16 load ``X[..]`` of ``reinterpret_f32(u32(X[..]) << 16)`` (pack_bf16.bf16_value), else None."""
    call = expr
    if not (isinstance(call, tvm.ir.expr.Call) and call.op.name == "tirx.reinterpret" and str(call.ty) == "float32"):
        return None
    shift = call.args[0]
    if not isinstance(shift, tirx.LShift):
        return None
    if not (isinstance(shift.b, tirx.IntImm) and int(shift.b) == 16):
        return None
    cast = shift.a
    if not (isinstance(cast, tirx.Cast) and str(cast.ty) == "uint32" and str(cast.value.ty) == "uint16"):
        return None
    return cast.value if isinstance(cast.value, TensorLoad) else None


class BF16MatmulAVX512(Int8MatmulAVX2):
    """The packed bf16 matmul of ``quantize/pack_bf16.py``, tensorized with ``vdpbf16ps``."""

    intrin = INTRIN
    lanes = LANES
    group = PAIR
    x_dtype = "uint16"  # bf16 bits (see pack_bf16.bf16_bits_te)
    w_dtype = "bfloat16"
    acc_dtype = "float32"
    tiles = _TILES

    def match(self, block) -> tuple | None:
        return match_packed(block, self.x_dtype, self.w_dtype, self.lanes, self.group, self.acc_dtype, x_operand=_bf16_bits_load)

    def is_target_available(self, target: Target) -> bool:
        if target.kind.name != "llvm":
            return False
        from tvm.target import codegen

        try:
            return bool(codegen.llvm_cpu_has_features([BF16_FEATURE], target))
        except Exception:  # pylint: disable=broad-except
            return False

    def _build(self, func, target: Target, attach_epilogue: bool):
        sch = super()._build(func, target, attach_epilogue)
        if sch is not None and self.intrin == INTRIN:
            # link the dpbf16ps wrapper once per kernel: on its first loop, which lowers to one AttrStmt
            first = sch.get_child_blocks(sch.get_sblock("root"))[0]
            sch.annotate(sch.get_loops(first)[0], "pragma_import_llvm", DPBF16_LL)
        return sch


class BF16MatmulPortable(BF16MatmulAVX512):
    """:class:`BF16MatmulAVX512`'s schedule with the dot product in fp32 vector ops (not in DEFAULT_RULES):
    hosts without AVX512-BF16 run it to check the layout, tiling and epilogue."""

    intrin = EMULATED_INTRIN

    def is_target_available(self, target: Target) -> bool:
        return target.kind.name == "llvm"


__all__ = ["BF16MatmulAVX512", "BF16MatmulPortable", "DPBF16_LL", "EMULATED_INTRIN", "INTRIN"]
