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


# --- symbolic-row tiles (a dynamic build's seq): see schedule_rules/symbolic_rows.py ---


def _lowered(func, target):
    """``func`` through TIR lowering up to vectorization (what LLVM then sees), no codegen."""
    from tvm import s_tir

    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main").with_attr("target", target)})
    return tvm.ir.transform.Sequential([
        s_tir.transform.LowerInitBlock(), s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerMatchBuffer(), s_tir.transform.LowerOpaqueBlock(), tirx.transform.FlattenBuffer(),
        tirx.transform.VectorizeLoop(True),
    ])(mod)["main"]


def walk(node, kind):
    """Every node of type ``kind`` below ``node`` (post order)."""
    import tvm_ffi

    found = []
    tvm_ffi.structural_walk(node, (kind, found.append), order="post")
    return found


def _has_if(node) -> bool:
    calls = [c for c in walk(node, tvm.ir.expr.Call) if str(getattr(c.op, "name", "")).endswith("if_then_else")]
    return bool(walk(node, tirx.IfThenElse) or calls)


def _hot_loops(func):
    """Innermost serial loops over a constant extent whose every store is an update (``acc = acc + ..``)."""
    hot = []
    for loop in walk(func.body, tirx.For):
        if loop.kind != tirx.ForKind.SERIAL or not isinstance(loop.extent, tirx.IntImm):
            continue
        if any(inner.kind == tirx.ForKind.SERIAL for inner in walk(loop.body, tirx.For)):
            continue
        stores = walk(loop.body, tirx.BufferStore)
        if stores and all(isinstance(s.value, tirx.Add) and _reads(s.value, s.buffer) for s in stores):
            hot.append(loop)
    return hot


def _reads(expr, buffer) -> bool:
    from tvm.ir.expr import TensorLoad

    return any(load.source.same_as(buffer) for load in walk(expr, TensorLoad))


def symbolic_tile_structure(func, target, mr: int, width: int) -> None:
    """Full-tile + tail structure: the loop around the hot loop runs ceildiv(seq, mr) times
    (symbolic), the hot loop has no bounds check and only constant extents, the accumulator is
    one ``mr x width`` tile (not seq rows: it lives in registers)."""
    lowered = _lowered(func, target)
    hot = _hot_loops(lowered)
    assert hot, lowered.script()
    accumulators = set()
    for loop in hot:
        assert not _has_if(loop), loop
        assert all(isinstance(inner.extent, tirx.IntImm) for inner in walk(loop.body, tirx.For))
        unrolled = [int(inner.extent) for inner in walk(loop.body, tirx.For) if inner.kind == tirx.ForKind.UNROLLED]
        assert mr in unrolled, (mr, unrolled)
        accumulators |= {s.buffer.name for s in walk(loop.body, tirx.BufferStore)}
    allocs = {a.buffer.name: a.buffer.shape for a in walk(lowered.body, tirx.AllocBuffer)}
    for name in accumulators:
        shape = allocs[name]
        assert all(isinstance(d, tirx.IntImm) for d in shape), (name, shape)
        assert int(np.prod([int(d) for d in shape])) == mr * width, (name, shape)
    # the row-tile loop: ceildiv(seq, mr) iterations at every seq
    outer = [lp for lp in walk(lowered.body, tirx.For) if not isinstance(lp.extent, tirx.IntImm) and any(h.same_as(x) for h in hot for x in walk(lp.body, tirx.For))]
    assert outer, "no symbolic row-tile loop around the hot loop"
    from tvm.sym.analyzer import Analyzer
    from tvm.tirx.analysis import undefined_vars

    extent = outer[-1].extent
    (var,) = undefined_vars(extent)
    for rows in (1, mr - 1, mr, mr + 1, 101):
        analyzer = Analyzer()
        analyzer.bind(var, tirx.IntImm("int64", rows))
        value = analyzer.simplify(extent)
        assert int(value) == -(-rows // mr), (rows, value)
