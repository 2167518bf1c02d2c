"""ir_utils: the IR helpers every layer shares (one copy each, issue #21)."""

from __future__ import annotations

import pytest
import tvm
from tvm import relax, te, tirx

from tvm_autoglm import ir_utils


def _kernel(name: str = "double"):
    a = te.placeholder((4,), name="A")
    return te.create_prim_func([a, te.compute((4,), lambda i: a[i] * 2, name="B")]).with_attr("global_symbol", name)


def _module():
    """main calls one kernel through call_tir and adds: a Relax function plus a PrimFunc."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            gv = bb.add_func(_kernel(), "double")
            y = bb.emit(relax.call_tir(gv, [x], relax.TensorType((4,), "float32")))
            out = bb.emit_output(relax.op.add(y, y))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({}, False),
        ({"tirx.is_scheduled": True}, True),
        ({"tir.is_scheduled": True}, True),  # the pre-rename key: gpu.schedules' own copy missed it
        ({"tirx.is_scheduled": False}, False),
        ({"tirx.is_scheduled": 0, "tir.is_scheduled": 1}, True),
    ],
)
def test_is_scheduled_reads_either_key_set_to_one(attrs, expected):
    func = _kernel()
    for key, value in attrs.items():
        func = func.with_attr(key, value)
    assert ir_utils.is_scheduled(func) is expected


def test_copy_module_is_a_copy_the_caller_can_change():
    mod = _module()
    copy = ir_utils.copy_module(mod)
    gv = copy.get_global_var("double")
    copy[gv] = copy[gv].with_attr("tirx.is_scheduled", True)
    assert ir_utils.is_scheduled(copy[gv]) and not ir_utils.is_scheduled(mod[gv])
    assert set(gv.name_hint for gv in copy.functions) == set(gv.name_hint for gv in mod.functions)


def test_static_shape_only_when_every_dim_is_known():
    n = tirx.Var("n", "int64")
    assert ir_utils.static_shape(relax.Var("a", relax.TensorType((2, 3, 5), "float32"))) == (2, 3, 5)
    assert ir_utils.static_shape(relax.Var("s", relax.TensorType((), "float32"))) == ()
    assert ir_utils.static_shape(relax.Var("b", relax.TensorType((n, 3), "float32"))) is None
    assert ir_utils.static_shape(relax.Var("c", relax.TensorType(ndim=2, dtype="float32"))) is None
    assert ir_utils.static_shape(relax.Var("t", relax.TupleType([relax.TensorType((2,), "float32")]))) is None


def test_kernel_names_and_op_histogram():
    mod = _module()
    assert ir_utils.kernel_names(mod) == ["double"]
    assert ir_utils.op_histogram(mod) == {"add": 1, "call_tir": 1}
