"""bf16 matmul for AVX512-BF16: weights packed for ``vdpbf16ps``, fp32 accumulation.

``--quantize bf16`` (``mixed_precision.py``) makes every matmul
``matmul(astype(x, bf16), astype(W, bf16), out_dtype=f32)``; scheduled as a generic
contraction, each bf16 operand is widened to fp32 in software and the arithmetic
is fp32 (on Zen 4 that was slower than the fp32 build). ``vdpbf16ps`` multiplies
32 bf16 pairs and adds each adjacent pair of products into one of 16 fp32
lanes: 32 MACs per instruction, twice an fp32 FMA's 16 on zmm, and it reads
bf16 directly.

On targets with ``avx512bf16`` each constant weight ``W[K, N]`` (N a multiple
of 16, K even) is packed once, at compile time, as bf16 ``[N/16, K/2, 16, 2]``:
for one pair of reduction steps, the 16 output columns' two weights are 32
adjacent bf16, one ``vdpbf16ps`` operand, while the activation pair is
broadcast. The matmul becomes a TE compute on that layout
(:func:`packed_bf16_matmul_te`), which fuses with its epilogue like any
matmul, and ``schedule_rules/bf16_matmul.py`` tensorizes it. Other matmuls
(activation x activation, weights of other shapes) are left as they were.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.ir.expr import Constant

LANES = 16  # fp32 lanes of one zmm register: output columns per vdpbf16ps
PAIR = 2  # reduction steps summed into one lane by vdpbf16ps


def packable(k: int, n: int) -> bool:
    """Whether a ``[K, N]`` weight takes the layout: K even (a pair per step, no padding) and more than one
    pair (a unit reduction loop is normalized away), N whole registers of columns."""
    return k % PAIR == 0 and k > PAIR and n % LANES == 0 and n > 0


def pack_weight(w: np.ndarray) -> np.ndarray:
    """float ``W[K, N]`` -> ``[N/16, K/2, 16, 2]`` (same dtype) with ``P[j, p, l, q] = W[2p + q, 16j + l]``.

    Reordered in float32: numpy has no bf16, the graph casts the packed constant and FoldConstant
    folds it (a reorder commutes with the elementwise rounding).
    """
    k, n = w.shape
    if not packable(k, n):
        raise ValueError(f"weight [{k}, {n}] does not take the bf16 layout: need K even, K > {PAIR}, N % {LANES} == 0")
    return np.ascontiguousarray(w.reshape(k // PAIR, PAIR, n // LANES, LANES).transpose(2, 0, 3, 1))


def unpack_weight(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_weight` (tests, debugging)."""
    blocks, pairs, lanes, pair = packed.shape
    return np.ascontiguousarray(packed.transpose(1, 3, 0, 2).reshape(pairs * pair, blocks * lanes))


def bf16_bits_te(x: te.Tensor) -> te.Tensor:
    """``x`` as the uint16 bits of its bf16 value: float32 rounded to nearest even (NaN -> quiet NaN), bf16 as is.

    uint16, not bfloat16: TVM's ``BF16ComputeLegalize`` stores a kernel's *intermediate* bf16
    buffers as float32, and the intrinsic needs the activation's bf16 bits in memory. A bf16 input
    goes through float32 too (exact, and its rounding is then the identity): a bf16 producer that
    FuseOps put into the same kernel is a float32 value after legalization, which a bf16 -> uint16
    reinterpret would turn into an invalid LLVM bitcast.
    """
    u32 = lambda v: tirx.const(v, "uint32")  # noqa: E731

    def bits(*i):
        value = x[i] if x.dtype == "float32" else x[i].astype("float32")
        b = tirx.reinterpret("uint32", value)
        rounded = tirx.Cast("uint16", (b + u32(0x7FFF) + ((b >> u32(16)) & u32(1))) >> u32(16))
        return tirx.Select(value != value, tirx.const(0x7FC0, "uint16"), rounded)

    return te.compute(x.shape, bits, name="bf16_bits")


def bf16_value(bits):
    """float32 value of bf16 ``bits`` (uint16): the bits in the high half of a float32."""
    return tirx.reinterpret("float32", tirx.Cast("uint32", bits) << tirx.const(16, "uint32"))


