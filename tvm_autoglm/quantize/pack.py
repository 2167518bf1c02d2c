"""int8 matmul on AVX2 without VNNI: int16 operands, weights pre-packed for ``vpmaddwd``.

On AVX2 an int8 x int8 -> int32 matmul has no cheap instruction: LLVM widens
both operands to int32 and multiplies with ``vpmulld`` (8 MACs per
instruction, slower than an fp32 FMA), which is why the plain int8 build ran
no faster than fp32. ``vpmaddwd`` multiplies 16 int16 pairs and adds adjacent
products into 8 int32 lanes: 16 exact MACs per instruction (int8-range values
cannot overflow it; ``vpmaddubsw``'s u8 x s8 -> saturating int16 would).

So on CPU targets with AVX2 the quantized activation is stored as int16
(values still in [-127, 127]) and each constant int8 weight ``W_q[K, N]`` is
packed once, at compile time, as int16 ``[N/8, K/2, 8, 2]``: for one pair of
reduction steps, the 8 output columns' two weights are 16 adjacent int16 --
exactly one ``vpmaddwd`` operand. The matmul becomes a TE compute reading that
layout, which fuses with its dequantize epilogue like any matmul, and the CPU
rule ``schedule_rules/int8_matmul.py`` tensorizes it with the intrinsic.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

LANES = 8  # int32 lanes of one AVX2 register: output columns per vpmaddwd
PAIR = 2  # reduction steps summed by one vpmaddwd lane


def packable(k: int, n: int) -> bool:
    """Whether a ``[K, N]`` weight fits the packed layout without padding."""
    return k % PAIR == 0 and n % LANES == 0


def pack_weight(wq: np.ndarray) -> np.ndarray:
    """int8 ``W_q[K, N]`` -> int16 ``[N/8, K/2, 8, 2]`` with ``P[j, p, l, q] = W_q[2p + q, 8j + l]``."""
    k, n = wq.shape
    if not packable(k, n):
        raise ValueError(f"weight [{k}, {n}] does not pack: need K % {PAIR} == 0 and N % {LANES} == 0")
    return np.ascontiguousarray(wq.astype(np.int16).reshape(k // PAIR, PAIR, n // LANES, LANES).transpose(2, 0, 3, 1))


def unpack_weight(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_weight` (tests, debugging)."""
    blocks, pairs, lanes, pair = packed.shape
    return np.ascontiguousarray(packed.transpose(1, 3, 0, 2).reshape(pairs * pair, blocks * lanes))


def packed_matmul_te(x: te.Tensor, wp: te.Tensor) -> te.Tensor:
    """``out[..., m, n] = sum_k int32(x[..., m, k]) * int32(W[k, n])`` with W read from its packed form.

    The reduction is written as two axes (pair, step within the pair) so the
    scheduled inner block is ``C[8] += A[2] * B[8, 2]`` with no index
    arithmetic, which is what the tensor intrinsic's description matches.
    Leading (batch) axes are kept rather than reshaped away: a reshape between
    the matmul and its dequantize epilogue would stop FuseOps from fusing them.
    """
    *lead, _k = (int(d) for d in x.shape)
    blocks, pairs, lanes, pair = (int(d) for d in wp.shape)
    ko = te.reduce_axis((0, pairs), name="ko")
    ki = te.reduce_axis((0, pair), name="ki")
    return te.compute(
        (*lead, blocks * lanes),
        lambda *idx: te.sum(
            x[(*idx[:-1], ko * pair + ki)].astype("int32") * wp[idx[-1] // lanes, ko, idx[-1] % lanes, ki].astype("int32"),
            axis=[ko, ki],
        ),
        name="int16_packed_matmul",
    )


def quantized_packed_matmul_te(x: te.Tensor, sx: te.Tensor, wp: te.Tensor) -> te.Tensor:
    """float ``x`` quantized with the scalar scale ``sx`` to int16, times the packed weight: int32 ``[..., N]``.

    The quantize step lives in the matmul's kernel (one kernel per site, not
    two) and rounds with ``nearbyint`` (half to even, like ``np.rint`` on the
    weights): it vectorizes to one ``vroundps``, where ``round`` (half away
    from zero) has no AVX instruction and LLVM scalarizes it into ``roundf``
    calls. The two differ only on exact .5 ties.
    """
    xq = te.compute(
        x.shape,
        lambda *idx: tirx.Cast("int16", tirx.max(tirx.min(tirx.nearbyint(x[idx] / sx[()]), tirx.const(127.0, "float32")), tirx.const(-127.0, "float32"))),
        name="quantize_int16",
    )
    return packed_matmul_te(xq, wp)


def target_has_avx2(target) -> bool:
    """True for LLVM targets whose CPU has AVX2 (where ``vpmaddwd`` on ymm exists)."""
    if target is None or target.kind.name != "llvm":
        return False
    try:
        from tvm.target import codegen

        return bool(codegen.llvm_cpu_has_features(["avx2"], target))
    except Exception:  # pylint: disable=broad-except
        return False

