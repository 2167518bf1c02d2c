"""Our NPU instruction set: encoding shared with ``csrc/npu_sim.c``.

Every instruction is 16 little-endian int32 words, ``w[0]`` the opcode and
``w[1]`` the core that executes it. A program is one op: a CONFIG header (the
op id, arithmetic mode, machine parameters and the op's M/N/K), then LOAD,
GEMM, VALU, STORE and SYNC instructions. DRAM operands are the four pointer
arguments of ``npu_exec`` ("slots" 0-3); scratchpad offsets count elements of
that scratchpad's type (int8/fp16 for input and weight, 32-bit for the
accumulator). docs/npu.md has the field tables and the cycle model.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

WORDS = 16
TILE = 16

CONFIG, LOAD, STORE, GEMM, VALU, SYNC = 1, 2, 3, 4, 5, 6
INP, WGT, ACC = 0, 1, 2
DT_INT8, DT_FP32, DT_INT32, DT_FP16 = 0, 1, 2, 3
MODE_INT8, MODE_FP16 = 0, 1
ALU = {name: i for i, name in enumerate(["add", "mul", "max", "min", "addi", "muli", "relu", "clip", "exp", "gelu", "rsum", "rmax", "shr", "gelu_tanh"])}

DTYPE_CODES = {"int8": DT_INT8, "float32": DT_FP32, "int32": DT_INT32, "float16": DT_FP16}


def _f32_bits(value: float) -> int:
    return struct.unpack("<i", struct.pack("<f", float(value)))[0]


@dataclass
class Program:
    """An instruction stream for one op, built by the code generator."""

    words: list = field(default_factory=list)

    def _emit(self, *fields):
        row = [int(f) for f in fields]
        if len(row) > WORDS:
            raise ValueError("instruction too long")
        self.words.append(row + [0] * (WORDS - len(row)))

    def config(self, op_id, mode, cores, machine, m=0, n=0, k=0, batch=1):
        lat = machine.latency
        self._emit(CONFIG, op_id, mode, cores, lat["gemm_tile"], lat["vector_row"], lat["dma_setup"], lat["sync"],
                   machine.dram_bytes_per_cycle, machine.dram_total_bytes_per_cycle,
                   machine.scratchpad["input"], machine.scratchpad["weight"], machine.scratchpad["accumulator"], m, n, k)
        self._emit(CONFIG, 0, batch)  # extension word: batch count

    def load(self, core, sp, spad_off, slot, dram_off, rows, cols, dram_stride, valid_rows, valid_cols, spad_stride, dtype):
        self._emit(LOAD, core, sp, spad_off, slot, dram_off, rows, cols, dram_stride, valid_rows, valid_cols, spad_stride, dtype)

    def store(self, core, spad_off, slot, dram_off, rows, cols, dram_stride, spad_stride, dtype):
        self._emit(STORE, core, ACC, spad_off, slot, dram_off, rows, cols, dram_stride, spad_stride, dtype)

    def gemm(self, core, acc_off, inp_off, wgt_off, mt, nt, kt, reset, inp_stride, wgt_stride, acc_stride, useful_m, useful_n, useful_k):
        self._emit(GEMM, core, acc_off, inp_off, wgt_off, mt, nt, kt, int(reset), inp_stride, wgt_stride, acc_stride, useful_m, useful_n, useful_k)

    def valu(self, core, op, dst, src, rows, cols, dst_stride, imm0=0.0, imm1=0.0, src_stride=None, int_imm=False):
        i0 = int(imm0) if int_imm else _f32_bits(imm0)
        i1 = int(imm1) if int_imm else _f32_bits(imm1)
        self._emit(VALU, core, ALU[op], dst, src, rows, cols, dst_stride, i0, i1, dst_stride if src_stride is None else src_stride)

    def sync(self):
        self._emit(SYNC, 0)

    def __len__(self):
        return len(self.words)

    def array(self) -> np.ndarray:
        return np.asarray(self.words, dtype=np.int32).reshape(-1, WORDS)
