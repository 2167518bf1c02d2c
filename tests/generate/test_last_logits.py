"""generate/last_logits.py: prefill's LM head on the prompt's last row only; declines what it cannot prove.

Structural: the rewritten function against a hand-built Expected, run against float64 numpy
at every last index; one negative test per rejection branch (the function comes back
unchanged with the reason). End to end, the compiled generators' greedy tokens and logits
against onnxruntime (tests/generate/test_generate_compiled.py) run through the rewrite, and
the manifest says so (below).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_autoglm.generate.last_logits import LAST_INDEX_INPUT, take_last_row

CHUNK, HIDDEN, VOCAB = 6, 8, 10


def _prefill(head: str = "matmul", logits_read: bool = False, matmul_read: bool = False, x_shape=(1, CHUNK, HIDDEN),
             weight_rank: int = 2, bias_shape=(VOCAB,), tuple_out: bool = True):
    """A prefill-shaped function: ``x -> tanh -> LM head -> (logits, other)``; the flags build each rejection case."""
    rng = np.random.default_rng(0)
    w_shape = (HIDDEN, VOCAB) if weight_rank == 2 else (1, HIDDEN, VOCAB)
    w_np = rng.standard_normal(w_shape).astype("float32")
    b_np = rng.standard_normal(bias_shape).astype("float32")
    w, b = relax.const(w_np), relax.const(b_np)
    x = relax.Var("x", relax.TensorType(list(x_shape), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("prefill", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.tanh(x))
            if head == "not_matmul":
                logits = bb.emit_output(relax.op.multiply(h, relax.const(2.0, "float32")))
                extra = h
            else:
                m = bb.emit(relax.op.matmul(h, w)) if head in ("matmul_add", "add_no_matmul") else None
                if head == "matmul":
                    logits = bb.emit_output(relax.op.matmul(h, w))
                elif head == "add_no_matmul":
                    logits = bb.emit_output(relax.op.add(relax.op.tanh(m), b))
                else:
                    logits = bb.emit_output(relax.op.add(m, b))
                extra = m if matmul_read else h
            if logits_read:
                extra = logits
            other = bb.emit_output(relax.op.sum(extra))
        bb.emit_func_output(relax.Tuple([logits, other]) if tuple_out else logits)
    return bb.get(), (w_np, b_np)


def _run(mod, func, *args):
    ex = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm[func](*[tvm.runtime.tensor(a) for a in args])
    return [o.numpy() for o in out] if isinstance(out, (list, tuple)) or hasattr(out, "__len__") else [out.numpy()]


@pytest.mark.parametrize("head", ["matmul", "matmul_add"])
def test_rewrite_matches_expected_and_float64(head):
    mod, (w_np, b_np) = _prefill(head)
    before = mod["prefill"]
    out, reason = take_last_row(mod, "prefill", 0)
    assert reason is None
    func = out["prefill"]
    assert [p.name for p in func.params] == ["x", LAST_INDEX_INPUT]
    assert [int(d) for d in func.ret_ty.fields[0].shape] == [1, 1, VOCAB]  # one row of logits

    # Expected: the same function with take(tanh(x), last, axis=1) feeding the LM head
    w, b = None, None
    for block in before.body.blocks:
        for binding in block.bindings:
            if isinstance(binding.value, relax.Call) and binding.value.op.name == "relax.matmul":
                w = binding.value.args[1]
            if isinstance(binding.value, relax.Call) and binding.value.op.name == "relax.add":
                b = binding.value.args[1]
    x = relax.Var("x", relax.TensorType([1, CHUNK, HIDDEN], "float32"))
    last = relax.Var(LAST_INDEX_INPUT, relax.TensorType([1], "int64"))
    bb = relax.BlockBuilder()
    with bb.function("prefill", [x, last]):
        with bb.dataflow():
            h = bb.emit(relax.op.tanh(x))
            row = bb.emit(relax.op.take(h, last, axis=1))
            if head == "matmul":
                logits = bb.emit_output(relax.op.matmul(row, w))
            else:
                m = bb.emit(relax.op.matmul(row, w))
                logits = bb.emit_output(relax.op.add(m, b))
            other = bb.emit_output(relax.op.sum(h))
        bb.emit_func_output(relax.Tuple([logits, other]))
    tvm.ir.assert_structural_equal(func, bb.get()["prefill"], map_free_vars=True)

    # and it computes the chosen row of the original logits (float64 numpy of the same weights)
    rng = np.random.default_rng(1)
    xv = rng.standard_normal((1, CHUNK, HIDDEN)).astype("float32")
    full = np.tanh(xv.astype(np.float64)) @ w_np.astype(np.float64)
    if head == "matmul_add":
        full = full + b_np
    for index in (0, 3, CHUNK - 1):
        got = _run(out, "prefill", xv, np.array([index], np.int64))
        np.testing.assert_allclose(got[0][0, 0], full[0, index], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[1], np.tanh(xv.astype(np.float64)).sum(), rtol=1e-5)  # untouched output


@pytest.mark.parametrize("kwargs, reason", [
    (dict(tuple_out=False), "returns no tuple with the logits"),
    (dict(logits_read=True), "read inside prefill"),
    (dict(head="not_matmul"), "not an LM-head matmul"),
    (dict(head="add_no_matmul"), "add of no matmul"),
    (dict(head="matmul_add", bias_shape=(CHUNK, VOCAB)), "bias is not a vector"),
    (dict(head="matmul_add", matmul_read=True), "matmul is read elsewhere"),
    (dict(x_shape=(2, CHUNK, HIDDEN)), "not [1, chunk, hidden]"),
    (dict(x_shape=(CHUNK, HIDDEN)), "not [1, chunk, hidden]"),
    (dict(weight_rank=3), "weight is not 2-D"),
])
def test_declines_what_it_cannot_prove(kwargs, reason):
    mod, _ = _prefill(**kwargs)
    out, why = take_last_row(mod, "prefill", 0)
    assert why is not None and reason in why
    tvm.ir.assert_structural_equal(out["prefill"], mod["prefill"])


def test_logits_index_out_of_range_declines():
    mod, _ = _prefill()
    out, why = take_last_row(mod, "prefill", 5)
    assert "returns no tuple with the logits" in why and out.same_as(mod)


@pytest.mark.parametrize("arch", ["gpt-neox", "gpt2", "llama"])
def test_zoo_generators_compute_one_prefill_row(arch, generator):
    info = generator(arch).manifest["generator"]
    assert info["prefill_logits"] == "last" and "prefill_logits_why_all" not in info


@pytest.mark.parametrize("chunk", [1, 5, 16, 100, 127, 128, 500])
def test_prefill_key_count_is_a_whole_number_of_vectors(chunk):
    """Prefill attends over dummy slots + chunk keys: at least one slot, and a multiple of 16 keys in all (the
    attention rule's Q.K^T vectorizes over the keys only then), never a whole vector of slots more than needed."""
    from tvm_autoglm.generate.build import prefill_dummy_slots

    slots = prefill_dummy_slots(chunk)
    assert 1 <= slots <= 16 and (slots + chunk) % 16 == 0
