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
from tvm.relax.dpl import is_const, is_op, wildcard

from .registry import register_pass
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


def _check(ctx: relax.transform.PatternCheckContext) -> bool:
    inside = set(ctx.matched_bindings.keys())
    root_var = ctx.value_to_bound_var.get(ctx.matched_expr)
    for var in inside:
        if root_var is not None and var.same_as(root_var):
            continue
        for user in ctx.var_usages.get(var, []):
            if user not in inside:
                return False
    return True


@tvm.transform.module_pass(opt_level=0, name="AutoGLMFuseEpilogue")
def fuse_epilogue_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    root, annotations = epilogue_pattern()
    pattern = relax.transform.FusionPattern(COMPOSITE_NAME, root, annotations, _check)
    fused = relax.transform.FuseOpsByPattern([pattern], bind_constants=False, annotate_codegen=False)(mod)
    # a symbolic reshape target was lifted into a group parameter: use the literal again
    return inline_shape_params(fused)


@register_pass("fuse_epilogue", opt_level=2, stage=50)
def fuse_epilogue():
    """matmul/conv + bias + activation + reshape/permute_dims -> one kernel."""
    return fuse_epilogue_pass
