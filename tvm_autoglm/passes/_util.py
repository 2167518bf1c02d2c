"""Small helpers shared by the rewrite passes (constant values, use counts).

Kept out of the registry's import walk (leading underscore) because it
registers nothing.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from ..ir_utils import copy_module


def const_value(expr) -> np.ndarray | None:
    """The numpy value of a relax.Constant, else None."""
    if isinstance(expr, Constant):
        return expr.value.numpy()
    return None


def scalar_value(expr) -> float | None:
    """The value of a constant holding a single element (any rank), else None."""
    value = const_value(expr)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))


def is_scalar(expr, target: float, rel: float = 1e-4) -> bool:
    """Whether ``expr`` is a one-element constant equal to ``target`` (relative tolerance).

    Exporters write constants like 1/sqrt(2) rounded to fp32 (or fp16), so an
    exact comparison would miss them; 1e-4 is still far tighter than any
    different idiom's constant.
    """
    value = scalar_value(expr)
    return value is not None and math.isclose(value, target, rel_tol=rel, abs_tol=1e-12)


def static_last_dim(expr) -> int | None:
    """The last dim of a tensor as an int, else None; leading dims may be symbolic (dynamic builds).

    A rewrite that normalizes over the last axis needs only that dim (its gamma/beta length): the
    rows before it can be any number, and a symbolic last dim is declined.
    """
    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None or not hasattr(sinfo.shape, "values"):
        return None
    values = list(sinfo.shape.values)
    if not values:
        return None
    try:
        return int(values[-1])
    except TypeError:
        return None


def ndim(expr) -> int:
    sinfo = expr.ty
    return sinfo.ndim if isinstance(sinfo, relax.TensorType) else -1


def dtype(expr) -> str:
    return str(expr.ty.dtype)


def is_last_axis(axes, rank: int) -> bool:
    """Whether ``axes`` (an attribute list) names exactly the last axis."""
    if axes is None or len(axes) != 1 or rank <= 0:
        return False
    return int(axes[0]) in (-1, rank - 1)


class UseCounts:
    """How often each bound variable of a function is used, and which var binds a value.

    dpl's ``rewrite_call`` hands the rewriter matched *values*; passes that
    must not duplicate work (a conv whose output feeds something else) need
    the binding var behind a value and how many consumers that var has.
    """

    def __init__(self, func: relax.Function):
        self.counts: dict[relax.Var, int] = {}
        self.var_of: dict[relax.Expr, relax.Var] = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                self.var_of[binding.value] = binding.var
        for block in func.body.blocks:
            for binding in block.bindings:
                self._count(binding.value)
        self._count(func.body.body)

    def _count(self, expr) -> None:
        if isinstance(expr, relax.Var):
            self.counts[expr] = self.counts.get(expr, 0) + 1
        elif isinstance(expr, relax.Call):
            for arg in expr.args:
                self._count(arg)
        elif isinstance(expr, relax.Tuple):
            for field in expr.fields:
                self._count(field)
        elif isinstance(expr, relax.TupleGetItem):
            self._count(expr.tuple_value)

    def uses(self, value: relax.Expr) -> int:
        var = value if isinstance(value, relax.Var) else self.var_of.get(value)
        if var is None:
            return 0
        return self.counts.get(var, 0)


def relax_functions(mod: tvm.IRModule):
    """(GlobalVar, Function) for every non-primitive Relax function in ``mod``."""
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        attrs = func.attrs
        if attrs is not None and ("Primitive" in attrs or "Composite" in attrs or "Codegen" in attrs):
            continue
        yield gv, func


def rewrite_module(mod: tvm.IRModule, rewrite_func) -> tvm.IRModule:
    """Apply ``rewrite_func(func) -> func`` to each graph-level function."""
    updates = {}
    for gv, func in relax_functions(mod):
        new = rewrite_func(func)
        if not new.same_as(func):
            updates[gv] = new
    if not updates:
        return mod
    mod = copy_module(mod)
    for gv, func in updates.items():
        mod[gv] = func
    return mod


def mutate_graph_functions(mod: tvm.IRModule, mutator: relax.PyExprMutator) -> tvm.IRModule:
    """Run ``mutator`` over every graph-level Relax function (not the Primitive ones FuseOps made) and return its module.

    The rewrite passes that replace ops with ``call_te`` kernels all walk the
    module this way; the mutator's own BlockBuilder collects the new PrimFuncs.
    """
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function) and not (func.attrs and "Primitive" in func.attrs):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()


def composite_count(mod: tvm.IRModule, name: str) -> int:
    """How many functions of ``mod`` are composite groups called ``name`` (FuseOpsByPattern output)."""
    return sum(1 for _, f in mod.functions.items() if f.attrs is not None and f.attrs.get("Composite") == name)


def ungrouped_bindings(mod: tvm.IRModule, op_names: tuple[str, ...]) -> set[str]:
    """Names of the vars bound to calls of ``op_names`` in the graph functions, i.e. outside any group."""
    names = set()
    for _, func in relax_functions(mod):
        for block in func.body.blocks:
            for binding in block.bindings:
                value = binding.value
                if isinstance(value, relax.Call) and getattr(value.op, "name", None) in op_names:
                    names.add(binding.var.name)
    return names
