"""The guard: a CUDA kernel without a blockIdx/threadIdx binding is refused, by name."""

from __future__ import annotations

import pytest
import tvm
from tvm.script import tirx as T

from tvm_autoglm.errors import CompileError
from tvm_autoglm.gpu import apply_gpu_default_schedules, is_thread_bound, unbound_kernels
from tvm_autoglm.targets import load_target


@T.prim_func(private=True, s_tir=True)
def add_one(a: T.Buffer((64, 64), "float32"), b: T.Buffer((64, 64), "float32")):
    for i, j in T.grid(64, 64):
        with T.sblock("add"):
            vi, vj = T.axis.remap("SS", [i, j])
            b[vi, vj] = a[vi, vj] + T.float32(1)


def _module(**funcs) -> tvm.IRModule:
    return tvm.IRModule({tvm.ir.GlobalVar(name): func for name, func in funcs.items()})


def test_default_rules_bind_a_plain_kernel():
    target = load_target("gpu-ampere").tvm_target()
    assert not is_thread_bound(add_one)
    scheduled = apply_gpu_default_schedules(_module(add_one=add_one), target)
    assert unbound_kernels(scheduled) == []
    assert is_thread_bound(scheduled["add_one"])


def test_a_kernel_marked_scheduled_but_unbound_is_refused_by_name():
    """What a bad tuning record would produce: the rules skip it, the guard must not."""
    target = load_target("gpu-hopper").tvm_target()
    bogus = add_one.with_attr("tirx.is_scheduled", True)
    with pytest.raises(CompileError, match=r"1 kernel\(s\) are not bound to GPU threads on sm_90a .*: bogus_kernel"):
        apply_gpu_default_schedules(_module(bogus_kernel=bogus, fine=add_one), target)


def test_no_rule_matching_is_refused_naming_every_kernel():
    target = load_target("gpu-ampere").tvm_target()
    with pytest.raises(CompileError, match="2 kernel.*first, second"):
        apply_gpu_default_schedules(_module(first=add_one, second=add_one), target, rules=())


def test_a_rule_that_raises_is_skipped_not_fatal():
    """dlight rules assert on kernels they do not expect; the next rule must still get its turn."""
    from tvm.s_tir import dlight as dl

    class Exploding:
        def apply(self, func, target, tunable):
            raise AssertionError("unexpected block structure")

    target = load_target("gpu-ampere").tvm_target()
    scheduled = apply_gpu_default_schedules(_module(k=add_one), target, rules=(Exploding(), dl.gpu.Fallback()))
    assert is_thread_bound(scheduled["k"])


def test_input_module_is_not_mutated():
    target = load_target("gpu-ampere").tvm_target()
    mod = _module(add_one=add_one)
    apply_gpu_default_schedules(mod, target)
    assert not is_thread_bound(mod["add_one"])


@T.prim_func(private=True, s_tir=True)
def transpose_then_gather(
    lv10: T.Buffer((T.int64(1), T.int64(128)), "bool"),
    B: T.Buffer((T.int64(1), T.int64(1), T.int64(1), T.int64(128), T.int64(2)), "int64"),
    T_gather_nd: T.Buffer((T.int64(1), T.int64(1), T.int64(1), T.int64(128)), "bool"),
):
    """ONNX GatherND as TVM's frontend emits it (from the zoo's bert): transpose the index tuples, then gather."""
    T.func_attr({"op_pattern": 8, "tirx.noalias": True})
    T_transpose = T.sblock_alloc_buffer((T.int64(2), T.int64(1), T.int64(1), T.int64(1), T.int64(128)), "int64")
    for ax0, ax1, ax2, ax3, ax4 in T.grid(T.int64(2), T.int64(1), T.int64(1), T.int64(1), T.int64(128)):
        with T.sblock("T_transpose"):
            v_ax0, v_ax1, v_ax2, v_ax3, v_ax4 = T.axis.remap("SSSSS", [ax0, ax1, ax2, ax3, ax4])
            T.reads(B[v_ax1, v_ax2, v_ax3, v_ax4, v_ax0])
            T.writes(T_transpose[v_ax0, v_ax1, v_ax2, v_ax3, v_ax4])
            T_transpose[v_ax0, v_ax1, v_ax2, v_ax3, v_ax4] = B[v_ax1, v_ax2, v_ax3, v_ax4, v_ax0]
    for ax0, ax1, ax2, ax3 in T.grid(T.int64(1), T.int64(1), T.int64(1), T.int64(128)):
        with T.sblock("T_gather_nd"):
            v_ax0, v_ax1, v_ax2, v_ax3 = T.axis.remap("SSSS", [ax0, ax1, ax2, ax3])
            T.reads(
                lv10[T_transpose[T.int64(0), v_ax0, v_ax1, v_ax2, v_ax3], T_transpose[T.int64(1), v_ax0, v_ax1, v_ax2, v_ax3]],
                T_transpose[T.int64(0) : T.int64(2), v_ax0, v_ax1, v_ax2, v_ax3],
            )
            T.writes(T_gather_nd[v_ax0, v_ax1, v_ax2, v_ax3])
            T_gather_nd[v_ax0, v_ax1, v_ax2, v_ax3] = lv10[
                T_transpose[T.int64(0), v_ax0, v_ax1, v_ax2, v_ax3], T_transpose[T.int64(1), v_ax0, v_ax1, v_ax2, v_ax3]
            ]


def test_a_kernel_bound_in_one_block_only_is_not_bound():
    """dlight's Transpose binds the transpose and leaves the gather on the host (bert-large
    segfaulted on an H200 that way); the guard must see it and the rules must do better."""
    from tvm.s_tir import dlight as dl

    from tvm_autoglm.gpu.schedules import unbound_blocks

    target = load_target("gpu-hopper").tvm_target()
    partial = dl.gpu.Transpose().apply(transpose_then_gather, target, False)
    assert partial is not None
    partial = partial.mod["main"]
    assert unbound_blocks(partial) == ["T_gather_nd"]
    assert not is_thread_bound(partial)
    with pytest.raises(CompileError, match="1 kernel.*: gather_nd"):
        apply_gpu_default_schedules(_module(gather_nd=partial.with_attr("tirx.is_scheduled", True)), target)
    scheduled = apply_gpu_default_schedules(_module(gather_nd=transpose_then_gather), target)
    assert unbound_blocks(scheduled["gather_nd"]) == []
    assert unbound_kernels(scheduled) == []
