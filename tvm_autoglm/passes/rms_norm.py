"""Rewrite the RMSNorm idiom (T5 LayerNorm, LLaMA RMSNorm) to ``R.nn.rms_norm``.

ONNX has no RMSNorm before opset 23, so both exporters write
``w * (x * 1/sqrt(mean(x^2) + eps))`` (torchscript: ``Div(1, Sqrt)``;
dynamo: ``Reciprocal(Sqrt)``; both import as ``divide(1, sqrt)``). That is a
reduction kernel plus an elementwise kernel reading ``x`` again; the named op
is one kernel and schedules like layer_norm.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from ._util import UseCounts, const_value, dtype, is_last_axis, is_scalar, ndim, rewrite_module, scalar_value, static_last_dim
from .registry import register_pass
from .tally import binding_name, current


def _pattern(with_weight: bool):
    x = wildcard()
    two, eps, one, weight = is_const(), is_const(), is_const(), is_const()
    square = is_op("relax.power")(x, two) | is_op("relax.multiply")(x, x)
    mean = is_op("relax.mean")(square)
    var_eps = is_op("relax.add")(mean, eps)
    root = is_op("relax.sqrt")(var_eps)
    norm = (
        is_op("relax.multiply")(x, is_op("relax.divide")(one, root))
        | is_op("relax.multiply")(x, is_op("relax.rsqrt")(var_eps))
        | is_op("relax.divide")(x, root)
    )
    pattern = is_op("relax.multiply")(norm, weight) if with_weight else norm
    return pattern, dict(x=x, two=two, eps=eps, one=one, weight=weight, mean=mean)


def _rewrite_func(func: relax.Function) -> relax.Function:
    tally = current()
    for with_weight in (True, False):
        pattern, p = _pattern(with_weight)
        var_of = UseCounts(func).var_of

        def rewriter(expr, m, p=p, with_weight=with_weight, var_of=var_of):
            node = binding_name(m[p["mean"]], var_of)

            def decline(reason):
                tally.declined(f"{node}: {reason}")
                return expr

            x = m[p["x"]]
            channels = static_last_dim(x)  # leading dims may be symbolic (dynamic builds)
            attrs = m[p["mean"]].attrs
            if channels is None:
                return decline("the normalized (last) dim is not static")
            if not is_last_axis(attrs.axis, ndim(x)) or not bool(attrs.keepdims):
                return decline("mean is not over the last axis with keepdims")
            if p["two"] in m and not is_scalar(m[p["two"]], 2.0):
                return decline("power exponent is not 2")
            if p["one"] in m and not is_scalar(m[p["one"]], 1.0):
                return decline("numerator of 1/sqrt is not 1")
            eps = scalar_value(m[p["eps"]])
            if eps is None:
                return decline("epsilon is not one value")
            if with_weight:
                w = const_value(m[p["weight"]])
                if w is None or w.size not in (1, channels) or (w.size == channels and w.shape[-1] != channels):
                    return decline(f"weight is not one value per channel ({channels}); kept outside rms_norm")
                weight = relax.const(np.broadcast_to(w.reshape(-1), (channels,)).copy())
            else:
                weight = relax.const(np.ones((channels,), dtype=dtype(x)))
            tally.rewrote()
            return relax.op.nn.rms_norm(x, weight, axes=[-1], epsilon=eps)

        func = rewrite_call(pattern, rewriter, func)
    return func


@tvm.transform.module_pass(opt_level=0, name="AutoGLMRewriteRMSNorm")
def rewrite_rms_norm_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    return rewrite_module(mod, _rewrite_func)


@register_pass("rewrite_rms_norm")
def rewrite_rms_norm():
    """x * rsqrt(mean(x^2) + eps) * w -> R.nn.rms_norm."""
    return rewrite_rms_norm_pass
