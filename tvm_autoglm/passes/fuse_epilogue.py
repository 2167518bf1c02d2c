"""Keep matmul/conv + bias + activation + head-split layout ops in one kernel.

FuseOps already fuses a matmul/conv2d (OutEWiseFusable) with the elementwise
ops after it: bias add, ReLU, Clip (ReLU6, also the maximum/minimum pair the
ONNX importer emits for a tensor-bounded Clip), HardSwish/HardSigmoid,
``x * sigmoid(x)`` and -- once ``rewrite_gelu`` has run -- ``R.nn.gelu``. We
measured that (tests/passes/test_fuse_epilogue.py), so this pass does not
repeat it. What FuseOps will not do is put an *injective* op (reshape,
permute_dims) after an OutEWiseFusable op in the same group, and every
transformer projection is ``matmul + bias -> reshape(B,S,H,D) ->
permute_dims(0,2,1,3)`` (K gets another reshape/transpose pair): 2 kernels
and one extra round trip of the activation per projection. This pass groups
the anchor, its elementwise epilogue and up to six layout ops into one
Primitive function, which FuseTIR lowers to one kernel. Each intermediate
must be used only inside the group. Known cost: an elementwise op *after*
the layout tail can no longer join (FuseOps does not fuse into a finished
group); in the exported transformers the tail feeds attention (whose group
takes the scale multiply) or RoPE slicing, so nothing is lost there.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ._util import composite_count, ungrouped_bindings
from .registry import register_pass
from .tally import current
from .symbolic import inline_shape_params

COMPOSITE_NAME = "autoglm.epilogue_layout"
_ACTIVATIONS = ("relax.nn.relu", "relax.nn.gelu", "relax.nn.gelu_tanh", "relax.nn.silu", "relax.sigmoid", "relax.tanh", "relax.clip")
_MAX_LAYOUT_OPS = 6


def _layout(p):
    return is_op("relax.reshape")(p, wildcard()) | is_op("relax.permute_dims")(p)


def epilogue_pattern():
    anchor = is_op("relax.matmul")(wildcard(), wildcard()) | is_op("relax.nn.conv2d")(wildcard(), wildcard())
    biased = is_op("relax.add")(anchor, wildcard()) | anchor
    act = biased
    for name in _ACTIVATIONS:
        act = is_op(name)(biased) | act
    chains = [_layout(act)]
    for _ in range(_MAX_LAYOUT_OPS - 1):
        chains.append(_layout(chains[-1]))
    root = chains[-1]
    for chain in reversed(chains[:-1]):
        root = root | chain
    return root, {"anchor": anchor}


def _outside_users(ctx: relax.transform.PatternCheckContext) -> list[str]:
    """Intermediates of the candidate group that something outside it also reads."""
    inside = set(ctx.matched_bindings.keys())
    root_var = ctx.value_to_bound_var.get(ctx.matched_expr)
    leaking = []
    for var in inside:
        if root_var is not None and var.same_as(root_var):
            continue
        if any(user not in inside for user in ctx.var_usages.get(var, [])):
            leaking.append(var.name)
    return sorted(leaking)


@tvm.transform.module_pass(opt_level=0, name="AutoGLMFuseEpilogue")
def fuse_epilogue_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    tally = current()
    # FuseOpsByPattern may try several roots (layout tails of different lengths) for one
    # anchor; a refusal of one of them is no refusal if another match groups the anchor, so
    # keep the reasons per anchor and report only anchors that end up in no group
    refused: dict[str, str] = {}

    def check(ctx: relax.transform.PatternCheckContext) -> bool:
        leaking = _outside_users(ctx)
        if leaking:
            anchor = ctx.annotated_expr["anchor"]
            anchor_var = ctx.value_to_bound_var.get(anchor)
            if anchor_var is not None:  # keyed by the anchor's var: what ungrouped_bindings reports
                name = f"{anchor.op.name.removeprefix('relax.')} {anchor_var.name}"
                refused.setdefault(anchor_var.name, f"{name}: {', '.join(leaking)} also used outside the group, which would compute it twice")
        return not leaking

    root, annotations = epilogue_pattern()
    pattern = relax.transform.FusionPattern(COMPOSITE_NAME, root, annotations, check)
    out = relax.transform.FuseOpsByPattern([pattern], bind_constants=False, annotate_codegen=False)(mod)
    tally.rewrote(composite_count(out, COMPOSITE_NAME) - composite_count(mod, COMPOSITE_NAME))
    left = ungrouped_bindings(out, ("relax.matmul", "relax.nn.conv2d"))
    for var_name, reason in refused.items():
        if var_name in left:
            tally.declined(reason)
    # a symbolic reshape target was lifted into a group parameter: use the literal again
    return inline_shape_params(out)


@register_pass("fuse_epilogue")
def fuse_epilogue():
    """matmul/conv + bias + activation + reshape/permute_dims -> one kernel."""
    return fuse_epilogue_pass
