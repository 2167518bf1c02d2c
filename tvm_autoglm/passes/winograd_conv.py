"""3x3 stride-1 convolutions as Winograd F(2x2, 3x3): 2.25x fewer multiplies (O3, CPU).

A direct 3x3 convolution does 9 multiply-adds per input channel per output
pixel. Winograd's minimal filtering algorithm computes each 2x2 block of
outputs from a 4x4 input tile with 16 multiply-adds per channel instead of
36, after linear transforms of the tile and of the filter whose coefficients
are 0 and +-1 (input, output) or +-1/2 (filter, done once at compile time on
the constant weight). The conv then becomes three kernels:

1. input transform: ``V[e, p, c]`` for the 16 positions ``e`` of each 4x4
   tile ``p`` (adds only, channels vectorized);
2. 16 independent GEMMs ``M[e, p, k] = sum_c V[e, p, c] * U[e, c, k]``: the
   contraction our Matmul rule schedules like any batched matmul, its weight
   pre-packed as ``[e, K / lanes, C, lanes]``;
3. output transform: each 2x2 output block from the 4x4 ``M`` values of its
   tile (adds only), with the conv's bias/ReLU/residual epilogue fused after
   it by FuseOps.

The transforms are written without ``Select``: the two nonzero taps of each
row of the transform matrices are index arithmetic on the row number, so the
vectorized channel loop does 4 loads per ``V`` element and 9 per output.
The rows of ``B^T`` are scaled (last row negated) against the textbook
matrices, compensated in ``A^T``; ``U`` is unchanged, so the product is the
same convolution. Rounding differs from the direct conv by a few ulps of the
transformed values (fp32 only: fp16/int8 convs are left alone).

Measured on resnet50 (2-core Zen 3, benchmarks/RESULTS.md "resnet50, session 7"):
the 56x56, 28x28 and 14x14 layers take 0.80x, 0.67x and 0.63x the time of the
direct conv (transforms included) and the model 6-11% less; the 7x7 layers gain
nothing (see :func:`worth_it`).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx, topi

from ._util import mutate_graph_functions
from .pack_conv_weights import _ints, _lanes, match_constant_nhwc_conv
from .registry import register_pass
from .tally import current

#: Filter transform of F(2x2, 3x3) (Lavin & Gray 2016).
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
#: Input transform B^T with its last row negated (d3 - d1); see the module docstring.
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]], dtype=np.float64)
#: Output transform A^T with the matching last column negated.
AT = np.array([[1, 1, 1, 0], [0, 1, -1, 1]], dtype=np.float64)


def transformed_weight(hwio: np.ndarray, lanes: int) -> np.ndarray:
    """HWIO 3x3 weight -> ``U`` packed as ``[16, K / lanes, C, lanes]`` (float64 math, stored in its dtype)."""
    kh, kw, c, k = hwio.shape
    assert (kh, kw) == (3, 3)
    u = np.einsum("ai,ijck,bj->abck", G, hwio.astype(np.float64), G)  # [4, 4, C, K]
    u = u.reshape(16, c, k // lanes, lanes).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(u.astype(hwio.dtype))


def _tap(a):
    """Row ``a`` of BT as ``d[u] + sign * d[v]``: u = (0, 2, 2, 3), v = (2, 1, 1, 1), sign = (-1, 1, -1, -1)."""
    is_one = tirx.floormod(a, 2) * (1 - tirx.floordiv(a, 2))  # 1 for a == 1, else 0
    u = a + is_one
    v = 2 - tirx.min(a, 1)
    sign = is_one * 2 - 1  # only row 1 adds (d2 + d1); rows 0, 2, 3 subtract
    return u, v, sign


def padded_tile_count(tiles: int) -> int:
    """Tiles rounded up to a multiple of 4: the GEMM's row count, so its register tile can be 4 rows x 2 vectors.

    14x14 outputs have 49 tiles, whose only divisors give a 7 x 1-vector tile (7 FMAs
    per 8 loads); 52 rows of which 3 are zero cost 6% more multiplies and get the
    4 x 2 tile.
    """
    return -(-tiles // 4) * 4


def input_transform_te(data):
    """NHWC data -> ``V[e, p, c]``: the 16 transformed values of every 4x4 input tile (stride 2, padding 1).

    Tiles are numbered image by image, row by row: ``p = (n * th + ty) * tw + tx``.
    The padding rows past the last tile (see :func:`padded_tile_count`) read
    zero rows below the last image.
    """
    batch, h, w, c = (int(d) for d in data.shape)
    th, tw = (h + 1) // 2, (w + 1) // 2
    per_image = th * tw
    rows = padded_tile_count(batch * per_image)
    last_ty = (rows - 1 - (batch - 1) * per_image) // tw
    padded = topi.nn.pad(data, [0, 1, 1, 0], [0, 2 * last_ty + 3 - h, 2 * tw + 1 - w, 0], name="pad_temp")

    def value(e, p, ch):
        a, b = tirx.floordiv(e, 4), tirx.floormod(e, 4)
        n = tirx.min(tirx.floordiv(p, per_image), batch - 1)
        q = p - n * per_image
        ty, tx = tirx.floordiv(q, tw), tirx.floormod(q, tw)
        ua, va, sa = _tap(a)
        ub, vb, sb = _tap(b)
        sa, sb = sa.astype(data.dtype), sb.astype(data.dtype)

        def d(i, j):
            return padded[n, 2 * ty + i, 2 * tx + j, ch]

        return (d(ua, ub) + sb * d(ua, vb)) + sa * (d(va, ub) + sb * d(va, vb))

    return te.compute((16, rows, c), value, name="winograd_input")


def batched_gemm_te(tiles, ufilter, out_dtype):
    """``M[e, p, k] = sum_c V[e, p, c] * U[e, c, k]`` with ``U`` packed ``[16, K / lanes, C, lanes]``."""
    positions, ntiles, c = (int(d) for d in tiles.shape)
    _, blocks, _, lanes = (int(d) for d in ufilter.shape)
    rc = te.reduce_axis((0, c), name="rc")
    return te.compute(
        (positions, ntiles, blocks * lanes),
        lambda e, p, f: te.sum(
            tiles[e, p, rc].astype(out_dtype) * ufilter[e, f // lanes, rc, f % lanes].astype(out_dtype), axis=rc
        ),
        name="winograd_gemm",
    )


def output_transform_te(prod, batch: int, height: int, width: int):
    """``M`` -> NHWC output: each 2x2 output block from its tile's 16 values (A^T M A)."""
    _, _, k = (int(d) for d in prod.shape)
    th, tw = (height + 1) // 2, (width + 1) // 2
    dtype = prod.dtype

    def pixel(n, y, x, f):
        i, j = tirx.floormod(y, 2), tirx.floormod(x, 2)
        p = (n * th + tirx.floordiv(y, 2)) * tw + tirx.floordiv(x, 2)
        # Row i of A^T: taps 2i (coefficient 1 - 2i), 1 and 2 + i (coefficient 1).
        taps_y = ((2 * i, (1 - 2 * i).astype(dtype)), (1, None), (2 + i, None))
        taps_x = ((2 * j, (1 - 2 * j).astype(dtype)), (1, None), (2 + j, None))
        total = None
        for ra, ca in taps_y:
            line = None
            for cb, cc in taps_x:
                term = prod[ra * 4 + cb, p, f]
                term = term * cc if cc is not None else term
                line = term if line is None else line + term
            line = line * ca if ca is not None else line
            total = line if total is None else total + line
        return total

    return te.compute((batch, height, width, k), pixel, name="winograd_output")


