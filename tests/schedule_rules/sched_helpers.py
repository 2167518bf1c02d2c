"""Helpers: tiny Relax models through the 'zero' pipeline, scheduled and run."""

from __future__ import annotations

import numpy as np

import tvm
from tvm import relax, tirx


def build_fused(make_body, inputs: dict[str, tuple], before_fusion=None) -> tvm.IRModule:
    """Relax function of ``make_body(*vars)`` lowered by the 'zero' pipeline (FuseOps, FuseTIR),
    after ``before_fusion`` (a pass, e.g. fuse_epilogue) when given."""
    bb = relax.BlockBuilder()
    params = [relax.Var(name, relax.TensorType(shape, "float32")) for name, shape in inputs.items()]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(make_body(*params))
        bb.emit_func_output(out)
    mod = bb.get()
    if before_fusion is not None:
        mod = before_fusion(mod)
    return relax.get_pipeline("zero")(mod)


def run(mod: tvm.IRModule, target, arrays: list[np.ndarray]) -> np.ndarray:
    ex = tvm.compile(mod, target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def prim_funcs(mod: tvm.IRModule) -> dict[str, tirx.PrimFunc]:
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}


def loop_kinds(func: tirx.PrimFunc) -> list:
    """ForKind of every loop in the function body."""
    kinds = []

    def _visit(node):
        if isinstance(node, tirx.For):
            kinds.append(node.kind)

    import tvm_ffi

    tvm_ffi.structural_walk(func.body, (tirx.For, _visit), order="post")
    return kinds


def assert_parallel_vectorized(func: tirx.PrimFunc, need_vector: bool = True) -> None:
    kinds = loop_kinds(func)
    assert tirx.ForKind.PARALLEL in kinds, f"no parallel loop: {kinds}"
    if need_vector:
        assert tirx.ForKind.VECTORIZED in kinds, f"no vectorized loop: {kinds}"



def workspace_allocations(lib) -> list[int]:
    """Byte sizes of the TVMBackendAllocWorkspace calls in a compiled kernel's LLVM IR.

    A tile buffer in any scope but "global", or over 1 KiB, is lowered to a
    workspace alloc/free pair instead of a stack array; inside a parallel loop
    that is a runtime call pair per tile, and the accumulators cannot live in
    registers. Large buffers (a packed panel, a materialized operand) belong there.
    """
    import re

    return [int(n) for n in re.findall(r"call ptr %[\w.]+\(i32 [^,]+, i32 [^,]+, i64 (\d+)", lib.mod.inspect_source("ll"))]
