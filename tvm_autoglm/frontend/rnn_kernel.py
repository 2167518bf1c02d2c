"""The recurrence of an ONNX LSTM / GRU / RNN node as one hand-written CPU kernel.

The input projection ``X @ W^T + biases`` for every timestep is an ordinary GEMM that the
converter emits as Relax ops (and the Matmul rule schedules). What is left is inherently
sequential: per step a small GEMM of the previous hidden state with the recurrent weights,
then the gate nonlinearities. Unrolled into Relax ops that would be 2-3 kernels per step
(hundreds of VM calls and compiled functions for a 100-step sequence); here it is one loop
nest per node:

* the recurrent weights are packed per tile of ``tile`` hidden units with the gates of those
  units side by side (``[dir, tile_index, k, gate * tile + lane]``), so one tile's GEMV
  accumulates ``gates * tile`` outputs in registers, reading contiguous weights, and the
  tile's gates are then computed from those registers without waiting for other tiles;
* the hidden state is double-buffered (read ``cur``, write ``next``) and padded to whole
  tiles (padding units have zero weights and stay zero); the cell state updates in place;
* sigmoid and tanh are the rational tanh approximation TVM's ``topi.fast_tanh`` uses
  (multiply/add/divide only, so they vectorize; LLVM has no vector ``expf`` on x86);
* the two directions of a bidirectional node run in parallel (one per thread).

The kernel is emitted already scheduled (``tirx.is_scheduled``): the default CPU rules leave
it alone, MetaSchedule does not extract it, and a CUDA build refuses it as unbound.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

#: Gate count of each cell (rows of W per direction are ``gates * hidden``).
GATES = {"lstm": 4, "gru": 3, "rnn": 1}

#: Accumulator vectors one tile keeps in registers (AVX2 has 16 ymm: 8 accumulators,
#: a broadcast and the loads leave room). Target-independent: only the tile width changes.
_ACC_VECTORS = 8


@dataclass(frozen=True)
class RecurrenceShape:
    """Static sizes and options of one RNN node's recurrence."""

    cell: str  # "lstm" | "gru" | "rnn"
    seq: int
    batch: int
    hidden: int
    directions: int  # 1 or 2
    reverse_first: bool  # direction 0 runs backwards (direction="reverse")
    linear_before_reset: bool = False  # GRU only
    lanes: int = 8  # float32 lanes of the target's vectors

    @property
    def gates(self) -> int:
        return GATES[self.cell]

    @property
    def tile(self) -> int:
        """Hidden units per tile: enough vectors to hide the FMA latency, no more than needed."""
        per_gate_vectors = max(1, _ACC_VECTORS // self.gates)
        needed_vectors = -(-self.hidden // self.lanes)
        return self.lanes * max(1, min(per_gate_vectors, needed_vectors))

    @property
    def tiles(self) -> int:
        return -(-self.hidden // self.tile)

    @property
    def padded_hidden(self) -> int:
        return self.tiles * self.tile

    @property
    def packed_width(self) -> int:
        """Columns of the packed projection per direction: ``tiles * gates * tile``."""
        return self.tiles * self.gates * self.tile


def packed_row_order(shape: RecurrenceShape):
    """For each packed column, the ONNX weight row it takes (``-1``: a zero padding row).

    ONNX stacks the gates: row ``g * hidden + j``. Packed column
    ``tile_index * gates * tile + g * tile + lane`` holds unit ``j = tile_index * tile + lane``.
    """
    import numpy as np

    order = np.full(shape.packed_width, -1, dtype=np.int64)
    for jt in range(shape.tiles):
        for g in range(shape.gates):
            for lane in range(shape.tile):
                j = jt * shape.tile + lane
                if j < shape.hidden:
                    order[(jt * shape.gates + g) * shape.tile + lane] = g * shape.hidden + j
    return order


# Rational approximation of tanh on [-9, 9] (Eigen's, as in TVM's topi.fast_tanh_float);
# float32 tanh is +-1 outside that range.
_TANH_ALPHA = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
               -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_TANH_BETA = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


def fast_tanh(x):
    def c(v):
        return tirx.const(v, "float32")

    x = tirx.max(tirx.min(x, c(9.0)), c(-9.0))
    x2 = x * x
    p = c(_TANH_ALPHA[-1])
    for a in reversed(_TANH_ALPHA[:-1]):
        p = p * x2 + c(a)
    q = c(_TANH_BETA[-1])
    for b in reversed(_TANH_BETA[:-1]):
        q = q * x2 + c(b)
    return p * x / q


def fast_sigmoid(x):
    half = tirx.const(0.5, "float32")
    return half * fast_tanh(half * x) + half


def build_recurrence(shape: RecurrenceShape) -> tirx.PrimFunc:
    """The PrimFunc: ``(xw, rw, h0[, c0][, rb]) -> (y, y_h[, y_c])``.

    ``xw``: [seq, batch, dirs, packed_width] input projections, biases included (for GRU
    with ``linear_before_reset`` the h-gate's recurrent bias is ``rb`` instead);
    ``rw``: [dirs, tiles, hidden, gates * tile] packed recurrent weights;
    ``h0``/``c0``: [dirs, batch, hidden]; ``rb``: [dirs, packed_width];
    ``y``: [seq, dirs, batch, hidden] (ONNX layout 0); ``y_h``/``y_c``: [dirs, batch, hidden].
    """
    s = shape
    f32 = "float32"
    S, B, H, D, G, TL, NT, HP = s.seq, s.batch, s.hidden, s.directions, s.gates, s.tile, s.tiles, s.padded_hidden
    GT = G * TL
    lstm, gru = s.cell == "lstm", s.cell == "gru"
    gru_split = gru and not s.linear_before_reset  # the h gate needs r * h_prev of *all* units first
    zero = tirx.const(0.0, f32)
    one = tirx.const(1.0, f32)

    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name(f"{s.cell}_recurrence")
            xw = T.arg("xw", T.buffer((S, B, D, NT * GT), f32))
            rw = T.arg("rw", T.buffer((D, NT, H, GT), f32))
            h0 = T.arg("h0", T.buffer((D, B, H), f32))
            c0 = T.arg("c0", T.buffer((D, B, H), f32)) if lstm else None
            rb = T.arg("rb", T.buffer((D, NT * GT), f32)) if gru and s.linear_before_reset else None
            y = T.arg("y", T.buffer((S, D, B, H), f32))
            y_h = T.arg("y_h", T.buffer((D, B, H), f32))
            y_c = T.arg("y_c", T.buffer((D, B, H), f32)) if lstm else None
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "autoglm.kernel": f"{s.cell}_recurrence"})

            loop_d = T.parallel(0, D) if D > 1 else T.serial(0, D)
            with loop_d as d:
                hbuf = T.alloc_buffer((2, B, HP), f32)
                cbuf = T.alloc_buffer((B, HP), f32) if lstm else None
                zbuf = T.alloc_buffer((B, HP), f32) if gru_split else None
                rh = T.alloc_buffer((B, HP), f32) if gru_split else None
                with T.serial(0, B) as b:
                    with T.serial(0, HP) as j:
                        T.buffer_store(hbuf, tirx.if_then_else(j < H, h0[d, b, tirx.min(j, H - 1)], zero), [0, b, j])
                        if lstm:
                            T.buffer_store(cbuf, tirx.if_then_else(j < H, c0[d, b, tirx.min(j, H - 1)], zero), [b, j])
                if D == 1:
                    backwards = tirx.const(1 if s.reverse_first else 0, "int32")
                else:
                    backwards = tirx.Cast("int32", d == 1) if not s.reverse_first else tirx.Cast("int32", d == 0)
                with T.serial(0, S) as t:
                    tt = t + backwards * (S - 1 - 2 * t)
                    cur = t % 2
                    nxt = 1 - cur
                    with T.serial(0, B) as b:
                        if gru_split:
                            _gru_split_step(s, xw, rw, hbuf, zbuf, rh, tt, b, d, cur, nxt)
                        else:
                            with T.serial(0, NT) as jt:
                                acc = T.alloc_buffer((GT,), f32)
                                if gru:  # linear_before_reset: z, r from xw; h gate's recurrent part from rb
                                    with T.vectorized(0, 2 * TL) as c:
                                        T.buffer_store(acc, xw[tt, b, d, jt * GT + c], [c])
                                    with T.vectorized(0, TL) as c:
                                        T.buffer_store(acc, rb[d, jt * GT + 2 * TL + c], [2 * TL + c])
                                else:
                                    with T.vectorized(0, GT) as c:
                                        T.buffer_store(acc, xw[tt, b, d, jt * GT + c], [c])
                                with T.serial(0, H) as k:
                                    with T.vectorized(0, GT) as c:
                                        T.buffer_store(acc, acc[c] + hbuf[cur, b, k] * rw[d, jt, k, c], [c])
                                with T.vectorized(0, TL) as lane:
                                    j = jt * TL + lane
                                    if lstm:  # ONNX gate order i, o, f, c
                                        gi = fast_sigmoid(acc[lane])
                                        go = fast_sigmoid(acc[TL + lane])
                                        gf = fast_sigmoid(acc[2 * TL + lane])
                                        gc = fast_tanh(acc[3 * TL + lane])
                                        T.buffer_store(cbuf, gf * cbuf[b, j] + gi * gc, [b, j])
                                        # reads the stored c: an expression is not a value, and one
                                        # reusing gf * cbuf[...] here would read the *new* cbuf
                                        T.buffer_store(hbuf, go * fast_tanh(cbuf[b, j]), [nxt, b, j])
                                    elif gru:  # gate order z, r, h; linear_before_reset=1
                                        gz = fast_sigmoid(acc[lane])
                                        gr = fast_sigmoid(acc[TL + lane])
                                        gh = fast_tanh(xw[tt, b, d, jt * GT + 2 * TL + lane] + gr * acc[2 * TL + lane])
                                        T.buffer_store(hbuf, (one - gz) * gh + gz * hbuf[cur, b, j], [nxt, b, j])
                                    else:
                                        T.buffer_store(hbuf, fast_tanh(acc[lane]), [nxt, b, j])
                        with T.serial(0, H) as j:
                            T.buffer_store(y, hbuf[nxt, b, j], [tt, d, b, j])
                with T.serial(0, B) as b:
                    with T.serial(0, H) as j:
                        T.buffer_store(y_h, hbuf[S % 2, b, j], [d, b, j])
                        if lstm:
                            T.buffer_store(y_c, cbuf[b, j], [d, b, j])
    return ib.get()


def _gru_split_step(s: RecurrenceShape, xw, rw, hbuf, zbuf, rh, tt, b, d, cur, nxt) -> None:
    """One GRU step with ``linear_before_reset=0``: z, r for every unit, then r*h_prev, then the h gate.

    The h gate's GEMV reads ``r * h_prev`` of all units, so it cannot start until every
    tile's r is known: two tile loops per step instead of one.
    """
    f32, one = "float32", tirx.const(1.0, "float32")
    TL, NT, H = s.tile, s.tiles, s.hidden
    GT = s.gates * TL
    with T.serial(0, NT) as jt:
        acc = T.alloc_buffer((2 * TL,), f32)
        with T.vectorized(0, 2 * TL) as c:
            T.buffer_store(acc, xw[tt, b, d, jt * GT + c], [c])
        with T.serial(0, H) as k:
            with T.vectorized(0, 2 * TL) as c:
                T.buffer_store(acc, acc[c] + hbuf[cur, b, k] * rw[d, jt, k, c], [c])
        with T.vectorized(0, TL) as lane:
            j = jt * TL + lane
            T.buffer_store(zbuf, fast_sigmoid(acc[lane]), [b, j])
            # Padding units of h_prev are zero, so r * h_prev is zero there too.
            T.buffer_store(rh, fast_sigmoid(acc[TL + lane]) * hbuf[cur, b, j], [b, j])
    with T.serial(0, NT) as jt:
        acc = T.alloc_buffer((TL,), f32)
        with T.vectorized(0, TL) as c:
            T.buffer_store(acc, xw[tt, b, d, jt * GT + 2 * TL + c], [c])
        with T.serial(0, H) as k:
            with T.vectorized(0, TL) as c:
                T.buffer_store(acc, acc[c] + rh[b, k] * rw[d, jt, k, 2 * TL + c], [c])
        with T.vectorized(0, TL) as lane:
            j = jt * TL + lane
            gz = zbuf[b, j]
            T.buffer_store(hbuf, (one - gz) * fast_tanh(acc[lane]) + gz * hbuf[cur, b, j], [nxt, b, j])
