"""The TensorIntrin route: the block intrinsic (what models use) and the 16x16x16 tile intrinsic (the comparison)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from tvm_autoglm.npu import build, tensorize
from tvm_autoglm.npu.codegen import MatmulShape
from tvm_autoglm.npu.config import machine_from
from tvm_autoglm.npu.counters import global_counters
from tvm_autoglm.npu.tiling import best_config
from tvm_autoglm.npu.tensorize import BlockConfig, block_kernel, config_words, fits_block, time_blocks

MACHINE = machine_from(None)


def _matmul(m, n, k, in_dtype, acc_dtype):
    @T.prim_func(s_tir=True)
    def mm(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (m, k), in_dtype)
        B = T.match_buffer(b, (k, n), in_dtype)
        C = T.match_buffer(c, (m, n), acc_dtype)
        for i, j, kk in T.grid(m, n, k):
            with T.sblock("C"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, kk])
                with T.init():
                    C[vi, vj] = T.cast(0, acc_dtype)
                C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], acc_dtype) * T.cast(B[vk, vj], acc_dtype)

    return mm


def _run(mod, *arrays):
    build.global_library()
    lib = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    tensors = [tvm.runtime.tensor(a) for a in arrays]
    lib["mm"](*tensors)
    return tensors[-1].numpy()


def test_tensorized_int8_matmul_bit_exact_and_counted():
    m, n, k = 32, 48, 64
    mod = tensorize.tensorize_matmul(_matmul(m, n, k, "int8", "int32").with_attr("global_symbol", "mm"), "int8")
    assert "npu_gemm_tile" in mod.script()
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    counters = global_counters()
    counters.reset()
    out = _run(mod, a, b, np.zeros((m, n), np.int32))
    np.testing.assert_array_equal(out, a.astype(np.int32) @ b.astype(np.int32))
    snap = counters.snapshot()
    assert snap["macs"] == m * n * k and snap["ops_executed"] == (m // 16) * (n // 16) * (k // 16)
    # one tile per op, no overlap: the program route is several times faster on the same shape
    program_cycles = best_config(MatmulShape(1, m, n, k, False, "int8", "int8", "int32"), machine_from(None))[1]
    assert snap["total_cycles"] > 3 * program_cycles


def test_tensorized_fp32_matmul_rounds_operands_to_fp16():
    m = n = k = 32
    mod = tensorize.tensorize_matmul(_matmul(m, n, k, "float32", "float32").with_attr("global_symbol", "mm"), "float32")
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    out = _run(mod, a, b, np.zeros((m, n), np.float32))
    want = a.astype(np.float16).astype(np.float32) @ b.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the block intrinsic

def _int8_shape(batch, m, n, k, b_batched=False, bias=False):
    return MatmulShape(batch, m, n, k, b_batched, "int8", "int8", "int32", bias=bias)


def _run_block_kernel(a_shape, b_shape, shape, cfg, machine=MACHINE, seed=0, op_id=3):
    """Compile the tensorized kernel of one op, run it on random int8 data; (out, want, counters snapshot)."""
    bias = shape.bias
    out_shape = list(a_shape[:-1]) + [shape.n]
    func = block_kernel("k", a_shape, b_shape, out_shape, shape, cfg, bias, op_id)
    assert "npu_gemm_block" in func.script() and "npu_block_begin" in func.script()
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, a_shape, dtype=np.int8)
    b = rng.integers(-128, 128, b_shape, dtype=np.int8)
    bias_v = rng.integers(-5000, 5000, (shape.n,), dtype=np.int32)
    args = [a, b] + ([bias_v] if bias else []) + [config_words(shape, cfg, machine, op_id), np.zeros(out_shape, np.int32)]
    build.global_library()
    lib = tvm.compile(tvm.IRModule({"k": func}), tvm.target.Target({"kind": "llvm"}))
    tensors = [tvm.runtime.tensor(x) for x in args]
    counters = global_counters()
    counters.reset()
    lib["k"](*tensors)
    want = np.matmul(a.astype(np.int32), b.astype(np.int32)) + (bias_v if bias else 0)
    return tensors[-1].numpy(), want, counters.snapshot()


def _dma(nbytes, machine=MACHINE):
    return machine.latency["dma_setup"] + -(-nbytes // machine.dram_bytes_per_cycle)


def test_block_intrinsic_int8_bit_exact_counted_and_replayed():
    """Batched A, shared B, bias, M/N/K not multiples of 16 (padded on chip): exact, MACs counted,
    and the compiled kernel's cycles equal the timing-only replay the tile search uses."""
    shape = _int8_shape(3, 37, 45, 70, bias=True)
    cfg = BlockConfig(37, 45, 35, 2)
    got, want, snap = _run_block_kernel([3, 37, 70], [70, 45], shape, cfg)
    np.testing.assert_array_equal(got, want)
    assert snap["errors"] == 0 and snap["macs"] == shape.macs and snap["ops_executed"] == 1
    assert snap["ops"][0]["op_id"] == 3 and snap["total_cycles"] == time_blocks(shape, cfg, MACHINE)


def test_block_intrinsic_batched_weight_bit_exact():
    shape = _int8_shape(4, 32, 16, 48, b_batched=True)
    got, want, snap = _run_block_kernel([2, 2, 32, 48], [2, 2, 48, 16], shape, BlockConfig(16, 16, 16, 3))
    np.testing.assert_array_equal(got, want)
    assert snap["macs"] == shape.macs


