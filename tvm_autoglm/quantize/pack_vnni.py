"""int8 matmul for AVX-512 VNNI: uint8 activations x int8 weights packed for ``vpdpbusd``.

``vpdpbusd`` multiplies 64 *unsigned* bytes by 64 *signed* bytes and adds each
group of 4 products into one of 16 int32 lanes: 64 exact MACs per instruction,
four times AVX2's ``vpmaddwd`` on ymm. Our activations are *signed* int8
(symmetric, in [-127, 127], see ``int8.py``), so they are shifted by +128 into
uint8 [1, 255] and the shift is taken back out per output column:

    sum_k (x[k] + 128) * W[k, n] = sum_k x[k] * W[k, n] + 128 * sum_k W[k, n]

``128 * sum_k W[k, n]`` depends on the weight only, so it is computed once at
compile time (:func:`compensation`) and subtracted in the kernel's epilogue.
Every term is an exact int32 (|x + 128| <= 255, |W| <= 127: a product is at
most 32385 and no 4-product sum saturates, unlike ``vpmaddubsw``'s int16).

The int8 weight ``W_q[K, N]`` is packed once as ``[N/16, ceil(K/4), 16, 4]``:
for one group of 4 reduction steps, the 16 output columns' 4 weights are 64
adjacent bytes, exactly one ``vpdpbusd`` operand. K that is not a multiple of 4
is padded with zero weights; the padded activation bytes are 128 (the shifted
zero) so the padded steps add nothing either way. N must be a multiple of 16
(one register of columns); other weights keep the AVX2 or plain int8 kernel.
The schedule rule is ``schedule_rules/vnni_matmul.py``.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

LANES = 16  # int32 lanes of one zmm register: output columns per vpdpbusd
QUAD = 4  # reduction steps summed into one lane by vpdpbusd
SHIFT = 128  # signed int8 activation + SHIFT = the uint8 vpdpbusd reads
VNNI_FEATURES = ("avx512vnni", "avx512bw")


def packable(k: int, n: int) -> bool:
    """Whether a ``[K, N]`` weight takes the VNNI layout (K is padded; N must fill whole registers).

    K <= 4 is one group: its reduction loop has extent 1, which ``normalize_prim_func`` drops, and
    the rule's loop structure would not match; such a tiny matmul keeps the other kernels.
    """
    return k > QUAD and n % LANES == 0 and n > 0


def padded_k(k: int) -> int:
    return -(-k // QUAD) * QUAD


def pack_weight(wq: np.ndarray) -> np.ndarray:
    """int8 ``W_q[K, N]`` -> int8 ``[N/16, ceil(K/4), 16, 4]``, ``P[j, p, l, q] = W_q[4p + q, 16j + l]`` (0 past K)."""
    k, n = wq.shape
    if wq.dtype != np.int8:
        raise ValueError(f"VNNI packing takes an int8 weight, got {wq.dtype}")
    if not packable(k, n):
        raise ValueError(f"weight [{k}, {n}] does not take the VNNI layout: need K > {QUAD} and N % {LANES} == 0")
    kp = padded_k(k)
    padded = np.zeros((kp, n), np.int8)
    padded[:k] = wq
    return np.ascontiguousarray(padded.reshape(kp // QUAD, QUAD, n // LANES, LANES).transpose(2, 0, 3, 1))


def unpack_weight(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_weight` (drops the K padding; tests, debugging)."""
    blocks, quads, lanes, quad = packed.shape
    return np.ascontiguousarray(packed.transpose(1, 3, 0, 2).reshape(quads * quad, blocks * lanes)[:k])


def compensation(wq: np.ndarray) -> np.ndarray:
    """int32 ``[N]``: ``SHIFT * sum_k W_q[k, n]``, what the uint8 shift adds to column n (exact in int32)."""
    return (SHIFT * wq.astype(np.int64).sum(axis=0)).astype(np.int32)


