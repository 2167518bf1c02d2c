"""The weight-only int8 matmul kernel: ``out[r, n] = s[n] * sum_k x[r, k] * float(Wq[k, n])``.

Decode is memory-bound (a 1-row matmul streams its whole weight per token), so the
kernel reads int8 weights (a quarter of fp32's bytes) and converts them to fp32 in
registers: one ``vpmovsxbd`` (int8 -> int32) and one ``vcvtdq2ps`` per 8 weights
(AVX2; 16 with AVX-512), then the FMA. No fp32 copy of the weight is ever made.

Weight layout: panels ``Wp[N/T, K, T]`` (the weight's columns cut into panels of T,
the last one zero-padded), so one panel is one contiguous stream of ``K * T`` bytes:
the hardware prefetcher sees one sequential read per parallel task, not K reads
strided by N. T is 8 vector lanes (64 on AVX2, 128 with AVX-512): eight accumulators
per row, enough independent FMA chains to hide the FMA latency, and few enough
registers (8 accumulators + converts + the broadcast x) to stay out of memory.

Scales are per output channel (``s[n] = max_k |W[k, n]| / 127``), applied once per
output after the reduction. Per-group scales (one per G rows of K) would add a multiply
per weight, or a second accumulator level, to fix an error that per-channel int8 does not
have at these sizes: the logit cosine of every zoo decoder stays >= 0.999 all-int8
(tests/quantize/test_weight_only.py), so groups would cost bandwidth-bound time for nothing.

Rows (prefill's prompt chunk) loop inside each panel task: the panel (``K * T`` bytes,
48 KiB for K = 768) stays in L2 while every row reads it, so DRAM still sees each
weight byte once per call. There the convert, not the load, is the bottleneck, so the
tile is 4 rows x 2 vectors (8 accumulators): each converted weight vector feeds 4 FMAs.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import s_tir, te, tirx

#: SIMD vectors per panel: the number of independent accumulators per row.
ACCUMULATORS = 8
#: rows per register tile when a call has several (prefill): the largest that divides the row count.
#: 4 rows x 2 vectors = 8 accumulators; each int8 -> fp32 convert then feeds 4 FMAs instead of 1.
ROW_TILES = (4, 3, 2, 1)


def panel_width(target) -> int:
    """Columns per panel: ACCUMULATORS vectors of fp32 on ``target`` (64 on AVX2, 128 on AVX-512)."""
    from ..schedule_rules._common import vector_lanes

    return ACCUMULATORS * vector_lanes(target, "float32")


def quantize_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fp32 ``W[K, N]`` -> (int8 ``Wq[K, N]``, fp32 ``s[N]``), symmetric per output channel (all-zero column: scale 1)."""
    amax = np.abs(w).max(axis=0).astype(np.float32)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    wq = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return wq, scale


def dequantize(wq: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The weight the kernel multiplies by, in float64 (tests' reference)."""
    return wq.astype(np.float64) * scale.astype(np.float64)[None, :]


def pack_panels(wq: np.ndarray, scale: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``Wq[K, N]``, ``s[N]`` -> panels ``int8[ceil(N/width), K, width]`` and ``s`` padded to the panels (zeros)."""
    k, n = wq.shape
    panels = -(-n // width)
    padded = np.zeros((k, panels * width), np.int8)
    padded[:, :n] = wq
    packed = np.ascontiguousarray(padded.reshape(k, panels, width).transpose(1, 0, 2))
    scale_padded = np.zeros(panels * width, np.float32)
    scale_padded[:n] = scale
    return packed, scale_padded


def unpack_panels(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack_panels` for the weight (tests)."""
    panels, k, width = packed.shape
    return np.ascontiguousarray(packed.transpose(1, 0, 2).reshape(k, panels * width)[:, :n])


def wint8_matmul_func(rows: int, k: int, panels: int, width: int) -> tirx.PrimFunc:
    """Scheduled PrimFunc ``(x f32[rows, K], Wp i8[panels, K, width], s f32[panels*width]) -> f32[rows, panels*width]``.

    Loop nest: ``parallel panel { for row { acc[width] = 0; for k { acc += x[row, k] * float(Wp[panel, k, :]) }
    out[row, panel] = acc * s } }`` with the width axis vectorized (the ``width / lanes`` vectors are the
    accumulators). Marked ``tirx.is_scheduled`` and ``op_pattern`` opaque: the default rules and FuseOps
    leave it as is.
    """
    x = te.placeholder((rows, k), "float32", name="x")
    wp = te.placeholder((panels, k, width), "int8", name="wp")
    s = te.placeholder((panels * width,), "float32", name="scale")
    red = te.reduce_axis((0, k), name="k")
    acc = te.compute((rows, panels * width),
                     lambda r, n: te.sum(x[r, red] * wp[n // width, red, n % width].astype("float32"), axis=red), name="acc")
    out = te.compute((rows, panels * width), lambda r, n: acc[r, n] * s[n], name="dequant")
    func = te.create_prim_func([x, wp, s, out])
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    block = sch.get_sblock("acc")
    epilogue = sch.get_sblock("dequant")
    r, n, kk = sch.get_loops(block)
    row_tile = next(t for t in ROW_TILES if rows % t == 0)
    if row_tile == 1:  # decode: one row, the whole panel's accumulators
        no, ni = sch.split(n, [panels, width])
        sch.reorder(no, r, kk, ni)
        anchor = r
    else:  # prefill: row_tile rows x one 2-vector column strip, each converted weight reused by row_tile FMAs
        strip = width // ACCUMULATORS * 2
        no, nc, ni = sch.split(n, [panels, width // strip, strip])
        ro, ri = sch.split(r, [rows // row_tile, row_tile])
        sch.reorder(no, nc, ro, kk, ri, ni)
        sch.unroll(ri)
        anchor = ro
    sch.parallel(no)
    sch.reverse_compute_at(epilogue, anchor)
    sch.set_scope(block, 0, "global")  # a stack tile (< 1 KiB), which LLVM keeps in registers
    sch.vectorize(ni)  # before decompose_reduction: vectorize needs the block to still be a reduction
    sch.decompose_reduction(block, kk)
    init = sch.get_sblock("acc_init")
    sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(epilogue)[-1])
    func = sch.mod["main"].without_attr("global_symbol")  # te names it "main"; add_func's name is its symbol
    return func.with_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8,
                                      "autoglm.kernel": "wint8_matmul"})
