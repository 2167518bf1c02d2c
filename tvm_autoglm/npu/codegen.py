"""Instruction programs for matmul(+bias)(+relu/gelu) on the NPU.

One output block (mb x nb, multiples of the 16x16 tile) lives in an
accumulator buffer; its K loop streams (mb x kb) input and (kb x nb) weight
blocks through ``depth`` rotating scratchpad buffers, so with depth >= 2 the
DMA of block k+1 overlaps the GEMM of block k (the simulator's scoreboard
enforces the dependences; the program only chooses buffers). Blocks are
split into contiguous runs, one per core, ordered n-major so a core keeps a
resident weight block while it walks down M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import isa
from .config import Machine

T = isa.TILE


@dataclass(frozen=True)
class MatmulShape:
    batch: int
    m: int
    n: int
    k: int
    b_batched: bool  # weight has the batch dims too (attention) or is shared (dense)
    a_dtype: str = "float32"
    b_dtype: str = "float32"
    out_dtype: str = "float32"
    bias: bool = False
    activation: str | None = None  # None, "relu", "gelu" (erf), "gelu_tanh"

    @property
    def macs(self) -> int:
        return self.batch * self.m * self.n * self.k

    @property
    def mode(self) -> int:
        return isa.MODE_INT8 if self.a_dtype == "int8" else isa.MODE_FP16


@dataclass(frozen=True)
class TileConfig:
    mb: int
    nb: int
    kb: int
    depth: int

    def to_json(self) -> dict:
        return {"mb": self.mb, "nb": self.nb, "kb": self.kb, "depth": self.depth}


NAIVE = TileConfig(16, 16, 16, 1)


def _up(x: int, m: int = T) -> int:
    return (x + m - 1) // m * m


def fits(shape: MatmulShape, cfg: TileConfig, machine: Machine) -> bool:
    esz = 1 if shape.mode == isa.MODE_INT8 else 2
    sp = machine.scratchpad
    mb, nb, kb = min(cfg.mb, _up(shape.m)), min(cfg.nb, _up(shape.n)), min(cfg.kb, _up(shape.k))
    return (
        cfg.depth * mb * kb * esz <= sp["input"]
        and cfg.depth * kb * nb * esz <= sp["weight"]
        and 2 * mb * nb * 4 <= sp["accumulator"]
    )


def instruction_estimate(shape: MatmulShape, cfg: TileConfig) -> int:
    blocks = shape.batch * math.ceil(shape.m / cfg.mb) * math.ceil(shape.n / cfg.nb)
    return blocks * (3 * math.ceil(shape.k / cfg.kb) + 3)


def matmul_program(shape: MatmulShape, cfg: TileConfig, machine: Machine, op_id: int = 0) -> isa.Program:
    """The instruction stream of one matmul op (DRAM slots: 0=A, 1=B, 2=bias, 3=out)."""
    if not fits(shape, cfg, machine):
        raise ValueError(f"tile config {cfg} does not fit the scratchpads")
    M, N, K = shape.m, shape.n, shape.k
    mb, nb, kb = min(cfg.mb, _up(M)), min(cfg.nb, _up(N)), min(cfg.kb, _up(K))
    prog = isa.Program()
    prog.config(op_id, shape.mode, machine.cores, machine, M, N, K, batch=shape.batch)
    a_dt, b_dt, o_dt = (isa.DTYPE_CODES[d] for d in (shape.a_dtype, shape.b_dtype, shape.out_dtype))
    bias_dt = isa.DT_INT32 if shape.mode == isa.MODE_INT8 else isa.DT_FP32
    blocks = [(b, mi, ni) for b in range(shape.batch) for ni in range(0, N, nb) for mi in range(0, M, mb)]
    cores = machine.cores
    per_core = [blocks[len(blocks) * c // cores: len(blocks) * (c + 1) // cores] for c in range(cores)]
    for core, run in enumerate(per_core):
        inp_next = wgt_next = acc_next = 0
        wgt_holds: dict[int, tuple] = {}  # buffer -> (weight batch, ki, ni) resident there
        for b, mi, ni in run:
            rows, cols = min(mb, M - mi), min(nb, N - ni)
            mt, nt = math.ceil(rows / T), math.ceil(cols / T)
            acc_off = acc_next * mb * nb
            acc_next = (acc_next + 1) % 2
            if shape.bias:  # accumulator starts at the bias, broadcast over rows (DRAM row stride 0)
                prog.load(core, isa.ACC, acc_off, 2, ni, mt * T, nt * T, 0, mt * T, cols, nt * T, bias_dt)
            wb = b if shape.b_batched else 0
            for kk, ki in enumerate(range(0, K, kb)):
                depth_k = min(kb, K - ki)
                kt = math.ceil(depth_k / T)
                inp_off = inp_next * mb * kb
                inp_next = (inp_next + 1) % cfg.depth
                prog.load(core, isa.INP, inp_off, 0, b * M * K + mi * K + ki, mt * T, kt * T, K, rows, depth_k, kt * T, a_dt)
                key = (wb, ki, ni)
                hit = next((buf for buf, held in wgt_holds.items() if held == key), None)
                if hit is None:
                    hit = wgt_next
                    wgt_next = (wgt_next + 1) % cfg.depth
                    prog.load(core, isa.WGT, hit * kb * nb, 1, wb * K * N + ki * N + ni, kt * T, nt * T, N, depth_k, cols, nt * T, b_dt)
                    wgt_holds[hit] = key
                prog.gemm(core, acc_off, inp_off, hit * kb * nb, mt, nt, kt, kk == 0 and not shape.bias,
                          kt * T, nt * T, nt * T, rows, cols, depth_k)
            if shape.activation:
                prog.valu(core, shape.activation, acc_off, acc_off, mt * T, nt * T, nt * T)
            prog.store(core, acc_off, 3, b * M * N + mi * N + ni, rows, cols, N, nt * T, o_dt)
    return prog


def candidate_configs(shape: MatmulShape, machine: Machine, depths=(2,), max_insns: int = 6000) -> list[TileConfig]:
    """Block sizes that fit the scratchpads and keep the program a sane length."""
    def sizes(dim, options):
        keep = [s for s in options if s < _up(dim)]
        return keep + [min(_up(dim), options[-1])] if _up(dim) <= options[-1] else keep

    out = []
    for mb in sizes(shape.m, (16, 32, 64, 128, 256)):
        for nb in sizes(shape.n, (16, 32, 64, 128, 256)):
            for kb in sizes(shape.k, (32, 64, 128, 256, 512)) or [16]:
                for depth in depths:
                    cfg = TileConfig(mb, nb, kb, depth)
                    if (mb == 16 and shape.m > 64) or (nb == 16 and shape.n > 64):
                        continue
                    if fits(shape, cfg, machine) and instruction_estimate(shape, cfg) <= max_insns:
                        out.append(cfg)
    return out
