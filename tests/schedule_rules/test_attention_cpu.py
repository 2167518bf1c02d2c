"""AttentionCPU: the fused attention kernel gets the row-block schedule and stays exact.

Reference: attention computed in numpy (float64), fp32 tolerances loosened to
rtol 1e-4 / atol 1e-5 because the max/sum reductions are re-associated
(vector-lane partials) -- the order of a 128-term float32 sum.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from sched_helpers import loop_kinds, prim_funcs
from tvm import relax, tirx

from tvm_autoglm.ir_utils import copy_module
from tvm_autoglm.passes.attention import fuse_attention_pass
from tvm_autoglm.schedule_rules.attention import AttentionCPU, _per_block

MIN = float(np.finfo(np.float32).min)


def _fused_module(form: str, b: int, h: int, s: int, d: int) -> tvm.IRModule:
    """q, k, v [b, h, s, d] (+ mask) -> attention -> [b, s, h*d], grouped by fuse_attention and lowered."""
    bb = relax.BlockBuilder()
    q, k, v = (relax.Var(n, relax.TensorType((b, h, s, d), "float32")) for n in "qkv")
    mask = relax.Var("mask", relax.TensorType((b, 1, 1, s), "float32"))
    with bb.function("main", [q, k, v, mask]):
        with bb.dataflow():
            kt = bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))
            if form == "sdpa":  # torch's SDPA decomposition: sqrt(scale) on both sides, NaN guard
                c = relax.const(1 / math.sqrt(math.sqrt(d)), "float32")
                scores = bb.emit(relax.op.matmul(relax.op.multiply(q, c), relax.op.multiply(kt, c)))
            else:
                scores = bb.emit(relax.op.divide(relax.op.matmul(q, kt), relax.const(math.sqrt(d), "float32")))
            if form == "causal":
                tri = relax.const(np.tril(np.ones((s, s), dtype=bool)).reshape(1, 1, s, s))
                scores = bb.emit(relax.op.where(tri, scores, relax.const(MIN, "float32")))
            scores = bb.emit(relax.op.add(scores, mask))
            p = bb.emit(relax.op.nn.softmax(scores, axis=-1))
            if form == "sdpa":
                p = bb.emit(relax.op.where(relax.op.isnan(p), relax.const(0.0, "float32"), p))
            o = bb.emit(relax.op.matmul(p, v))
            o = bb.emit(relax.op.permute_dims(o, [0, 2, 1, 3]))
            out = bb.emit_output(relax.op.reshape(o, (b, s, h * d)))
        bb.emit_func_output(out)
    return relax.get_pipeline("zero")(fuse_attention_pass(bb.get()))


def _reference(form, q, k, v, mask):
    q, k, v, mask = (x.astype("float64") for x in (q, k, v, mask))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    if form == "causal":
        s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, MIN)
    s = s + mask
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = p @ v
    b, h, n, d = o.shape
    return o.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def _attention_kernel(mod):
    funcs = {name: f for name, f in prim_funcs(mod).items() if "softmax" in name}
    assert len(funcs) == 1, list(prim_funcs(mod))
    return next(iter(funcs.items()))


def _run(mod, target, arrays):
    ex = tvm.compile(mod, target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def _inputs(b, h, s, d):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((b, h, s, d)).astype("float32") for _ in range(3))
    mask = np.zeros((b, 1, 1, s), dtype="float32")
    mask[..., -2:] = MIN  # padded keys, as BERT writes them
    return [q, k, v, mask]


def _schedule_kernel(mod, name, sch):
    mod = copy_module(mod)
    mod[name] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    return mod


def _parallel_loops(func) -> int:
    return sum(1 for kind in loop_kinds(func) if kind == tirx.ForKind.PARALLEL)


@pytest.mark.parametrize("form,shape", [
    ("plain", (1, 2, 16, 32)),     # bert-tiny s16
    ("sdpa", (1, 2, 16, 32)),
    ("causal", (1, 4, 32, 16)),    # gpt-neox-tiny head dim
    ("sdpa", (2, 3, 24, 64)),      # base head dim, batch 2
])
def test_row_block_schedule_matches_numpy(target, form, shape):
    mod = _fused_module(form, *shape)
    name, func = _attention_kernel(mod)
    sch = AttentionCPU()._rowwise(func, target)
    assert sch is not None, "row-block schedule declined a plain attention kernel"
    scheduled = sch.mod["main"]
    # one task loop holds everything (the old schedule had one parallel loop per block)
    assert _parallel_loops(scheduled) == 1
    assert tirx.ForKind.VECTORIZED in loop_kinds(scheduled)
    assert _parallel_loops(_per_block(func, target).mod["main"]) > 3
    arrays = _inputs(*shape)
    got = _run(_schedule_kernel(mod, name, sch), target, arrays)
    np.testing.assert_allclose(got, _reference(form, *arrays), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 2, 13, 12), (1, 1, 5, 8)])
def test_odd_sizes_stay_exact(target, shape):
    """Keys and head dims that are no multiple of the vector width: scalar tails, same numbers."""
    mod = _fused_module("plain", *shape)
    name, func = _attention_kernel(mod)
    sch = AttentionCPU().apply(func, target, False)
    assert sch is not None
    arrays = _inputs(*shape)
    got = _run(_schedule_kernel(mod, name, sch), target, arrays)
    np.testing.assert_allclose(got, _reference("plain", *arrays), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_rows_per_task_do_not_change_results(target, rows):
    shape = (1, 2, 16, 16)
    mod = _fused_module("causal", *shape)
    name, func = _attention_kernel(mod)
    sch = AttentionCPU(rows=rows)._rowwise(func, target)
    assert sch is not None
    arrays = _inputs(*shape)
    got = _run(_schedule_kernel(mod, name, sch), target, arrays)
    np.testing.assert_allclose(got, _reference("causal", *arrays), rtol=1e-4, atol=1e-5)


def test_vector_exp_is_within_two_ulp_and_keeps_nan(target):
    """The polynomial exp the row-block schedule substitutes for libm's (which does not vectorize)."""
    from tvm.script import tirx as T

    from tvm_autoglm.schedule_rules.attention import vector_exp

    n = 4096

    @T.prim_func(s_tir=True)
    def func(a: T.Buffer((n,), "float32"), b: T.Buffer((n,), "float32")):
        for i in T.vectorized(n):
            with T.sblock("e"):
                vi = T.axis.spatial(n, i)
                b[vi] = T.exp(a[vi])

    fast = vector_exp(func)
    assert "T.exp" not in fast.script() and "T.exp" in func.script()
    x = np.concatenate([np.linspace(-100.0, 10.0, n - 4), [np.nan, -np.inf, MIN, 0.0]]).astype("float32")
    lib = tvm.compile(tvm.IRModule({"main": fast.with_attr("global_symbol", "main")}), target).jit()
    out = tvm.runtime.tensor(np.zeros_like(x))
    lib["main"](tvm.runtime.tensor(x), out)
    got, ref = out.numpy(), np.exp(x.astype("float64"))
    normal = np.isfinite(x) & (ref > np.finfo(np.float32).tiny)
    np.testing.assert_allclose(got[normal], ref[normal], rtol=2.4e-7)  # 2 ulp
    assert np.all(np.abs(got[np.isfinite(x) & ~normal]) <= np.finfo(np.float32).tiny)  # underflow -> 0
    assert np.isnan(got[n - 4]) and got[n - 3] == 0.0 and got[n - 2] == 0.0 and got[n - 1] == 1.0


@pytest.mark.parametrize("form", ["plain", "sdpa", "causal"])
def test_default_rules_give_the_fused_kernel_to_attention_cpu(target, form):
    """No earlier rule in DEFAULT_RULES (Matmul, Reduction ...) claims it first, and the result lowers."""
    from tvm_autoglm.schedule_rules import default_schedule

    _, func = _attention_kernel(_fused_module(form, 1, 2, 16, 32))
    sch, rule = default_schedule(func, target)
    assert rule == "AttentionCPU"
    assert _parallel_loops(sch.mod["main"]) == 1  # the row-block schedule, not the per-block fallback
