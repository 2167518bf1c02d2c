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
from ._util import relax_functions
from .registry import register_pass


def _lift_weights(func: relax.Function):
    """``func`` with each 2-D constant matmul RHS turned into an extra parameter."""
    lifted: dict = {}
    lhs, rhs = wildcard(), is_const()
    pattern = is_op("relax.matmul")(lhs, rhs)

    def rewriter(expr, m):
        const = m[rhs]
        if const.ty.ndim != 2:
            return expr
        var = relax.Var(f"autoglm_w{len(lifted)}", const.ty)
        lifted[var] = const
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
        if const.ty.ndim != 1 or not any(weight.same_as(v) for v in lifted):
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
    out = copy_module(mod)
    for gv, func in list(relax_functions(mod)):
        lifted_func, lifted = _lift_weights(func)
        if not lifted:
            continue
        single = tvm.IRModule({gv: lifted_func})
        combined = relax.transform.CombineParallelMatmul()(single)
        combined_func = combined[gv]
        out[gv] = combined_func.bind_params({var: const for var, const in lifted.items()})
    return relax.transform.FoldConstant()(out)


@register_pass("merge_parallel_matmul")
def merge_parallel_matmul():
    """Parallel matmuls sharing an input (QKV) -> one matmul + split."""
    return merge_parallel_matmul_pass
