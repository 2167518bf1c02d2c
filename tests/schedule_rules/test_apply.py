"""apply_default_schedules: copies its input, skips scheduled kernels, survives
kernels and rules it does not understand."""

import numpy as np
import pytest
import tvm
from sched_helpers import build_fused, prim_funcs, run
from tvm import relax
from tvm.script import tirx as T

from tvm_autoglm.schedule_rules import apply_default_schedules, schedule_func

rng = np.random.default_rng(3)


def _bert_block():
    w = rng.standard_normal((32, 48)).astype("float32")
    return build_fused(
        lambda x: relax.op.nn.softmax(relax.op.nn.gelu(relax.op.matmul(x, relax.const(w))), axis=-1),
        {"x": (1, 8, 32)},
    ), w


def test_input_module_not_mutated(target):
    mod, _ = _bert_block()
    before = {n: f.script() for n, f in prim_funcs(mod).items()}
    out = apply_default_schedules(mod, target)
    assert out is not mod
    assert {n: f.script() for n, f in prim_funcs(mod).items()} == before
    assert all("tirx.is_scheduled" not in (f.attrs or {}) for f in prim_funcs(mod).values())
    assert all(f.attrs["tirx.is_scheduled"] for f in prim_funcs(out).values())


def test_already_scheduled_kernels_left_alone(target):
    mod, _ = _bert_block()
    name, func = next(iter(prim_funcs(mod).items()))
    mod[name] = func.with_attr("tirx.is_scheduled", True)
    out = apply_default_schedules(mod, target)
    assert out[name].script() == mod[name].script()


def test_non_cpu_target_is_a_copy():
    mod, _ = _bert_block()
    out = apply_default_schedules(mod, tvm.target.Target({"kind": "cuda", "arch": "sm_80"}))
    assert out is not mod
    assert all("tirx.is_scheduled" not in (f.attrs or {}) for f in prim_funcs(out).values())


@T.prim_func(private=True, s_tir=True)
def _cumsum(a: T.Buffer((T.int64(16),), "float32"), b: T.Buffer((T.int64(16),), "float32")):
    # A scan: loop-carried dependency through the output; no rule claims it.
    for i in range(T.int64(16)):
        with T.sblock("scan"):
            vi = T.axis.opaque(T.int64(16), i)
            T.reads(a[vi], b[vi - T.int64(1)])
            T.writes(b[vi])
            b[vi] = T.if_then_else(vi == T.int64(0), a[vi], b[vi - T.int64(1)] + a[vi])


def test_unknown_kernel_still_compiles(target):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((16,), "float32"))
    with bb.function("main", [x]):
        gv = bb.add_func(_cumsum, "cumsum")
        with bb.dataflow():
            out = bb.emit_output(relax.call_tir(gv, (x,), relax.TensorType((16,), "float32")))
        bb.emit_func_output(out)
    mod = bb.get()
    assert schedule_func(mod["cumsum"], target) == (None, None)
    scheduled = apply_default_schedules(mod, target)
    assert "tirx.is_scheduled" not in (scheduled["cumsum"].attrs or {})
    a = rng.standard_normal(16).astype("float32")
    np.testing.assert_allclose(run(scheduled, target, [a]), np.cumsum(a), rtol=1e-5, atol=1e-5)


class _Broken:
    def apply(self, func, target, tunable):
        raise RuntimeError("rule bug")


def test_raising_rule_falls_through_with_a_warning_naming_kernel_and_rule(target, monkeypatch):
    from tvm_autoglm.errors import ScheduleRuleWarning

    monkeypatch.delenv("AUTOGLM_STRICT_RULES", raising=False)
    mod, w = _bert_block()
    rules = (_Broken(),) + __import__("tvm_autoglm.schedule_rules", fromlist=["DEFAULT_RULES"]).DEFAULT_RULES
    with pytest.warns(ScheduleRuleWarning) as caught:
        out = apply_default_schedules(mod, target, rules=rules)
    kernels = set(prim_funcs(mod))
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(kernels), messages
    for name in kernels:
        assert any(f"_Broken raised on kernel {name}: RuntimeError: rule bug" in m for m in messages), (name, messages)
    x = rng.standard_normal((1, 8, 32)).astype("float32")
    pre = x.astype("float64") @ w
    from math import erf, sqrt

    g = 0.5 * pre * (1 + np.vectorize(erf)(pre / sqrt(2)))
    e = np.exp(g - g.max(-1, keepdims=True))
    np.testing.assert_allclose(run(out, target, [x]), e / e.sum(-1, keepdims=True), rtol=1e-4, atol=1e-5)


def test_raising_rule_fails_the_build_under_strict_rules(target, monkeypatch):
    """The test suite's setting (conftest): a rule bug is an error, not a quiet slower schedule."""
    monkeypatch.setenv("AUTOGLM_STRICT_RULES", "1")
    mod, _ = _bert_block()
    with pytest.raises(RuntimeError, match=r"schedule rule _Broken raised on kernel \w+: RuntimeError: rule bug"):
        apply_default_schedules(mod, target, rules=(_Broken(),))


def test_schedule_that_does_not_lower_falls_through(target, monkeypatch):
    import tvm_autoglm.schedule_rules as rules
    from tvm_autoglm.errors import ScheduleRuleWarning

    monkeypatch.delenv("AUTOGLM_STRICT_RULES", raising=False)
    monkeypatch.setattr(rules, "_lowers", lambda func, tgt: False)
    mod, _ = _bert_block()
    with pytest.warns(ScheduleRuleWarning, match="made a schedule that does not lower on kernel"):
        out = apply_default_schedules(mod, target)
    # Every candidate rejected -> kernels left as they were, and the module still runs.
    assert all("tirx.is_scheduled" not in (f.attrs or {}) for f in prim_funcs(out).values())
    x = rng.standard_normal((1, 8, 32)).astype("float32")
    assert np.isfinite(run(out, target, [x])).all()
