"""Reduction rule: softmax / layer_norm / rms_norm / mean are parallel over rows,
vectorized (rfactor partial sums), and keep parity.

Tolerance rtol=atol=1e-4: rfactor sums ``lanes`` interleaved partial sums and
then adds them, a different association than numpy's pairwise summation, so
float32 results differ in the last bits (more for long rows).
"""

import numpy as np
import pytest
from sched_helpers import assert_parallel_vectorized, build_fused, prim_funcs, run
from tvm import relax

from tvm_autoglm.schedule_rules import Reduction, apply_default_schedules

RTOL = ATOL = 1e-4
rng = np.random.default_rng(1)
SHAPE = (2, 6, 64)
GAMMA = rng.standard_normal(64).astype("float32")
BETA = rng.standard_normal(64).astype("float32")


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _layer_norm(x):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-5) * GAMMA + BETA


def _rms_norm(x):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-5) * GAMMA


CASES = {
    "softmax": (lambda x: relax.op.nn.softmax(x, axis=-1), _softmax),
    "layer_norm": (
        lambda x: relax.op.nn.layer_norm(x, relax.const(GAMMA), relax.const(BETA), axes=[-1]),
        _layer_norm,
    ),
    "rms_norm": (lambda x: relax.op.nn.rms_norm(x, relax.const(GAMMA), axes=[-1]), _rms_norm),
    "mean": (lambda x: relax.op.mean(x, axis=[-1], keepdims=True), lambda x: x.mean(-1, keepdims=True)),
    "sum_two_axes": (lambda x: relax.op.sum(x, axis=[1, 2]), lambda x: x.sum((1, 2))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reduction_parity_and_schedule(name, target):
    make, ref = CASES[name]
    mod = build_fused(make, {"x": SHAPE})
    funcs = prim_funcs(mod)
    assert len(funcs) == 1
    (func,) = funcs.values()
    sch = Reduction().apply(func, target, False)
    assert sch is not None, f"Reduction rule declined {name}"
    assert_parallel_vectorized(sch.mod["main"])
    x = rng.standard_normal(SHAPE).astype("float32")
    got = run(apply_default_schedules(mod, target), target, [x])
    np.testing.assert_allclose(got, ref(x.astype("float64")).astype("float32"), rtol=RTOL, atol=ATOL)


def test_softmax_exp_not_recomputed(target):
    """The exp block feeds two consumers; it must stay one block (computed once)."""
    mod = build_fused(lambda x: relax.op.nn.softmax(x, axis=-1), {"x": SHAPE})
    (func,) = prim_funcs(mod).values()
    text = Reduction().apply(func, target, False).mod.script()
    assert text.count("T.exp(") == 1
