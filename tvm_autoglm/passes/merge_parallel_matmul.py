"""Merge parallel matmuls that share an input (Q/K/V projections) into one.

Wraps ``relax.transform.CombineParallelMatmul`` (one matmul on the
concatenated weights, bias adds and activations merged likewise, then a
split). The built-in only fires when weights and biases are function
parameters; after import ours are constants, so we lift every 2-D constant
matmul RHS and its 1-D constant bias into temporary parameters, combine,
bind the constants back and fold the concatenation. One wide matmul reads
the shared input once and gives the scheduler a bigger N to tile.

Runs (passes/plan.py) before ``fuse_epilogue`` groups each projection with
its layout tail, after which no parallel matmul would be left in ``main``.
(The README's 60-69 "QKV merge" slot assumed grouping happened later.)
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from ..ir_utils import copy_module
from ._util import UseCounts, relax_functions
from .registry import register_pass
from .tally import binding_name, current


def _lift_weights(func: relax.Function, tally, names: dict):
    """``func`` with each 2-D constant matmul RHS turned into an extra parameter.

    ``names`` gets the lifted weight var -> the name of the matmul that reads it, so that a
    weight CombineParallelMatmul leaves alone can be reported by its matmul.
    """
    lifted: dict = {}
    var_of = UseCounts(func).var_of
    lhs, rhs = wildcard(), is_const()
    pattern = is_op("relax.matmul")(lhs, rhs)

    def rewriter(expr, m):
        const = m[rhs]
        if const.ty.ndim != 2:
            tally.declined(f"{binding_name(expr, var_of)}: weight is {const.ty.ndim}-D, only 2-D constant weights are merged")
            return expr
        var = relax.Var(f"autoglm_w{len(lifted)}", const.ty)
        lifted[var] = const
        names[var] = binding_name(expr, var_of)
        return relax.op.matmul(m[lhs], var, out_dtype=expr.attrs.out_dtype)

    body = rewrite_call(pattern, rewriter, func)
    if not lifted:
        return func, {}
    # a constant bias also blocks the built-in; lift the bias of a lifted matmul
    mm = is_op("relax.matmul")(wildcard(), wildcard())
    bias = is_const()
    biased = is_op("relax.add")(mm, bias)

    def lift_bias(expr, m):
        const = m[bias]
        weight = m[mm].args[1]
        if not any(weight.same_as(v) for v in lifted):
            return expr  # not a merge candidate (its weight was not lifted): nothing to explain
        if const.ty.ndim != 1:
            tally.declined(f"{names[weight]}: its bias is {const.ty.ndim}-D, not 1-D; the bias add stays outside the merged matmul")
            return expr
        var = relax.Var(f"autoglm_b{len(lifted)}", const.ty)
        lifted[var] = const
        return relax.op.add(m[mm], var)

    body = rewrite_call(biased, lift_bias, body)
    if not lifted:
        return func, {}
    new = relax.Function(list(func.params) + list(lifted), body.body, func.ret_ty, func.is_pure, func.attrs)
    return new, lifted


@tvm.transform.module_pass(opt_level=0, name="AutoGLMMergeParallelMatmul")
def merge_parallel_matmul_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    tally = current()
    out = copy_module(mod)
    for gv, func in list(relax_functions(mod)):
        names: dict = {}
        lifted_func, lifted = _lift_weights(func, tally, names)
        if not lifted:
            continue
        single = tvm.IRModule({gv: lifted_func})
        combined = relax.transform.CombineParallelMatmul()(single)
        combined_func = combined[gv]
        # each merged group ends in one split of the wide result
        tally.rewrote(_count_calls(combined_func, "relax.split") - _count_calls(lifted_func, "relax.split"))
        for var in _weights_still_alone(combined_func, names):
            tally.declined(f"{names[var]}: not merged: no other matmul with a 2-D constant weight (and a compatible epilogue) reads the same input")
        out[gv] = combined_func.bind_params({var: const for var, const in lifted.items()})
    return relax.transform.FoldConstant()(out)


def _count_calls(func: relax.Function, op_name: str) -> int:
    found = []
    relax.analysis.post_order_visit(func.body, lambda e: isinstance(e, relax.Call) and getattr(e.op, "name", None) == op_name and found.append(e))
    return len(found)


def _weights_still_alone(func: relax.Function, names: dict) -> list:
    """Lifted weights a matmul still reads directly, i.e. that CombineParallelMatmul did not concatenate."""
    alone = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", None) == "relax.matmul":
            rhs = expr.args[1]
            if isinstance(rhs, relax.Var) and rhs in names:
                alone.append(rhs)

    relax.analysis.post_order_visit(func.body, visit)
    return alone


@register_pass("merge_parallel_matmul")
def merge_parallel_matmul():
    """Parallel matmuls sharing an input (QKV) -> one matmul + split."""
    return merge_parallel_matmul_pass
