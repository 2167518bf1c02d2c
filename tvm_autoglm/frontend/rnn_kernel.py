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
* threads: each step's tiles in parallel when a step has enough work, else the two
  directions of a bidirectional node in parallel (one per thread).

The kernel is emitted already scheduled (``tirx.is_scheduled``): the default CPU rules leave
it alone, MetaSchedule does not extract it, and a CUDA build refuses it as unbound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


#: Per-step GEMV work (multiply-adds over all directions and batch rows) from which each step's
#: tiles are spread over the threads (one parallel region per step, i.e. a thread-pool barrier
#: per step). Below it the steps run on one thread per direction. Measured on a shared 2-core
#: Zen 3 (2-layer LSTM, batch 1, TVM_NUM_THREADS=2), per-step threads lost: hidden 128 seq 32
#: 2.04 vs 1.42 ms, hidden 256 seq 100 15.6 vs 12.4 ms; hence a threshold (4M MACs, hidden
#: ~1000 for an LSTM) that only much larger steps reach (not measured).
STEP_PARALLEL_MIN_MACS = 1 << 22


def steps_in_parallel(shape: RecurrenceShape) -> bool:
    """Whether each step's tiles are split over threads (else: one thread per direction)."""
    macs = shape.directions * shape.batch * shape.hidden * shape.gates * shape.padded_hidden
    return macs >= STEP_PARALLEL_MIN_MACS and shape.directions * shape.tiles >= 2


