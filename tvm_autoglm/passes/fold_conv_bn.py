"""Fold inference BatchNormalization into the preceding Conv's weights and bias.

ONNX Conv-with-bias imports as ``conv2d`` + ``add(reshape(bias))``; TVM's
``FoldBatchnormToConv2D`` only matches a bare ``conv2d -> batch_norm`` and so
misses every biased conv. Folding removes the BN kernel entirely (its scale
and shift land in constants) and leaves conv + bias + activation, which
FuseOps turns into one kernel. Runs after constant folding, so the bias
reshape is already a constant. Not applied when the conv (or conv + bias)
result has another consumer: that consumer needs the unscaled output, and
folding would cost a second convolution.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import TupleGetItemPattern, is_op, rewrite_call, wildcard

from ._util import UseCounts, const_value, rewrite_module
from .registry import register_pass
from .tally import binding_name, current


def _rewrite_func(func: relax.Function) -> relax.Function:
    uses = UseCounts(func)
    tally = current()
    # weights, bias and BN statistics are matched as anything and checked in the rewriter,
    # so that a non-constant one is reported (--explain-pass) instead of silently not matching
    x, weight, bias = wildcard(), wildcard(), wildcard()
    conv = is_op("relax.nn.conv2d")(x, weight)
    conv_bias = is_op("relax.add")(conv, bias)
    gamma, beta, mean, var = wildcard(), wildcard(), wildcard(), wildcard()
    bn = is_op("relax.nn.batch_norm")(conv_bias | conv, gamma, beta, mean, var)
    pattern = TupleGetItemPattern(bn, 0)

    def rewriter(expr, m):
        conv_call, bn_call = m[conv], m[bn]
        node = binding_name(conv_call, uses.var_of)

        def decline(reason: str):
            tally.declined(f"{node}: {reason}")
            return expr

        cattrs, battrs = conv_call.attrs, bn_call.attrs
        if cattrs.data_layout != "NCHW" or cattrs.kernel_layout != "OIHW" or cattrs.out_layout != "NCHW":
            return decline(f"layout {cattrs.data_layout}/{cattrs.kernel_layout}/{cattrs.out_layout}, expected NCHW/OIHW/NCHW")
        if int(battrs.axis) not in (1, -3):
            return decline(f"batch_norm normalises axis {int(battrs.axis)}, not the channel axis 1")
        if uses.uses(conv_call) != 1 or (conv_bias in m and uses.uses(m[conv_bias]) != 1):
            return decline("its output has another consumer, which needs the unscaled values")
        w = const_value(m[weight])
        if w is None:
            return decline("weight is not a constant")
        stats = [const_value(m[p]) for p in (gamma, beta, mean, var)]
        if any(a is None for a in stats):
            return decline("batch_norm scale, shift, mean or variance is not a constant")
        channels = w.shape[0]
        g, b, mu, v = (a.reshape(-1) for a in stats)
        # batch_norm's type check already ties these to the channel count; kept as a guard
        if any(a.size != channels for a in (g, b, mu, v)):
            return decline(f"batch_norm parameters have {g.size} values, expected {channels} (one per output channel)")
        if conv_bias in m:
            cb = const_value(m[bias])
            if cb is None:
                return decline("the added bias is not a constant")
            # the bias must be per output channel: (C,), (C,1,1) or (1,C,1,1)
            if cb.size != channels or (cb.ndim >= 3 and cb.shape[-3] != channels):
                return decline(f"bias of shape {list(cb.shape)} is not one value per output channel ({channels})")
            cb = cb.reshape(-1)
        else:
            cb = np.zeros((channels,), dtype=w.dtype)
        # fold in float64 then round once, so the folded weights differ from
        # the unfolded computation by a single rounding
        scale = g.astype(np.float64) / np.sqrt(v.astype(np.float64) + float(battrs.epsilon))
        new_w = (w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(w.dtype)
        new_b = ((cb.astype(np.float64) - mu) * scale + b).astype(w.dtype)
        out = relax.op.nn.conv2d(
            m[x],
            relax.const(new_w),
            strides=cattrs.strides,
            padding=cattrs.padding,
            dilation=cattrs.dilation,
            groups=cattrs.groups,
            data_layout="NCHW",
            kernel_layout="OIHW",
            out_dtype=cattrs.out_dtype,
        )
        tally.rewrote()
        return relax.op.add(out, relax.const(new_b.reshape(1, channels, 1, 1)))

    return rewrite_call(pattern, rewriter, func)


@tvm.transform.module_pass(opt_level=0, name="AutoGLMFoldConvBN")
def fold_conv_bn_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    return rewrite_module(mod, _rewrite_func)


@register_pass("fold_conv_bn")
def fold_conv_bn():
    """Conv (+bias) + BatchNormalization -> Conv with folded weights and bias."""
    return fold_conv_bn_pass