def reference(xq: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """What the kernel computes, in int64 numpy through the same shift, padding and compensation.

    Equals ``xq @ wq`` exactly; tests compare both sides on hosts without VNNI.
    """
    k = wq.shape[0]
    kp = padded_k(k)
    xu = np.full((*xq.shape[:-1], kp), SHIFT, np.int64)
    xu[..., :k] = xq.astype(np.int64) + SHIFT
    w = unpack_weight(pack_weight(wq), kp).astype(np.int64)  # the packed weight, padding rows included
    return xu @ w - compensation(wq).astype(np.int64)


def quantize_u8_te(x: te.Tensor, sx: te.Tensor, kp: int) -> te.Tensor:
    """float ``x[..., K]`` -> uint8 ``[..., kp]``: ``clip(nearbyint(x / sx), -127, 127) + 128``, 128 past K.

    ``nearbyint`` (half to even) for the same reason as ``pack.quantized_packed_matmul_te``:
    one ``vroundps`` rather than scalar ``roundf`` calls.
    """
    *lead, k = (int(d) for d in x.shape)
    lo, hi, shift = (tirx.const(v, "float32") for v in (-127.0, 127.0, float(SHIFT)))

    def value(*idx):
        # the index is clamped so the padded steps never read past x (their value is replaced below)
        col = idx[-1] if kp == k else tirx.min(idx[-1], k - 1)
        grid = tirx.max(tirx.min(tirx.nearbyint(x[(*idx[:-1], col)] / sx[()]), hi), lo)
        shifted = tirx.Cast("uint8", grid + shift)
        if kp == k:
            return shifted
        return tirx.if_then_else(idx[-1] < k, shifted, tirx.const(SHIFT, "uint8"))

    return te.compute((*lead, kp), value, name="quantize_u8")


def vnni_matmul_te(xu: te.Tensor, wp: te.Tensor, comp: te.Tensor) -> te.Tensor:
    """int32 ``out[..., n] = sum_k int32(xu[..., k]) * int32(W[k, n]) - comp[n]``, W read from its packed form.

    The reduction is two axes (group of 4, step within it) so the scheduled inner
    block is ``C[16] += A[4] * B[16, 4]``, the intrinsic's description; the
    compensation is a separate elementwise stage that the rule fuses into the
    dequantize epilogue. Leading (batch) axes are kept: a reshape between matmul
    and epilogue would stop FuseOps from fusing them.
    """
    *lead, _kp = (int(d) for d in xu.shape)
    blocks, quads, lanes, quad = (int(d) for d in wp.shape)
    ko = te.reduce_axis((0, quads), name="ko")
    ki = te.reduce_axis((0, quad), name="ki")
    acc = te.compute(
        (*lead, blocks * lanes),
        lambda *idx: te.sum(
            xu[(*idx[:-1], ko * quad + ki)].astype("int32") * wp[idx[-1] // lanes, ko, idx[-1] % lanes, ki].astype("int32"),
            axis=[ko, ki],
        ),
        name="vnni_u8s8_matmul",
    )
    return te.compute(acc.shape, lambda *idx: acc[idx] - comp[idx[-1]], name="vnni_compensate")


def quantized_vnni_matmul_te(x: te.Tensor, sx: te.Tensor, wp: te.Tensor, comp: te.Tensor) -> te.Tensor:
    """float ``x`` quantized with the scalar scale ``sx``, shifted to uint8, times the packed weight: int32 ``[..., N]``."""
    kp = int(wp.shape[1]) * int(wp.shape[3])
    return vnni_matmul_te(quantize_u8_te(x, sx, kp), wp, comp)


def target_has_vnni(target) -> bool:
    """True for LLVM targets whose CPU has AVX-512 VNNI (``vpdpbusd`` on zmm) and AVX-512 BW."""
    if target is None or target.kind.name != "llvm":
        return False
    try:
        from tvm.target import codegen

        return bool(codegen.llvm_cpu_has_features(list(VNNI_FEATURES), target))
    except Exception:  # pylint: disable=broad-except
        return False