def test_one_block_on_idle_core_equals_documented_formula():
    """docs/npu.md, block route: LOAD C, LOAD A, LOAD B, GEMM, STORE C, final sync, nothing overlapping."""
    shape = _int8_shape(1, 32, 32, 64)
    cfg = BlockConfig(32, 32, 64, 2)
    want = _dma(32 * 32 * 4) + _dma(32 * 64) + _dma(64 * 32) + 2 * 2 * 4 * MACHINE.latency["gemm_tile"] + _dma(32 * 32 * 4) + MACHINE.latency["sync"]
    assert want == 724  # 148 + 84 + 84 + 256 + 148 + 4 with the shipped target file
    assert time_blocks(shape, cfg, MACHINE) == want
    _, _, snap = _run_block_kernel([32, 64], [64, 32], shape, cfg)
    assert snap["total_cycles"] == want


def test_consecutive_blocks_overlap():
    """Two output blocks of one op: the loads of the second overlap the GEMM of the first."""
    one = time_blocks(_int8_shape(1, 32, 32, 64), BlockConfig(32, 32, 64, 2), MACHINE)
    two = {d: time_blocks(_int8_shape(1, 64, 32, 64), BlockConfig(32, 32, 64, d), MACHINE) for d in (1, 2)}
    assert two[2] < 2 * one and two[2] <= two[1]
    # k steps of one block: with depth 2 the next A/B panels load while the GEMM runs
    ksteps = {d: time_blocks(_int8_shape(1, 32, 32, 256), BlockConfig(32, 32, 64, d), MACHINE) for d in (1, 2)}
    assert ksteps[2] < ksteps[1]


def test_more_cores_fewer_cycles():
    shape = _int8_shape(1, 256, 256, 256)
    cfg = BlockConfig(32, 32, 64, 2)
    cycles = [time_blocks(shape, cfg, MACHINE.with_cores(c)) for c in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(cycles, cycles[1:])), cycles
    assert cycles[0] / cycles[2] > 3.0
    got, want, snap = _run_block_kernel([64, 96], [96, 64], _int8_shape(1, 64, 64, 96), BlockConfig(16, 32, 32, 2),
                                        machine=MACHINE.with_cores(4))
    np.testing.assert_array_equal(got, want)  # blocks spread over 4 cores: same arithmetic
    assert snap["ops"][0]["cores"] == 4


def test_block_sizes_that_do_not_fit_are_rejected():
    shape = _int8_shape(1, 256, 256, 512)
    big = BlockConfig(256, 256, 512, 2)  # 2 x 256 KiB weight buffers > 256 KiB
    assert not fits_block(shape, big, MACHINE)
    with pytest.raises(ValueError, match="rejected"):
        time_blocks(shape, big, MACHINE)
    assert not fits_block(shape, BlockConfig(48, 256, 512, 1), MACHINE)  # 48 does not divide 256
    assert fits_block(shape, BlockConfig(64, 128, 256, 2), MACHINE)


def test_tensorize_route_on_bert_gemms_within_ten_percent_of_program_route():
    """The block route's searched cycles on bert-base int8 GEMMs vs the program route's."""
    for m, n, k in ((128, 768, 768), (128, 3072, 768), (128, 768, 3072)):
        shape = _int8_shape(1, m, n, k)
        program = best_config(shape, MACHINE)[1]
        block = tensorize.best_block_config(shape, MACHINE)[1]
        assert block <= 1.1 * program, (m, n, k, block, program)
        assert shape.macs / (block * MACHINE.macs_per_cycle_per_core) > 0.95


def test_tiny_transformer_through_the_tensorize_route():
    """Compiled for npu-sim with route "tensorize": ops reach the NPU through sch.tensorize,
    outputs match onnxruntime, counted MACs are the MACs of the placed ops."""
    import tvm_autoglm
    from tvm_autoglm.npu.partition import npu_ops, route_scope
    from tvm_autoglm.npu.report import collect

    from .models import reference, transformer_block

    model = transformer_block()
    with route_scope("tensorize"):
        compiled = tvm_autoglm.compile(model, target="npu-sim", opt_level=3)
    ops = npu_ops(compiled.build.mod)
    tensorized = [op for op in ops if op["route"] == "tensorize"]
    assert len(tensorized) >= 6, ops
    for op in tensorized:
        text = compiled.build.mod[op["kernel"]].script()
        assert "npu_gemm_block" in text and "npu_block_end" in text
    x = np.random.default_rng(0).standard_normal(compiled.inputs[0]["shape"]).astype(np.float32)
    np.testing.assert_allclose(compiled.run(x=x)["y"], reference(model, {"x": x})["y"], rtol=1e-2, atol=1e-2)
    report = collect(compiled._session, {"x": x})
    assert report["errors"] == 0 and report["macs"] == sum(op["macs"] for op in ops)
    ran = {op["op_id"]: op["cycles"] for op in report["ops"]}
    assert all(ran[op["op_id"]] == op["estimated_cycles"] for op in ops)
    with route_scope("program"):
        program = tvm_autoglm.compile(model, target="npu-sim", opt_level=3)
    assert {op["route"] for op in npu_ops(program.build.mod)} == {"program"}