class _Kernel:
    """Buffers and sizes of one recurrence while its body is being emitted."""

    def __init__(self, shape: RecurrenceShape, xw, rw, rb, hbuf, cbuf, zbuf, rh):
        self.s = shape
        self.xw, self.rw, self.rb, self.hbuf, self.cbuf, self.zbuf, self.rh = xw, rw, rb, hbuf, cbuf, zbuf, rh
        self.TL, self.NT, self.H = shape.tile, shape.tiles, shape.hidden
        self.GT = shape.gates * shape.tile

    def time_index(self, d, t):
        """The timestep direction ``d`` processes at step ``t`` (backwards: seq - 1 - t)."""
        S = self.s.seq
        if self.s.directions == 1:
            backwards = tirx.const(1 if self.s.reverse_first else 0, "int32")
        else:
            backwards = tirx.Cast("int32", d == (0 if self.s.reverse_first else 1))
        return t + backwards * (S - 1 - 2 * t)

    def tile(self, d, jt, b, tt, cur, nxt) -> None:
        """GEMV of one tile (all its gates) and its gates: LSTM, RNN, GRU with linear_before_reset."""
        f32, one = "float32", tirx.const(1.0, "float32")
        xw, rw, hbuf, cbuf = self.xw, self.rw, self.hbuf, self.cbuf
        TL, GT, H, cell = self.TL, self.GT, self.H, self.s.cell
        acc = T.alloc_buffer((GT,), f32)
        if cell == "gru":  # linear_before_reset: z, r start from xw; the h gate's recurrent part from rb
            with T.vectorized(0, 2 * TL) as c:
                T.buffer_store(acc, xw[tt, b, d, jt * GT + c], [c])
            with T.vectorized(0, TL) as c:
                T.buffer_store(acc, self.rb[d, jt * GT + 2 * TL + c], [2 * TL + c])
        else:
            with T.vectorized(0, GT) as c:
                T.buffer_store(acc, xw[tt, b, d, jt * GT + c], [c])
        with T.serial(0, H) as k:
            with T.vectorized(0, GT) as c:
                T.buffer_store(acc, acc[c] + hbuf[d, cur, b, k] * rw[d, jt, k, c], [c])
        with T.vectorized(0, TL) as lane:
            j = jt * TL + lane
            if cell == "lstm":  # ONNX gate order i, o, f, c
                gi = fast_sigmoid(acc[lane])
                go = fast_sigmoid(acc[TL + lane])
                gf = fast_sigmoid(acc[2 * TL + lane])
                gc = fast_tanh(acc[3 * TL + lane])
                T.buffer_store(cbuf, gf * cbuf[d, b, j] + gi * gc, [d, b, j])
                # reads the stored c: an expression is not a value, and one reusing
                # gf * cbuf[...] here would read the *new* cbuf
                T.buffer_store(hbuf, go * fast_tanh(cbuf[d, b, j]), [d, nxt, b, j])
            elif cell == "gru":  # gate order z, r, h
                gz = fast_sigmoid(acc[lane])
                gr = fast_sigmoid(acc[TL + lane])
                gh = fast_tanh(xw[tt, b, d, jt * GT + 2 * TL + lane] + gr * acc[2 * TL + lane])
                T.buffer_store(hbuf, (one - gz) * gh + gz * hbuf[d, cur, b, j], [d, nxt, b, j])
            else:
                T.buffer_store(hbuf, fast_tanh(acc[lane]), [d, nxt, b, j])

    def gru_reset_tile(self, d, jt, b, tt, cur) -> None:
        """GRU, linear_before_reset=0, first half of a step: z and r * h_prev of one tile."""
        f32 = "float32"
        TL, GT, H = self.TL, self.GT, self.H
        acc = T.alloc_buffer((2 * TL,), f32)
        with T.vectorized(0, 2 * TL) as c:
            T.buffer_store(acc, self.xw[tt, b, d, jt * GT + c], [c])
        with T.serial(0, H) as k:
            with T.vectorized(0, 2 * TL) as c:
                T.buffer_store(acc, acc[c] + self.hbuf[d, cur, b, k] * self.rw[d, jt, k, c], [c])
        with T.vectorized(0, TL) as lane:
            j = jt * TL + lane
            T.buffer_store(self.zbuf, fast_sigmoid(acc[lane]), [d, b, j])
            # padding units of h_prev are zero, so r * h_prev is zero there too
            T.buffer_store(self.rh, fast_sigmoid(acc[TL + lane]) * self.hbuf[d, cur, b, j], [d, b, j])

    def gru_candidate_tile(self, d, jt, b, tt, cur, nxt) -> None:
        """GRU, linear_before_reset=0, second half: the h gate reads r * h_prev of *all* units."""
        f32, one = "float32", tirx.const(1.0, "float32")
        TL, GT, H = self.TL, self.GT, self.H
        acc = T.alloc_buffer((TL,), f32)
        with T.vectorized(0, TL) as c:
            T.buffer_store(acc, self.xw[tt, b, d, jt * GT + 2 * TL + c], [c])
        with T.serial(0, H) as k:
            with T.vectorized(0, TL) as c:
                T.buffer_store(acc, acc[c] + self.rh[d, b, k] * self.rw[d, jt, k, 2 * TL + c], [c])
        with T.vectorized(0, TL) as lane:
            j = jt * TL + lane
            gz = self.zbuf[d, b, j]
            T.buffer_store(self.hbuf, (one - gz) * fast_tanh(acc[lane]) + gz * self.hbuf[d, cur, b, j], [d, nxt, b, j])

    def step_tiles(self, d, b, tt, cur, nxt) -> None:
        """Every tile of one (direction, batch row) step, one after the other on this thread."""
        if self.s.cell == "gru" and not self.s.linear_before_reset:
            with T.serial(0, self.NT) as jt:
                self.gru_reset_tile(d, jt, b, tt, cur)
            with T.serial(0, self.NT) as jt:
                self.gru_candidate_tile(d, jt, b, tt, cur, nxt)
        else:
            with T.serial(0, self.NT) as jt:
                self.tile(d, jt, b, tt, cur, nxt)


