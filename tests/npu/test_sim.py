"""The simulator at the instruction level: exact arithmetic and the cycle model."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_autoglm.npu import isa
from tvm_autoglm.npu.codegen import NAIVE, MatmulShape, TileConfig, matmul_program
from tvm_autoglm.npu.config import machine_from
from tvm_autoglm.npu.sim import execute, time_program
from tvm_autoglm.npu.tiling import best_config

MACHINE = machine_from(None)


def one_tile_program(mode, in_dt, out_dt):
    prog = isa.Program()
    prog.config(0, mode, 1, MACHINE, 16, 16, 16)
    prog.load(0, isa.INP, 0, 0, 0, 16, 16, 16, 16, 16, 16, in_dt)
    prog.load(0, isa.WGT, 0, 1, 0, 16, 16, 16, 16, 16, 16, in_dt)
    prog.gemm(0, 0, 0, 0, 1, 1, 1, True, 16, 16, 16, 16, 16, 16)
    prog.store(0, 0, 3, 0, 16, 16, 16, 16, out_dt)
    return prog


def test_gemm_tile_int8_bit_exact():
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (16, 16), dtype=np.int8)
    b = rng.integers(-128, 128, (16, 16), dtype=np.int8)
    out = np.zeros((16, 16), np.int32)
    execute(one_tile_program(isa.MODE_INT8, isa.DT_INT8, isa.DT_INT32), a, b, None, out)
    np.testing.assert_array_equal(out, a.astype(np.int32) @ b.astype(np.int32))


@pytest.mark.parametrize("cores", [1, 3])
def test_int8_matmul_with_padding_bit_exact(cores):
    """Ragged M/N/K (padding on chip), bias in the accumulator, relu, several cores."""
    rng = np.random.default_rng(1)
    m, n, k = 37, 45, 70
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-5000, 5000, (n,), dtype=np.int32)
    out = np.zeros((m, n), np.int32)
    shape = MatmulShape(1, m, n, k, False, "int8", "int8", "int32", bias=True, activation="relu")
    execute(matmul_program(shape, TileConfig(32, 32, 32, 2), MACHINE.with_cores(cores)), a, b, bias, out)
    want = np.maximum(a.astype(np.int32) @ b.astype(np.int32) + bias, 0)
    np.testing.assert_array_equal(out, want)


def test_fp16_tile_matches_rounded_operands():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((16, 16)).astype(np.float32)
    b = rng.standard_normal((16, 16)).astype(np.float32)
    out = np.zeros((16, 16), np.float32)
    execute(one_tile_program(isa.MODE_FP16, isa.DT_FP32, isa.DT_FP32), a, b, None, out)
    want = a.astype(np.float16).astype(np.float32) @ b.astype(np.float16).astype(np.float32)
    # operands are rounded to fp16 exactly as numpy does; only fp32 summation order differs
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, a @ b, rtol=1e-6, atol=1e-6)  # the fp16 rounding really happened


def test_one_tile_cycles_equal_documented_formula():
    """docs/npu.md, worked example: load A, load B, GEMM, store C, final sync."""
    lat, bpc = MACHINE.latency, MACHINE.dram_bytes_per_cycle
    load = lat["dma_setup"] + -(-16 * 16 * 1 // bpc)  # int8 operands
    store = lat["dma_setup"] + -(-16 * 16 * 4 // bpc)  # int32 results
    want = 2 * load + lat["gemm_tile"] + store + lat["sync"]
    assert want == 128  # 2*(20+8) + 16 + (20+32) + 4 with the shipped target file
    assert time_program(one_tile_program(isa.MODE_INT8, isa.DT_INT8, isa.DT_INT32)) == want


def test_vector_unit_ops():
    """VALU on accumulator rows: exp and gelu (fp), row sum/max for softmax, clip."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 16)).astype(np.float32)
    prog = isa.Program()
    prog.config(0, isa.MODE_FP16, 1, MACHINE)
    prog.load(0, isa.ACC, 0, 0, 0, 16, 16, 16, 16, 16, 16, isa.DT_FP32)
    prog.valu(0, "rmax", 256, 0, 16, 16, 1, src_stride=16)  # row max into a column at offset 256
    prog.valu(0, "exp", 0, 0, 16, 16, 16)
    prog.valu(0, "rsum", 512, 0, 16, 16, 1, src_stride=16)
    prog.store(0, 0, 3, 0, 16, 16, 16, 16, isa.DT_FP32)
    prog.store(0, 256, 1, 0, 16, 1, 1, 1, isa.DT_FP32)
    prog.store(0, 512, 2, 0, 16, 1, 1, 1, isa.DT_FP32)
    out, rmax, rsum = np.zeros((16, 16), np.float32), np.zeros(16, np.float32), np.zeros(16, np.float32)
    execute(prog, x, rmax, rsum, out)
    np.testing.assert_allclose(rmax, x.max(axis=1), rtol=0, atol=0)
    np.testing.assert_allclose(out, np.exp(x), rtol=1e-6)
    np.testing.assert_allclose(rsum, np.exp(x).sum(axis=1), rtol=1e-5)

    g = isa.Program()
    g.config(0, isa.MODE_FP16, 1, MACHINE)
    g.load(0, isa.ACC, 0, 0, 0, 16, 16, 16, 16, 16, 16, isa.DT_FP32)
    g.valu(0, "gelu", 0, 0, 16, 16, 16)
    g.store(0, 0, 3, 0, 16, 16, 16, 16, isa.DT_FP32)
    gelu = np.zeros_like(x)
    execute(g, x, None, None, gelu)
    from math import erf

    np.testing.assert_allclose(gelu, [[0.5 * v * (1 + erf(v / np.sqrt(2))) for v in row] for row in x.astype(np.float64)], rtol=1e-6, atol=1e-7)

    q = isa.Program()
    q.config(0, isa.MODE_INT8, 1, MACHINE)
    q.load(0, isa.ACC, 0, 0, 0, 16, 16, 16, 16, 16, 16, isa.DT_INT32)
    q.valu(0, "shr", 0, 0, 16, 16, 16, 4, 0, int_imm=True)
    q.valu(0, "clip", 0, 0, 16, 16, 16, -128, 127, int_imm=True)
    q.store(0, 0, 3, 0, 16, 16, 16, 16, isa.DT_INT32)
    xi = rng.integers(-10000, 10000, (16, 16), dtype=np.int32)
    oi = np.zeros_like(xi)
    execute(q, xi, None, None, oi)
    np.testing.assert_array_equal(oi, np.clip((xi.astype(np.int64) + 8) >> 4, -128, 127))


