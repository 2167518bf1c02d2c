"""Fallback must not reverse-inline a consumer whose producer has other readers (Llama decode RMSNorm).

TVM 0.27's reverse_compute_inline drops the producer's buffer even when another block
still reads it; the kernel then referenced an undefined buffer and did not lower.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te, tirx

from tvm_autoglm.schedule_rules import _lowers
from tvm_autoglm.schedule_rules.fallback import Fallback
from tvm_autoglm.targets import load_target


def _rms_norm_kernel(n: int):
    x = te.placeholder((1, 1, n), "float32", name="x")
    w = te.placeholder((n,), "float32", name="w")
    cast = te.compute(x.shape, lambda a, b, i: x[a, b, i], name="cast")  # read by square AND by the output
    square = te.compute(x.shape, lambda a, b, i: cast[a, b, i] * cast[a, b, i], name="square")
    k = te.reduce_axis((0, n), name="k")
    total = te.compute((1, 1), lambda a, b: te.sum(square[a, b, k], axis=k), name="total")
    scale = te.compute((1, 1), lambda a, b: tirx.rsqrt(total[a, b] / float(n) + 1e-5), name="scale")
    out = te.compute(x.shape, lambda a, b, i: scale[a, b] * cast[a, b, i] * w[i], name="out")
    return te.create_prim_func([x, w, out])


def test_fallback_schedule_of_a_shared_producer_lowers_and_computes_rms_norm():
    target = load_target("cpu-x86-avx2").tvm_target()
    func = _rms_norm_kernel(64)
    sch = Fallback().apply(func, target, False)
    assert sch is not None
    scheduled = sch.mod["main"]
    assert _lowers(scheduled, target)
    lib = tvm.compile(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target="llvm")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 64)).astype("float32")
    w = rng.standard_normal(64).astype("float32")
    out = tvm.runtime.tensor(np.zeros((1, 1, 64), "float32"))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w), out)
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-6)  # float32 sum of 64 squares
