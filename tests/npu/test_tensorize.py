"""The TensorIntrin route: correct, counted, and slower than the program route (why models use the latter)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import tirx as T

from tvm_autoglm.npu import build, tensorize
from tvm_autoglm.npu.codegen import MatmulShape
from tvm_autoglm.npu.config import machine_from
from tvm_autoglm.npu.counters import global_counters
from tvm_autoglm.npu.tiling import best_config


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
