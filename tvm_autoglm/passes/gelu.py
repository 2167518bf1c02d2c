"""Rewrite decomposed GELU back to ``R.nn.gelu`` / ``R.nn.gelu_tanh``.

Both torch exporters spell GELU out in elementwise ops (torchscript opset 17
always, dynamo opset 18 unless it emits the Gelu op), each in its own operand
order: ``x * 0.5 * (1 + erf(x / sqrt2))``, ``x * (0.5 * (1 + erf(..)))``,
``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`` with ``x^3`` as
``Pow`` or as two ``Mul``. One named op is one elementwise stage that FuseOps
folds into the producing matmul and that schedules/tuning recognise; the
decomposition is 5-9 separate ops that only fuse if every intermediate stays
single-use. dpl matches ``add``/``multiply`` commutatively, so each algebraic
grouping needs one pattern and operand order comes for free.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from ._util import UseCounts, is_scalar, rewrite_module
from .registry import register_pass
from .tally import binding_name, current

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _mul(a, b):
    return is_op("relax.multiply")(a, b)


def _add(a, b):
    return is_op("relax.add")(a, b)


def _half_times(x, one_plus):
    """The three groupings of ``0.5 * x * one_plus``; returns (pattern, half-const pattern)."""
    half = is_const()
    pattern = (
        _mul(_mul(x, one_plus), half)
        | _mul(x, _mul(half, one_plus))
        | _mul(_mul(x, half), one_plus)
    )
    return pattern, half


def _erf_gelu():
    x = wildcard()
    scale = is_const()
    inner = is_op("relax.divide")(x, scale) | _mul(x, scale)
    one = is_const()
    one_plus = _add(is_op("relax.erf")(inner), one)
    pattern, half = _half_times(x, one_plus)

    def check(m):
        s = m[scale]
        by_div = isinstance(m.get(inner), relax.Call) and m[inner].op.name == "relax.divide"
        ok_scale = is_scalar(s, _SQRT2) if by_div else is_scalar(s, 1.0 / _SQRT2)
        return ok_scale and is_scalar(m[one], 1.0) and is_scalar(m[half], 0.5)

    return pattern, x, check, relax.op.nn.gelu


def _tanh_gelu():
    x = wildcard()
    three = is_const()
    cube = is_op("relax.power")(x, three) | _mul(x, _mul(x, x)) | _mul(_mul(x, x), x)
    coeff, k, one = is_const(), is_const(), is_const()
    inner = _mul(k, _add(x, _mul(coeff, cube)))
    one_plus = _add(is_op("relax.tanh")(inner), one)
    pattern, half = _half_times(x, one_plus)

    def check(m):
        if three in m and not is_scalar(m[three], 3.0):
            return False
        return (
            is_scalar(m[coeff], 0.044715)
            and is_scalar(m[k], _SQRT_2_OVER_PI)
            and is_scalar(m[one], 1.0)
            and is_scalar(m[half], 0.5)
        )

    return pattern, x, check, relax.op.nn.gelu_tanh


def _rewrite_func(func: relax.Function) -> relax.Function:
    tally = current()
    for build in (_erf_gelu, _tanh_gelu):
        pattern, x, check, make = build()
        kind = "erf" if build is _erf_gelu else "tanh"
        var_of = UseCounts(func).var_of

        def rewriter(expr, matches, x=x, check=check, make=make, kind=kind, var_of=var_of):
            if not check(matches):
                tally.declined(f"{binding_name(expr, var_of)}: the shape of {kind} GELU, but its constants are not GELU's")
                return expr
            tally.rewrote()
            return make(matches[x])

        func = rewrite_call(pattern, rewriter, func)
    return func


@tvm.transform.module_pass(opt_level=0, name="AutoGLMRewriteGelu")
def rewrite_gelu_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    return rewrite_module(mod, _rewrite_func)


@register_pass("rewrite_gelu")
def rewrite_gelu():
    """Decomposed erf/tanh GELU -> R.nn.gelu / R.nn.gelu_tanh."""
    return rewrite_gelu_pass
