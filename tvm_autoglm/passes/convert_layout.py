"""Convert conv2d to NHWC (channels-last) for CPU.

``relax.transform.ConvertLayout`` rewrites conv2d to NHWC/OHWI and inserts
the layout transforms at the region boundaries (the weight transforms fold
to constants). Channels-last makes the innermost loop of a CPU convolution
run over contiguous channels, which vectorises without a scheduler's help.

Measured before enabling it: a small ResNet-style CNN (stem + 2 basic
blocks, 32 channels, 56x56) on the 2-core Zen 3 dev box with the default
(untuned) CPU schedules ran 815 ms NCHW vs 509 ms NHWC at O3 (same
outputs, max diff 6e-7), so it is on at O3 for CPU targets only. GPU targets
keep NCHW: their schedules (dlight) are written for it.

TVM 0.27's ConvertLayout crashes (instead of leaving the op alone) on ops its
layout inference does not handle: a tuple result (``nn.dropout``), a 5-D
tensor next to a converted one (``stack`` + ``max`` of a multi-input Max/Sum,
the ``expand_dims`` + ``avg_pool3d`` of LRN, a channel shuffle's 5-D reshape),
3-D tensors (1-D convs). So only the ops listed in :data:`LAYOUT_SAFE_OPS`, on
rank-4 (or scalar) tensors, are shown to it; every other call is hidden in a
private function for the duration (ConvertLayout gives a call it cannot infer
its inputs in their original layout) and put back afterwards, unchanged.
"""

from __future__ import annotations

import logging

import tvm
from tvm import relax

from ..errors import describe
from .registry import register_pass
from .tally import current

_LOG = logging.getLogger(__name__)

NHWC_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OHWI"]}

#: Ops ConvertLayout may re-layout when all their tensors are rank 4 (or scalars): conv2d,
#: elementwise ops, 2-D pooling, concat, reductions over axes. Anything else keeps NCHW.
LAYOUT_SAFE_OPS = frozenset(
    f"relax.{name}"
    for name in (
        "nn.conv2d", "add", "subtract", "multiply", "divide", "maximum", "minimum", "power",
        "nn.relu", "nn.leakyrelu", "nn.silu", "nn.gelu", "sigmoid", "tanh", "clip", "exp", "negative",
        "sqrt", "rsqrt", "abs", "erf", "astype", "nn.max_pool2d", "nn.avg_pool2d",
        "nn.adaptive_avg_pool2d", "concat", "mean", "sum", "max",
    )
)


def _tensor_ranks(ty) -> list[int] | None:
    """Ranks of the tensors in a type (tuples flattened), None for anything else (shapes, objects)."""
    if isinstance(ty, relax.TensorType):
        return [ty.ndim]
    if isinstance(ty, relax.TupleType):
        ranks = []
        for field in ty.fields:
            inner = _tensor_ranks(field)
            if inner is None:
                return None
            ranks.extend(inner)
        return ranks
    return None


def layout_safe(call: relax.Call) -> bool:
    """Whether ConvertLayout may see this call: a listed op whose tensors are all rank 4 or 0."""
    if not isinstance(call.op, tvm.ir.Op) or call.op.name not in LAYOUT_SAFE_OPS:
        return False
    if not isinstance(call.ty, relax.TensorType) or call.ty.ndim != 4:
        return False
    for arg in call.args:
        ranks = _tensor_ranks(arg.ty)
        if ranks is None or any(rank not in (0, 4) for rank in ranks):
            return False
    return True


def _substitute(expr, mapping: dict):
    """``expr`` (an atomic call argument: var, constant, tuple of them) with vars replaced."""
    if isinstance(expr, relax.Var) and expr in mapping:
        return mapping[expr]
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_substitute(field, mapping) for field in expr.fields])
    return expr


def _with_args(call: relax.Call, mapping: dict) -> relax.Call:
    return relax.Call(call.op, [_substitute(arg, mapping) for arg in call.args], call.attrs, call.ty_args)


@relax.expr_functor.mutator
class _Hider(relax.PyExprMutator):
    """Moves every call ConvertLayout must not see into a private function of its own."""

    def __init__(self, mod):
        super().__init__(mod)
        self.hidden: dict[str, tuple[list, relax.Call]] = {}

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or layout_safe(call):
            return call
        free = relax.analysis.free_vars(call)
        params = [relax.Var(f"p{i}", var.ty) for i, var in enumerate(free)]
        inner = _with_args(call, dict(zip(free, params)))
        name = f"_autoglm_layout_hidden_{len(self.hidden)}"
        func = relax.Function(params, relax.SeqExpr([], inner), call.ty, is_pure=True).with_attr("global_symbol", name)
        gvar = self.builder_.add_func(func, name)
        self.hidden[gvar.name_hint] = (params, inner)
        return relax.Call(gvar, free)


@relax.expr_functor.mutator
class _Restorer(relax.PyExprMutator):
    """Puts the hidden calls back in place of the calls to their private functions."""

    def __init__(self, mod, hidden):
        super().__init__(mod)
        self.hidden = hidden

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if isinstance(call.op, relax.GlobalVar) and call.op.name_hint in self.hidden:
            params, original = self.hidden[call.op.name_hint]
            return _with_args(original, dict(zip(params, call.args)))
        return call


def _graph_functions(mod):
    return [(gv, f) for gv, f in mod.functions.items()
            if isinstance(f, relax.Function) and not (f.attrs and "Primitive" in f.attrs)]


def _nchw_conv2d_count(mod) -> int:
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.conv2d" and expr.attrs.data_layout == "NCHW":
            found.append(expr)

    for _, func in _graph_functions(mod):
        relax.analysis.post_order_visit(func.body, visit)
    return len(found)


@tvm.transform.module_pass(opt_level=0, name="AutoGLMConvertLayoutNHWC")
def convert_layout_nhwc_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    tally = current()
    nchw_before = _nchw_conv2d_count(mod)
    if not nchw_before:
        return mod  # nothing to convert: skip hiding every op of a transformer
    hider = _Hider(mod)
    for gv, func in _graph_functions(mod):
        hider.builder_.update_func(gv, hider.visit_expr(func))
    hidden_mod = hider.builder_.get()
    try:
        converted = relax.transform.ConvertLayout(NHWC_LAYOUTS)(hidden_mod)
    except (RuntimeError, ValueError, TypeError) as err:  # TVM check failures (InternalError is a RuntimeError): decline
        reason = describe(err)
        _LOG.warning("convert_layout_nhwc left the module in NCHW: ConvertLayout failed (%s)", reason)
        tally.declined(f"all {nchw_before} NCHW conv2d left in NCHW: TVM's ConvertLayout failed ({reason})")
        return mod
    restorer = _Restorer(converted, hider.hidden)
    for gv, func in _graph_functions(converted):
        if gv.name_hint not in hider.hidden:
            restorer.builder_.update_func(gv, restorer.visit_expr(func))
    restored = restorer.builder_.get()
    restored = tvm.IRModule({gv: f for gv, f in restored.functions.items() if gv.name_hint not in hider.hidden}, attrs=restored.attrs)
    out = relax.transform.FoldConstant()(restored)
    tally.rewrote(nchw_before - _nchw_conv2d_count(out))
    return out


@register_pass("convert_layout_nhwc")
def convert_layout_nhwc():
    """conv2d NCHW -> NHWC with boundary transforms (O3, CPU: faster untuned)."""
    return convert_layout_nhwc_pass