def worth_it(height: int, width: int, in_channels: int, out_channels: int) -> bool:
    """At least 36 output tiles per image: below that the GEMMs have too few rows to pay for their weight.

    The transformed weight is 16/9 the size of the 3x3 one and every call streams it
    from memory. resnet50's 7x7 layers (16 tiles, 16.8 MB of transformed weight)
    ran 3.85 ms as Winograd against 3.84 ms direct (2 calls); the 14x14 ones (49
    tiles) 4.93 against 7.81 ms (5 calls). Measured at batch 1 only, so the count is
    per image: a batch gives the direct conv more pixels per weight load too.
    """
    return ((height + 1) // 2) * ((width + 1) // 2) >= 36


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod, lanes: int):
        super().__init__(mod)
        self.lanes = lanes
        self.rewritten = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        conv = match_constant_nhwc_conv(call)
        if conv is None or {conv.data_dtype, conv.out_dtype, str(conv.hwio.dtype)} != {"float32"}:
            return call
        attrs = call.attrs
        if _ints(attrs.strides) != [1, 1] or _ints(attrs.dilation) != [1, 1] or _ints(attrs.padding) != [1, 1, 1, 1]:
            return call
        hwio, (n, h, w, c) = conv.hwio, conv.data_shape
        if hwio.shape[:2] != (3, 3) or hwio.shape[3] % self.lanes or not worth_it(h, w, c, hwio.shape[3]):
            return call
        ufilter = relax.const(transformed_weight(hwio, self.lanes))
        self.rewritten += 1
        tiles = self.builder_.emit_te(input_transform_te, call.args[0], primfunc_name_hint="winograd_input")
        prod = self.builder_.emit_te(batched_gemm_te, tiles, ufilter, "float32", primfunc_name_hint="winograd_gemm")
        return self.builder_.call_te(output_transform_te, prod, n, h, w, primfunc_name_hint="winograd_output")


@tvm.transform.module_pass(opt_level=0, name="AutoGLMWinogradConv")
def winograd_conv_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    rewriter = _Rewriter(mod, _lanes())
    out = mutate_graph_functions(mod, rewriter)
    current().rewrote(rewriter.rewritten)
    return out


@register_pass("winograd_conv")
def winograd_conv():
    """NHWC 3x3 stride-1 fp32 conv2d with a constant weight -> Winograd F(2x2, 3x3) (O3, CPU)."""
    return winograd_conv_pass
