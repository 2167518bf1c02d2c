"""Group scaled-dot-product attention into one fused kernel.

``Q.K^T (* or / scale) (+ mask | where(causal, s, min)) -> softmax(-1)
(-> where(isnan, 0, p)) -> .V`` is what HF BERT/ViT/GPT-2/GPT-NeoX/T5 export
with both torch exporters (torch's SDPA decomposition scales Q and K by
sqrt(scale) each and adds the NaN guard), followed by the head merge (permute_dims + reshape). Left to FuseOps it is 3-4 kernels
(the softmax is a reduction, and FuseOps never puts two reductions or a
matmul after a reduction into one group), each writing the S x S score
matrix to memory.

Why a composite group instead of ``R.nn.attention``: that op wants BSNH
inputs (extra permute_dims), has no slot for a boolean causal ``where`` or the
NaN guard, and its legalization is a different computation; the group keeps
the exporter's exact ops (and so exact numerics and masks) and FuseTIR turns
it into one PrimFunc after LegalizeOps. The group is marked ``Primitive`` so
FuseOps leaves it alone.

Not applied when softmax runs over a non-last axis or an intermediate (the
scores, the probabilities) is used outside the group.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from ._util import composite_count, ndim, ungrouped_bindings
from .registry import register_pass
from .tally import current
from .symbolic import inline_shape_params

COMPOSITE_NAME = "autoglm.attention"


def _scaled(p):
    return is_op("relax.multiply")(p, is_const()) | is_op("relax.divide")(p, is_const()) | p


def attention_pattern():
    """The dpl pattern of one attention core; returns (root, annotations)."""
    q = _scaled(wildcard())
    k = _scaled(wildcard())
    scores = is_op("relax.matmul")(q, k)
    s = _scaled(scores)
    masked = is_op("relax.add")(s, wildcard()) | is_op("relax.where")(wildcard(), s, wildcard()) | s
    masked = is_op("relax.add")(masked, wildcard()) | masked
    softmax = is_op("relax.nn.softmax")(masked)
    probs = is_op("relax.where")(is_op("relax.isnan")(softmax), is_const(), softmax) | softmax
    out = is_op("relax.matmul")(probs, wildcard())
    # the head merge that follows (permute_dims back to BSNH, reshape to B,S,N*H)
    # is injective, so it rides along instead of costing its own kernel
    tails = [out]
    for _ in range(3):
        tails.append(_layout(tails[-1]))
    merged = tails[-1]
    for tail in reversed(tails[:-1]):
        merged = merged | tail
    return merged, {"scores": scores, "softmax": softmax, "out": out}


def _layout(p):
    return is_op("relax.permute_dims")(p) | is_op("relax.reshape")(p, wildcard())


def _refusal(ctx: relax.transform.PatternCheckContext) -> str | None:
    """Why this candidate may not become one group, or None when it may."""
    softmax = ctx.annotated_expr["softmax"]
    if not _softmax_over_last_axis(softmax):
        return f"softmax over axis {int(softmax.attrs.axis)}, not the last"
    # every value computed inside the group must be consumed only inside it,
    # otherwise grouping would compute it twice (or not at all for the outside user)
    inside = set(ctx.matched_bindings.keys())
    out_var = ctx.value_to_bound_var.get(ctx.matched_expr)
    leaking = []
    for var in inside:
        if out_var is not None and var.same_as(out_var):
            continue
        if any(user not in inside for user in ctx.var_usages.get(var, [])):
            leaking.append(var.name)
    if leaking:
        return f"{', '.join(sorted(leaking))} also used outside the group"
    return None


def _softmax_over_last_axis(call) -> bool:
    axis = int(call.attrs.axis)
    rank = ndim(call.args[0])
    return axis == -1 or axis == rank - 1


@tvm.transform.module_pass(opt_level=0, name="AutoGLMFuseAttention")
def fuse_attention_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    tally = current()
    # several roots (head-merge tails of different lengths) may be tried for one core: a
    # refusal counts only for a scores matmul that ends up in no group (see fuse_epilogue)
    refused: dict[str, str] = {}

    def check(ctx: relax.transform.PatternCheckContext) -> bool:
        reason = _refusal(ctx)
        if reason is not None:
            scores = ctx.annotated_expr["scores"]
            var = ctx.value_to_bound_var.get(scores)
            if var is not None:
                refused.setdefault(var.name, f"matmul {var.name} (attention scores): {reason}")
        return reason is None

    root, annotations = attention_pattern()
    pattern = relax.transform.FusionPattern(COMPOSITE_NAME, root, annotations, check)
    out = relax.transform.FuseOpsByPattern([pattern], bind_constants=False, annotate_codegen=False)(mod)
    tally.rewrote(composite_count(out, COMPOSITE_NAME) - composite_count(mod, COMPOSITE_NAME))
    left = ungrouped_bindings(out, ("relax.matmul",))
    for name, reason in refused.items():
        if name in left:
            tally.declined(reason)
    # a symbolic reshape target was lifted into a group parameter: use the literal again
    return inline_shape_params(out)


@register_pass("fuse_attention")
def fuse_attention():
    """matmul-(scale)-(mask)-softmax-matmul -> one fused attention kernel."""
    return fuse_attention_pass
