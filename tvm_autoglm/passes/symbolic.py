"""What our passes need to know about symbolic (dynamic) dims.

A dynamic build (``--input-shape input_ids:1x1..512``) imports with ``tirx.Var`` dims; each of
our passes either handles those or declines. Two helpers they share:

* :func:`has_symbolic_shape` / :func:`static_shape`: the test a pass uses to decline a match
  whose shape it would have to read as numbers.
* :func:`inline_shape_params`: ``FuseOpsByPattern`` lifts every non-constant argument of a grouped
  call into a parameter of the group, and a reshape's *symbolic* target shape (``R.shape([1,
  seq, 64])``) is not a constant; ``LegalizeOps`` then refuses the reshape (its target must be a
  literal ``ShapeExpr``). The parameter's type still carries the exact shape, in symbols the
  group's tensor parameters define, so the body can use the literal again.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..ir_utils import copy_module, static_shape


def is_static_dim(dim) -> bool:
    return isinstance(dim, int) or isinstance(dim, tvm.tirx.IntImm)


def has_symbolic_shape(expr) -> bool:
    """True when the tensor's shape is known but has a symbolic dim (or is unknown)."""
    return static_shape(expr) is None


def module_is_dynamic(mod: tvm.IRModule) -> bool:
    """Whether ``main`` takes an input with a symbolic dim."""
    if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
        return False
    return any(isinstance(p.ty, relax.TensorType) and has_symbolic_shape(p) for p in mod["main"].params)


def _shape_params(func: relax.Function) -> dict:
    """Params of Shape type with known values whose symbols the tensor params define."""
    defined = set()
    for param in func.params:
        ty = param.ty
        if isinstance(ty, relax.TensorType) and ty.shape is not None and hasattr(ty.shape, "values"):
            for dim in ty.shape.values:
                if isinstance(dim, tvm.tirx.Var):
                    defined.add(dim.name)
    found = {}
    for param in func.params:
        ty = param.ty
        if isinstance(ty, relax.ShapeType) and ty.values is not None:
            free = {v.name for d in ty.values for v in _vars_of(d)}
            if free <= defined:
                found[param] = relax.ShapeExpr(list(ty.values))
    return found


def _vars_of(expr):
    from tvm.tirx.analysis import undefined_vars

    return list(undefined_vars(expr))


@relax.expr_functor.mutator
class _ReplaceVars(relax.PyExprMutator):
    def __init__(self, mapping):
        super().__init__()
        self.mapping = mapping

    def visit_var_(self, var):
        for old, new in self.mapping.items():
            if var.same_as(old):
                return new
        return var


def inline_shape_params(mod: tvm.IRModule) -> tvm.IRModule:
    """In every fused/composite group, use the literal shape of each lifted ``R.Shape`` parameter."""
    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function) or not func.attrs or not ("Primitive" in func.attrs or "Composite" in func.attrs):
            continue
        mapping = _shape_params(func)
        if not mapping:
            continue
        body = _ReplaceVars(mapping).visit_expr(func.body)
        updates[gv] = relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)
    if not updates:
        return mod
    out = copy_module(mod)
    for gv, func in updates.items():
        out[gv] = func
    return out
