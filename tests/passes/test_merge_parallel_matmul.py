"""merge_parallel_matmul: Q/K/V projections sharing an input -> one matmul + split."""

from __future__ import annotations

import numpy as np
import tvm
from onnx import helper
from passes_helpers import assert_parity, import_model, make_model, op_counts

from tvm_autoglm.passes.merge_parallel_matmul import merge_parallel_matmul

RNG = np.random.default_rng(0)


def _qkv(shared: bool = True):
    nodes, inits = [], {}
    for i, name in enumerate("qkv"):
        src = "x" if shared else f"x{i}"
        nodes += [helper.make_node("MatMul", [src, f"w{name}"], [f"m{name}"]), helper.make_node("Add", [f"m{name}", f"b{name}"], [name])]
        inits[f"w{name}"] = RNG.standard_normal((16, 16))
        inits[f"b{name}"] = RNG.standard_normal(16)
    inputs = {"x": [1, 8, 16]} if shared else {f"x{i}": [1, 8, 16] for i in range(3)}
    return make_model(nodes, inputs, {n: [1, 8, 16] for n in "qkv"}, inits)


def test_qkv_with_bias_merges():
    model = _qkv()
    before = import_model(model)
    assert op_counts(before)["matmul"] == 3
    mod = merge_parallel_matmul()(before)
    counts = op_counts(mod)
    assert counts["matmul"] == 1 and counts["split"] == 1 and counts["add"] == 1
    assert [p.name for p in mod["main"].params] == ["x"]  # the lifted weights are constants again
    assert_parity(mod, model, {"x": RNG.standard_normal((1, 8, 16)).astype("float32")})


def test_different_inputs_are_left_alone():
    model = _qkv(shared=False)
    before = import_model(model)
    mod = merge_parallel_matmul()(before)
    assert op_counts(mod)["matmul"] == 3
    tvm.ir.assert_structural_equal(mod, before)


# --- Before/Expected, tally, and one test per rejection branch --------------------------------

from passes_helpers import bind_constants  # noqa: E402
from tvm.script import ir as I  # noqa: E402
from tvm.script import relax as R  # noqa: E402

from tvm_autoglm.passes.tally import recording  # noqa: E402

NOT_MERGED = "not merged: no other matmul with a 2-D constant weight (and a compatible epilogue) reads the same input"


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 8, 16), "float32"), wq: R.Tensor((16, 16), "float32"), wk: R.Tensor((16, 8), "float32"),
             bq: R.Tensor((16,), "float32"), bk: R.Tensor((8,), "float32")):
        with R.dataflow():
            q = R.matmul(x, wq)
            qb = R.add(q, bq)
            k = R.matmul(x, wk)
            kb = R.add(k, bk)
            R.output(qb, kb)
        return (qb, kb)


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 8, 16), "float32"), w: R.Tensor((16, 24), "float32"), b: R.Tensor((24,), "float32")):
        with R.dataflow():
            mm = R.matmul(x, w, out_dtype="float32")
            biased = R.add(mm, b)
            parts = R.split(biased, indices_or_sections=[16], axis=2)
            qb = parts[0]
            kb = parts[1]
            R.output(qb, kb)
        return (qb, kb)


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return dict(wq=rng.standard_normal((16, 16)).astype("float32"), wk=rng.standard_normal((16, 8)).astype("float32"),
                bq=rng.standard_normal(16).astype("float32"), bk=rng.standard_normal(8).astype("float32"))


def _run(mod):
    with recording() as tally:
        after = merge_parallel_matmul()(mod)
    return after, tally


def test_structural_before_expected():
    a = _weights()
    after, tally = _run(bind_constants(Before, **a))
    # the merged weight and bias are the originals side by side, Q's columns first
    expected = bind_constants(Expected, w=np.concatenate([a["wq"], a["wk"]], axis=1), b=np.concatenate([a["bq"], a["bk"]]))
    tvm.ir.assert_structural_equal(after, expected)
    assert tally.rewrites == 1 and tally.declines == []


