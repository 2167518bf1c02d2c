"""Cancel and compose transposes; drop reshape chains.

Exporters emit ``Transpose`` pairs around ops that want a different axis
order (head split then ``K^T``: permute, reshape, permute), and ``Reshape``
chains; each one that survives is a kernel or, inside a fused group, a
strided copy. ``permute_dims(permute_dims(x, a), b)`` is one permute with the
composed axes and disappears when that is the identity; a permute of a
constant is folded by ``fold_constant`` already. Applied inside the fused
groups built at O2 too (they are where the layout chains ended up), which is
safe because the rewrite is local and exact.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from ..ir_utils import copy_module
from ._util import ndim
from .registry import register_pass
from .tally import current


def _axes(call, rank: int) -> list[int]:
    axes = call.attrs.axes
    if axes is None:
        return list(reversed(range(rank)))
    return [int(a) % rank for a in axes]


def _rewrite_func(func: relax.Function) -> relax.Function:
    tally = current()
    x = wildcard()
    inner = is_op("relax.permute_dims")(x)
    outer = is_op("relax.permute_dims")(inner)

    def compose(expr, m):
        rank = ndim(m[x])
        if rank < 0:
            return expr
        first, second = _axes(m[inner], rank), _axes(expr, rank)
        axes = [first[a] for a in second]
        tally.rewrote()
        if axes == list(range(rank)):
            return m[x]
        return relax.op.permute_dims(m[x], axes)

    func = rewrite_call(outer, compose, func)

    single = is_op("relax.permute_dims")(x)

    def identity(expr, m):
        rank = ndim(m[x])
        if rank < 0 or _axes(expr, rank) != list(range(rank)):
            return expr
        tally.rewrote()
        return m[x]

    return rewrite_call(single, identity, func)


@tvm.transform.module_pass(opt_level=0, name="AutoGLMEliminateTransposes")
def eliminate_transposes_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    out = copy_module(mod)
    changed = False
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function) or (func.attrs is not None and "Codegen" in func.attrs):
            continue
        new = _rewrite_func(func)
        if not new.same_as(func):
            out[gv] = new
            changed = True
    out = out if changed else mod
    reshaped = relax.transform.RemoveRedundantReshape()(out)
    # TVM's RemoveRedundantReshape does not count: each reshape it dropped is one rewrite
    current().rewrote(_reshape_count(out) - _reshape_count(reshaped))
    return reshaped


def _reshape_count(mod: tvm.IRModule) -> int:
    found = []
    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(
                func.body, lambda e: isinstance(e, relax.Call) and getattr(e.op, "name", None) == "relax.reshape" and found.append(e))
    return len(found)


@register_pass("eliminate_transposes")
def eliminate_transposes():
    """Compose/cancel permute_dims pairs, drop identity permutes and reshape chains."""
    return eliminate_transposes_pass
