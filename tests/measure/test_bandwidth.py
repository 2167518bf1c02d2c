"""measure.bandwidth and generate.weight_bytes: the two halves of the decode speed limit.

No wall-clock assertion: the bandwidth kernel's *sum* is checked (it must have read every
element), and the byte counts are checked against numbers computed by hand from the shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from _onnx_builders import make_model
from tvm_autoglm.generate.weight_bytes import kv_cache_bytes, matmul_weight_bytes
from tvm_autoglm.measure import bandwidth


def test_bandwidth_kernel_reads_every_element_and_reports_a_median():
    result = bandwidth.measure_read_bandwidth(threads=2, mib=8, repeats=3)
    assert result["threads"] == 2 and result["mib"] == 8 and result["repeats"] == 3
    assert 0 < result["gb_per_s"] <= result["best_gb_per_s"]
    assert "median of 3" in result["method"]


def test_bandwidth_kernel_sums_exactly():
    """The kernel is a sum: over an array of ones each thread's partial sums add up to its chunk."""
    import tvm

    from tvm_autoglm.targets import load_target

    width = bandwidth.CHAINS * bandwidth.LANES
    elements = 3 * width * 5
    lib = tvm.compile(tvm.IRModule({"stream_sum": bandwidth._sum_kernel(elements, 3)}), target=load_target("cpu-x86-avx2").tvm_target())
    data = np.arange(elements, dtype=np.float32)
    out = tvm.runtime.tensor(np.zeros(3 * width, np.float32))
    lib["stream_sum"](tvm.runtime.tensor(data), out)
    per_thread = out.numpy().reshape(3, width).sum(axis=1)
    np.testing.assert_allclose(per_thread, data.reshape(3, -1).astype(np.float64).sum(axis=1), rtol=1e-6)


def test_bandwidth_refuses_nonsense_sizes():
    with pytest.raises(ValueError, match="mib >= 1"):
        bandwidth.measure_read_bandwidth(threads=1, mib=0)


def test_limit_is_bandwidth_over_bytes():
    assert bandwidth.tokens_per_s_limit(500_000_000, 25.0) == pytest.approx(50.0)


def test_weight_bytes_count_matmul_operands_once_and_skip_gathered_tables():
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["h"]),                 # table: one row per token, not counted
        helper.make_node("MatMul", ["h", "w1"], ["a"]),                    # 16 x 24 floats
        helper.make_node("Transpose", ["w2t"], ["w2"], perm=[1, 0]),
        helper.make_node("MatMul", ["a", "w2"], ["b"]),                    # through a Transpose: 24 x 8 floats
        helper.make_node("Gemm", ["b", "w3"], ["c"]),                      # 8 x 5
        helper.make_node("MatMul", ["c", "w3b"], ["d"]),                   # 5 x 5
        helper.make_node("MatMul", ["d", "w3b"], ["y"]),                   # the same weight again: counted once
    ]
    inits = {"emb": rng.standard_normal((100, 16)), "w1": rng.standard_normal((16, 24)), "w2t": rng.standard_normal((8, 24)),
             "w3": rng.standard_normal((8, 5)), "w3b": rng.standard_normal((5, 5)), "ids": np.array([[1]], dtype=np.int64)}
    model = make_model(nodes, {}, {"y": None}, inits)
    assert matmul_weight_bytes(model) == 4 * (16 * 24 + 24 * 8 + 8 * 5 + 5 * 5)


def test_kv_cache_bytes():
    assert kv_cache_bytes(layers=12, kv_heads=12, head_dim=64, slots=256) == 2 * 12 * 12 * 256 * 64 * 4
