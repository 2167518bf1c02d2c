"""Regression (difftest s0 i6, i18, i46, i106): a reduction over an axis of extent 1 followed by its consumer.

``normalize_prim_func`` drops the unit reduction loop, so the mean's block has an init
but no reduction axis and looked spatial to the Fallback rule, which then
reverse-compute-inlined ``x - mean`` into it: the update read the rewritten value as
its accumulator and computed ``x - (x + x)``. A decomposed LayerNorm over a width-1 last
axis gave NaN at O1 (exact zeros before the affine part in onnxruntime); the AttentionCPU
rule (through ``_common.try_inline``) did the same to softmax over a width-1 axis (attention
with one token): NaN.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from _onnx_builders import make_model
from helpers import ort_run

import tvm_autoglm

RTOL = ATOL = 1e-5  # float32, reductions of width 1..5


def _centered_model(shape, axis):
    """``(x - mean(x, axis)) / sqrt(mean((x - mean)^2) + eps) * w + b``, the torch opset<17 LayerNorm export."""
    width = shape[axis]
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in
             (("two", 2.0), ("eps", 1e-5), ("w", np.linspace(0.5, 1.5, width)), ("b", np.linspace(-1, 1, width)))]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[axis], keepdims=1),
        helper.make_node("Sub", ["x", "mean"], ["centered"]),
        helper.make_node("Pow", ["centered", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[axis], keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["centered", "std"], ["normed"]),
        helper.make_node("Mul", ["normed", "w"], ["scaled"]),
        helper.make_node("Add", ["scaled", "b"], ["y"]),
    ]
    return make_model(nodes, {"x": shape}, {"y": shape}, inits, name="unit_mean")


@pytest.mark.parametrize("shape", [[1, 4, 3, 1], [2, 5, 1], [7, 1]])
@pytest.mark.parametrize("opt_level", [1, 2])
def test_layer_norm_over_a_width_one_axis_matches_onnxruntime(shape, opt_level):
    model = _centered_model(shape, -1)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 2
    expected = ort_run(model, {"x": x})
    actual = tvm_autoglm.compile(model, target="cpu", opt_level=opt_level).run(x=x)
    np.testing.assert_allclose(actual["y"], expected["y"], rtol=RTOL, atol=ATOL)


def test_fallback_keeps_the_consumer_of_a_unit_reduction_separate():
    """Structural: the Fallback rule's schedule of ``x - mean(x)`` over a width-1 axis keeps the subtract block."""
    from tvm_autoglm.pipeline import build_relax
    from tvm_autoglm.schedule_rules import default_schedule

    build = build_relax(_centered_model([1, 4, 3, 1], -1), "cpu", 1)
    name = next(n for n in build.kernels if "mean" in n and "subtract" in n)
    sch, rule = default_schedule(build.mod[name], build.target.tvm_target())
    assert rule == "Fallback"
    reduction = sch.get(sch.get_sblock("x_red"))
    assert reduction.init is not None
    # the kernel's output (x - mean) is written by a later block, not by the reduction itself
    assert [w.source.name for w in reduction.writes] == ["x_red"], reduction


@pytest.mark.parametrize("shape", [[2, 4, 1], [1, 4, 1, 1], [3, 1]])
def test_softmax_over_a_width_one_axis_matches_onnxruntime(shape):
    model = make_model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], {"x": shape}, {"y": shape}, name="unit_softmax")
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    actual = tvm_autoglm.compile(model, target="cpu", opt_level=1).run(x=x)
    np.testing.assert_allclose(actual["y"], ort_run(model, {"x": x})["y"], rtol=RTOL, atol=ATOL)  # all ones
