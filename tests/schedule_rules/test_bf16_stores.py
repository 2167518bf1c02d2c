"""serialize_bf16_constant_stores: a vectorized loop storing a bf16 constant (TVM 0.27's
BF16StorageLegalize cannot lower it) becomes serial; every other loop keeps its kind."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from sched_helpers import loop_kinds
from tvm import tirx
from tvm.script import tirx as T

from tvm_autoglm.schedule_rules.bf16_stores import serialize_bf16_constant_stores
from tvm_autoglm.targets import load_target


def _fill(dtype: str):
    @T.prim_func(s_tir=True)
    def fill(b: T.Buffer((24,), dtype)):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for i in T.serial(3):
            for j in T.vectorized(8):
                with T.sblock("init"):
                    vi = T.axis.spatial(24, i * 8 + j)
                    b[vi] = T.Cast(dtype, T.float32(-3.0))

    return fill


@T.prim_func(s_tir=True)
def _running_max(a: T.Buffer((24,), "bfloat16"), b: T.Buffer((24,), "bfloat16")):
    T.func_attr({"global_symbol": "main", "tirx.noalias": True})
    for i in T.serial(3):
        for j in T.vectorized(8):
            with T.sblock("update"):
                vi = T.axis.spatial(24, i * 8 + j)
                b[vi] = T.max(b[vi], a[vi])


@pytest.fixture(scope="module")
def avx2():
    return load_target("cpu-x86-avx2").tvm_target()


def _compile(func, target):
    return tvm.compile(tvm.IRModule({"main": func}), target)


def test_vectorized_bf16_constant_store_is_made_serial_and_runs(avx2):
    fill = _fill("bfloat16")
    with pytest.raises(Exception, match="dtype mismatch on BufferStore"):  # the TVM bug this works around
        _compile(fill, avx2)
    fixed = serialize_bf16_constant_stores(fill)
    assert tirx.ForKind.VECTORIZED not in loop_kinds(fixed) and loop_kinds(fixed).count(tirx.ForKind.SERIAL) == 2
    out = tvm.runtime.empty((24,), "bfloat16")
    _compile(fixed, avx2)["main"](out)
    # -3.0 is exact in bf16; read the raw bits back as float32 (bf16 is the top half of an fp32)
    bits = out.numpy().view("uint16").astype("uint32") << 16
    np.testing.assert_array_equal(bits.view("float32"), np.full(24, -3.0, dtype="float32"))


@pytest.mark.parametrize("func", [_fill("float32"), _running_max], ids=["fp32-constant", "bf16-computed"])
def test_other_vector_loops_are_left_alone(func, avx2):
    assert serialize_bf16_constant_stores(func).same_as(func)
    assert tirx.ForKind.VECTORIZED in loop_kinds(func)
    _compile(func, avx2)  # both lower as they are: the rewrite is needed for bf16 constants only
