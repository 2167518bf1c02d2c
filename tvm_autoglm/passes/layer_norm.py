"""Rewrite a decomposed LayerNorm back to ``R.nn.layer_norm``.

Opset < 17 exports of ``nn.LayerNorm`` and hand-written norms (``(x - u) /
sqrt(var + eps) * w + b``) reach us as ReduceMean/Sub/Pow/ReduceMean/Add/
Sqrt/Div/Mul/Add: two reductions that FuseOps cannot put in one kernel, so
three or more kernels and two extra passes over the activation. The named op
is one kernel. Only the last-axis form is rewritten (that is what
``R.nn.layer_norm(axes=[-1])`` means); other axes stay as they are.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from ._util import UseCounts, const_value, dtype, is_last_axis, is_scalar, ndim, rewrite_module, scalar_value, static_last_dim
from .registry import register_pass
from .tally import binding_name, current


def _channel_vector(expr, channels: int):
    """``expr`` (a constant broadcastable along the last axis only) as shape (C,), else None."""
    value = const_value(expr)
    if value is None:
        return None
    if value.size == 1:
        return relax.const(np.full((channels,), value.reshape(()), dtype=value.dtype))
    if value.shape[-1] != channels or value.size != channels:
        return None
    return relax.const(value.reshape(channels))


def _norm_pattern():
    x = wildcard()
    mean1 = is_op("relax.mean")(x)
    diff = is_op("relax.subtract")(x, mean1)
    two = is_const()
    square = is_op("relax.power")(diff, two) | is_op("relax.multiply")(diff, diff)
    mean2 = is_op("relax.mean")(square)
    eps = is_const()
    var_eps = is_op("relax.add")(mean2, eps)
    root = is_op("relax.sqrt")(var_eps)
    one = is_const()
    norm = (
        is_op("relax.divide")(diff, root)
        | is_op("relax.multiply")(diff, is_op("relax.rsqrt")(var_eps))
        | is_op("relax.multiply")(diff, is_op("relax.divide")(one, root))
    )
    parts = dict(x=x, mean1=mean1, mean2=mean2, two=two, eps=eps, one=one)
    return norm, parts


def _why_not(m, parts) -> str | None:
    """Why the matched normalisation is not a last-axis layer_norm, or None when it is."""
    x = m[parts["x"]]
    rank = ndim(x)
    for key, which in (("mean1", "mean"), ("mean2", "variance mean")):
        attrs = m[parts[key]].attrs
        if not is_last_axis(attrs.axis, rank):
            axes = None if attrs.axis is None else [int(a) for a in attrs.axis]
            return f"{which} over axes {axes}, expected the last axis only"
        if not bool(attrs.keepdims):
            return f"{which} drops the reduced axis (keepdims=False)"
    if parts["two"] in m and not is_scalar(m[parts["two"]], 2.0):
        return f"power exponent is {_describe(m[parts['two']])}, expected 2"
    if parts["one"] in m and not is_scalar(m[parts["one"]], 1.0):
        return f"numerator of 1/sqrt is {_describe(m[parts['one']])}, expected 1"
    if scalar_value(m[parts["eps"]]) is None:
        return f"epsilon is {_describe(m[parts['eps']])}, expected one value"
    if static_last_dim(x) is None:
        return "the normalized (last) dim is not static (layer_norm needs the channel count)"
    return None


def _describe(expr) -> str:
    value = const_value(expr)
    if value is None:
        return "not a constant"
    return f"{float(value.reshape(-1)[0]):g}" if value.size == 1 else f"a tensor of shape {list(value.shape)}"


def _rewrite_func(func: relax.Function) -> relax.Function:
    tally = current()
    # widest form first: once the bare normalisation is rewritten the affine
    # tail no longer matches, so the full form must get its chance before
    for form in ("scale_shift", "scale", "bare"):
        norm, parts = _norm_pattern()
        gamma, beta = is_const(), is_const()
        if form == "scale_shift":
            pattern = is_op("relax.add")(is_op("relax.multiply")(norm, gamma), beta)
        elif form == "scale":
            pattern = is_op("relax.multiply")(norm, gamma)
        else:
            pattern = norm
        var_of = UseCounts(func).var_of

        def rewriter(expr, m, parts=parts, gamma=gamma, beta=beta, form=form, var_of=var_of):
            node = binding_name(m[parts["mean1"]], var_of)
            reason = _why_not(m, parts)
            if reason is not None:
                tally.declined(f"{node}: {reason}")
                return expr
            x = m[parts["x"]]
            channels = static_last_dim(x)  # leading dims may be symbolic (dynamic builds)
            ones = relax.const(np.ones((channels,), dtype=dtype(x)))
            zeros = relax.const(np.zeros((channels,), dtype=dtype(x)))
            g = _channel_vector(m[gamma], channels) if form != "bare" else ones
            b = _channel_vector(m[beta], channels) if form == "scale_shift" else zeros
            if g is None or b is None:
                which, value = ("scale", m[gamma]) if g is None else ("shift", m[beta])
                tally.declined(f"{node}: {which} is {_describe(value)}, not one value per channel ({channels}); kept outside layer_norm")
                return expr
            eps = scalar_value(m[parts["eps"]])
            tally.rewrote()
            return relax.op.nn.layer_norm(x, g, b, axes=[-1], epsilon=eps)

        func = rewrite_call(pattern, rewriter, func)
    return func


@tvm.transform.module_pass(opt_level=0, name="AutoGLMRewriteLayerNorm")
def rewrite_layer_norm_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    return rewrite_module(mod, _rewrite_func)


@register_pass("rewrite_layer_norm")
def rewrite_layer_norm():
    """Decomposed last-axis LayerNorm -> R.nn.layer_norm."""
    return rewrite_layer_norm_pass