def build_recurrence(shape: RecurrenceShape) -> tirx.PrimFunc:
    """The PrimFunc: ``(xw, rw, h0[, c0][, rb]) -> (y, y_h[, y_c])``.

    ``xw``: [seq, batch, dirs, packed_width] input projections, biases included (for GRU
    with ``linear_before_reset`` the h-gate's recurrent bias is ``rb`` instead);
    ``rw``: [dirs, tiles, hidden, gates * tile] packed recurrent weights;
    ``h0``/``c0``: [dirs, batch, hidden]; ``rb``: [dirs, packed_width];
    ``y``: [seq, dirs, batch, hidden] (ONNX layout 0); ``y_h``/``y_c``: [dirs, batch, hidden].

    Threads: when :func:`steps_in_parallel`, each step's (direction, tile) pairs are one
    parallel loop (tiles write disjoint units of the next state; the loop's end is the
    step's barrier; GRU with ``linear_before_reset=0`` needs two per step). Otherwise each
    direction runs its whole sequence on one thread.
    """
    s = shape
    f32 = "float32"
    S, B, H, D, G, TL, NT, HP = s.seq, s.batch, s.hidden, s.directions, s.gates, s.tile, s.tiles, s.padded_hidden
    GT = G * TL
    lstm, gru = s.cell == "lstm", s.cell == "gru"
    gru_split = gru and not s.linear_before_reset
    zero = tirx.const(0.0, f32)

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

            # state: h double-buffered (read cur, write next), padded to whole tiles; c in place
            hbuf = T.alloc_buffer((D, 2, B, HP), f32)
            cbuf = T.alloc_buffer((D, B, HP), f32) if lstm else None
            zbuf = T.alloc_buffer((D, B, HP), f32) if gru_split else None
            rh = T.alloc_buffer((D, B, HP), f32) if gru_split else None
            k = _Kernel(s, xw, rw, rb, hbuf, cbuf, zbuf, rh)
            with T.serial(0, D) as d:
                with T.serial(0, B) as b:
                    with T.serial(0, HP) as j:
                        T.buffer_store(hbuf, tirx.if_then_else(j < H, h0[d, b, tirx.min(j, H - 1)], zero), [d, 0, b, j])
                        if lstm:
                            T.buffer_store(cbuf, tirx.if_then_else(j < H, c0[d, b, tirx.min(j, H - 1)], zero), [d, b, j])

            if steps_in_parallel(s):
                with T.serial(0, S) as t:
                    cur, nxt = t % 2, 1 - t % 2
                    phases = 2 if gru_split else 1
                    for phase in range(phases):
                        with T.parallel(0, D * NT) as task:
                            d, jt = task // NT, task % NT
                            tt = k.time_index(d, t)
                            with T.serial(0, B) as b:
                                if not gru_split:
                                    k.tile(d, jt, b, tt, cur, nxt)
                                elif phase == 0:
                                    k.gru_reset_tile(d, jt, b, tt, cur)
                                else:
                                    k.gru_candidate_tile(d, jt, b, tt, cur, nxt)
                    with T.serial(0, D) as d:
                        with T.serial(0, B) as b:
                            with T.serial(0, H) as j:
                                T.buffer_store(y, hbuf[d, nxt, b, j], [k.time_index(d, t), d, b, j])
            else:
                with (T.parallel(0, D) if D > 1 else T.serial(0, D)) as d:
                    with T.serial(0, S) as t:
                        tt = k.time_index(d, t)
                        cur, nxt = t % 2, 1 - t % 2
                        with T.serial(0, B) as b:
                            k.step_tiles(d, b, tt, cur, nxt)
                            with T.serial(0, H) as j:
                                T.buffer_store(y, hbuf[d, nxt, b, j], [tt, d, b, j])
            with T.serial(0, D) as d:
                with T.serial(0, B) as b:
                    with T.serial(0, H) as j:
                        T.buffer_store(y_h, hbuf[d, S % 2, b, j], [d, b, j])
                        if lstm:
                            T.buffer_store(y_c, cbuf[d, b, j], [d, b, j])
    return ib.get()