def packed_bf16_matmul_te(x: te.Tensor, wp: te.Tensor) -> te.Tensor:
    """float32 ``out[..., n] = sum_k bf16(x[..., k]) * f32(W[k, n])``, W bf16 read from its packed form.

    ``x`` is float32 or bf16, turned into bf16 bits in the kernel (:func:`bf16_bits_te`). Two
    reduction axes (pair, step in the pair) so the scheduled inner block is
    ``C[16] += A[2] * B[16, 2]``, the intrinsic's description.
    """
    xb = bf16_bits_te(x)
    *lead, _k = (int(d) for d in x.shape)
    blocks, pairs, lanes, pair = (int(d) for d in wp.shape)
    ko = te.reduce_axis((0, pairs), name="ko")
    ki = te.reduce_axis((0, pair), name="ki")
    return te.compute(
        (*lead, blocks * lanes),
        lambda *idx: te.sum(
            bf16_value(xb[(*idx[:-1], ko * pair + ki)]) * wp[idx[-1] // lanes, ko, idx[-1] % lanes, ki].astype("float32"),
            axis=[ko, ki],
        ),
        name="bf16_packed_matmul",
    )


def _op(expr, name: str) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


def _weight(expr, lookup) -> np.ndarray | None:
    """The float32 2-D constant behind ``astype(W, bf16)`` (also through a 2-D transpose), else None.

    ``lookup``: the mutator's ``lookup_binding`` (ToMixedPrecision binds each cast to its own var).
    """
    expr = _bound(expr, lookup)
    if not (_op(expr, "relax.astype") and str(expr.attrs.dtype) == "bfloat16"):
        return None
    inner = _bound(expr.args[0], lookup)
    transposed = False
    if _op(inner, "relax.permute_dims"):
        axes = inner.attrs.axes
        if axes is not None and [int(a) for a in axes] != [1, 0]:
            return None
        inner, transposed = _bound(inner.args[0], lookup), True
    if not isinstance(inner, Constant):
        return None
    data = inner.value.numpy()
    if data.ndim != 2 or data.dtype != np.float32:
        return None
    return np.ascontiguousarray(data.T) if transposed else data


def _bound(expr, lookup):
    """The value a dataflow var is bound to (the expression itself otherwise)."""
    while isinstance(expr, relax.Var):
        value = lookup(expr)
        if value is None:
            return expr
        expr = value
    return expr


@relax.expr_functor.mutator
class _PackBF16(relax.PyExprMutator):
    """``matmul(x_bf16, astype(W, bf16), out_dtype=f32)`` with a packable constant W -> the packed TE kernel."""

    def __init__(self, mod):
        super().__init__(mod)
        self.packed = 0

    def visit_call_(self, call):  # noqa: D102 - visitor hook
        call = super().visit_call_(call)
        if not _op(call, "relax.matmul") or str(call.attrs.out_dtype) != "float32":
            return call
        x_type = call.args[0].ty
        if not isinstance(x_type, relax.TensorType) or x_type.dtype != "bfloat16" or x_type.ndim < 1:
            return call
        w = _weight(call.args[1], self.lookup_binding)
        shape = x_type.shape.values if x_type.shape is not None else None
        if w is None or shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
            return call  # symbolic activations: the generic schedule handles those
        if int(shape[-1]) != w.shape[0] or not packable(*w.shape):
            return call
        packed = self.builder_.emit(relax.op.astype(relax.const(pack_weight(w), "float32"), "bfloat16"))
        self.packed += 1
        x = call.args[0]
        cast = _bound(x, self.lookup_binding)
        if _op(cast, "relax.astype") and cast.args[0].ty.dtype == "float32":
            x = cast.args[0]  # the kernel rounds to bf16 itself (same rounding as TVM's cast)
        return self.builder_.call_te(packed_bf16_matmul_te, x, packed, primfunc_name_hint="bf16_packed_matmul")


def pack_bf16_matmuls(mod: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    """Every packable bf16 x constant-weight matmul of the module's Relax functions as the packed kernel; returns
    (module, number of matmuls packed). For targets with AVX512-BF16 only (``mixed_precision`` asks)."""
    mutator = _PackBF16(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    out = mutator.builder_.get()
    return tvm.IRModule(dict(out.functions.items()), attrs=mod.attrs), mutator.packed