def test_qkv_counts_one_merge():
    _, tally = _run(import_model(_qkv()))
    assert tally.rewrites == 1 and tally.declines == []


def test_rejects_matmul_with_no_partner_and_names_it():
    """Branch (CombineParallelMatmul finds no group): each projection reads its own input."""
    before = import_model(_qkv(shared=False))
    after, tally = _run(before)
    tvm.ir.assert_structural_equal(after, before)
    matmuls = sorted(b.var.name for blk in before["main"].body.blocks for b in blk.bindings
                     if isinstance(b.value, tvm.relax.Call) and b.value.op.name == "relax.matmul")
    assert tally.rewrites == 0
    assert len(matmuls) == 3
    assert sorted(tally.declines) == sorted(f"matmul {n}: {NOT_MERGED}" for n in matmuls)


def test_rejects_3d_constant_weight():
    """Branch (_lift_weights): a constant weight that is not 2-D (a batched matmul) is not lifted."""

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((2, 8, 16), "float32"), w1: R.Tensor((2, 16, 4), "float32"), w2: R.Tensor((2, 16, 4), "float32")):
            with R.dataflow():
                a = R.matmul(x, w1)
                b = R.matmul(x, w2)
                R.output(a, b)
            return (a, b)

    rng = np.random.default_rng(1)
    mod = bind_constants(Mod, w1=rng.standard_normal((2, 16, 4)).astype("float32"), w2=rng.standard_normal((2, 16, 4)).astype("float32"))
    after, tally = _run(mod)
    tvm.ir.assert_structural_equal(after, mod)
    assert tally.declines == ["matmul a: weight is 3-D, only 2-D constant weights are merged",
                              "matmul b: weight is 3-D, only 2-D constant weights are merged"]


def test_weights_that_are_not_constants_are_not_candidates():
    """Branch (pattern): matmuls whose weights are parameters (activations) are left to the built-in pass, unchanged."""
    after, tally = _run(Before)
    tvm.ir.assert_structural_equal(after, Before)
    assert tally.rewrites == 0 and tally.declines == []


def test_mixed_constant_and_parameter_weights_are_left_alone():
    """Branch (bias lift): K's weight is a parameter, so its bias is not lifted and nothing merges."""
    a = _weights()
    del a["wk"]
    mod = bind_constants(Before, **a)
    after, tally = _run(mod)
    tvm.ir.assert_structural_equal(after, mod)
    assert tally.rewrites == 0 and tally.declines == [f"matmul q: {NOT_MERGED}"]


def test_2d_bias_stays_outside_the_merged_matmul():
    """Branch (bias lift): a bias that is not 1-D is not lifted; the matmuls still merge, that add stays separate."""

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((1, 8, 16), "float32"), wq: R.Tensor((16, 16), "float32"), wk: R.Tensor((16, 8), "float32"),
                 bq: R.Tensor((8, 16), "float32"), bk: R.Tensor((8,), "float32")):
            with R.dataflow():
                q = R.matmul(x, wq)
                qb = R.add(q, bq)
                k = R.matmul(x, wk)
                kb = R.add(k, bk)
                R.output(qb, kb)
            return (qb, kb)

    a = _weights()
    a["bq"] = np.random.default_rng(2).standard_normal((8, 16)).astype("float32")
    after, tally = _run(bind_constants(Mod, **a))
    assert tally.declines == ["matmul q: its bias is 2-D, not 1-D; the bias add stays outside the merged matmul"]
    assert op_counts(after)["matmul"] == 1 and op_counts(after)["add"] == 2
    x = np.random.default_rng(3).standard_normal((1, 8, 16)).astype("float32")
    from passes_helpers import run_tvm

    got = run_tvm(after, [x])
    want = [x.astype(np.float64) @ a["wq"] + a["bq"], x.astype(np.float64) @ a["wk"] + a["bk"]]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)  # float32 matmul over 16 terms vs float64
