"""GELU / erf / tanh through vectorizable polynomial approximations (TVM's ``topi.fast_*``).

LLVM has no vector ``erf`` or ``tanh`` on x86: ``R.nn.gelu`` legalizes to
``erf`` and the FFN's ``matmul + bias + gelu`` kernel then calls scalar
``erff`` once per output element. On bert-base that epilogue cost as much as
the matmul itself (16.1 ms vs 8.3 ms for the same-sized FFN-down kernel).
``topi.fast_erf`` / ``fast_tanh`` are rational approximations built from
multiply/add/clamp only (the same technique onnxruntime's MLAS uses), so they
vectorize with the rest of the epilogue; their error in float32 is a few ULP
(tests/passes/test_fast_math.py checks parity with onnxruntime at rtol/atol 1e-4
and the raw error against numpy).

Only float32 calls are rewritten (the approximations are float32 formulas);
the rewrite runs after every pattern pass (passes/plan.py) so attention, epilogue
and layout patterns still see the named ops. ``--disable-pass fast_math``
keeps libm's exact functions. CPU hosts only: CUDA has fast erf/tanh of its own.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, topi
from tvm.relax.expr_functor import PyExprMutator, mutator

from .registry import register_pass
from .tally import current

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _fast_gelu(x):
    half = tvm.tirx.const(0.5, x.dtype)
    one = tvm.tirx.const(1.0, x.dtype)
    erf = topi.fast_erf(topi.multiply(x, tvm.tirx.const(_SQRT1_2, x.dtype)))
    return topi.multiply(topi.multiply(x, half), topi.add(erf, one))


def _fast_gelu_tanh(x):
    half = tvm.tirx.const(0.5, x.dtype)
    one = tvm.tirx.const(1.0, x.dtype)
    cube = topi.multiply(topi.multiply(x, x), x)
    inner = topi.multiply(topi.add(x, topi.multiply(cube, tvm.tirx.const(0.044715, x.dtype))), tvm.tirx.const(_SQRT_2_OVER_PI, x.dtype))
    return topi.multiply(topi.multiply(x, half), topi.add(topi.fast_tanh(inner), one))


_REWRITES = {
    "relax.nn.gelu": ("fast_gelu", _fast_gelu),
    "relax.nn.gelu_tanh": ("fast_gelu_tanh", _fast_gelu_tanh),
    "relax.erf": ("fast_erf", topi.fast_erf),
    "relax.tanh": ("fast_tanh", topi.fast_tanh),
}


def _is_float32(expr) -> bool:
    ty = getattr(expr, "ty", None) or getattr(expr, "struct_info", None)
    return getattr(ty, "dtype", None) == "float32"


@mutator
class _FastMath(PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.rewritten = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        op = getattr(call, "op", None)
        name = getattr(op, "name", None)
        if name in _REWRITES and len(call.args) == 1 and _is_float32(call.args[0]):
            prim_name, fn = _REWRITES[name]
            self.rewritten += 1
            return self.builder_.call_te(fn, call.args[0], primfunc_name_hint=prim_name)
        return call


@tvm.transform.module_pass(opt_level=0, name="AutoGLMFastMath")
def fast_math_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    rewriter = _FastMath(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    current().rewrote(rewriter.rewritten)
    return rewriter.builder_.get() if rewriter.rewritten else mod


@register_pass("fast_math")
def fast_math():
    """float32 gelu/erf/tanh -> vectorizable approximations (topi.fast_erf / fast_tanh)."""
    return fast_math_pass