def test_tile_search_beats_naive_and_double_buffering_helps():
    shape = MatmulShape(1, 128, 256, 256, False)
    naive = time_program(matmul_program(shape, NAIVE, MACHINE))
    cfg, best, _ = best_config(shape, MACHINE)
    assert best < naive / 4
    single = time_program(matmul_program(shape, TileConfig(cfg.mb, cfg.nb, cfg.kb, 1), MACHINE))
    double = time_program(matmul_program(shape, TileConfig(cfg.mb, cfg.nb, cfg.kb, 2), MACHINE))
    assert double < single  # DMA of block k+1 hides under the GEMM of block k


def test_more_cores_fewer_cycles_for_a_large_gemm():
    shape = MatmulShape(1, 1024, 1024, 512, False)
    cfg = TileConfig(128, 128, 64, 2)
    cycles = [time_program(matmul_program(shape, cfg, MACHINE.with_cores(c))) for c in (1, 2, 4, 8)]
    assert cycles[0] > cycles[1] > cycles[2] > cycles[3]
    assert cycles[0] / cycles[3] > 5.8


def test_bad_program_is_rejected_not_run():
    prog = isa.Program()
    prog.config(0, isa.MODE_INT8, 1, MACHINE)
    prog.load(0, isa.INP, MACHINE.scratchpad["input"], 0, 0, 16, 16, 16, 16, 16, 16, isa.DT_INT8)  # past the scratchpad
    with pytest.raises(RuntimeError):
        time_program(prog)
