"""``Range`` whose limit is a symbolic dim (``Range(0, seq, 1)``): an ``arange`` of length ``seq``.

TVM 0.27's converter treats any non-constant bound as run-time data and gives the result a fresh
length variable (``range_len_0``) computed from tensors. On a dynamic-shape import the attention
mask of every torch export is ``Range(0, seq) -> Unsqueeze -> And``; with the fresh variable its
shape no longer matches the scores' ``(.., seq, seq)`` and the broadcast loses the static rank,
after which a ``Reshape(..., -1)`` fails the import. When every bound is an integer constant or
a symbolic shape expression, the length is the exact ``ceil((limit - start) / delta)`` in those
symbols; anything else (float ranges, bounds read from tensors) goes to TVM's converter unchanged.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as base

from . import register


def _integer_bound(value):
    """The bound as an int or an integer PrimExpr, or None when it is run-time data or not an integer."""
    if isinstance(value, tvm.ir.GenericConst):
        array = value.value.numpy()
        if array.size != 1 or array.dtype.kind not in "iu":
            return None
        return int(array.reshape(()))
    if tvm.ir.is_prim_expr(value) and "int" in str(getattr(value, "dtype", None) or value.ty):
        return value
    return None


@register("Range")
class Range(base.OnnxOpConverter):
    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        bounds = [_integer_bound(base.get_constant(x, params)) for x in inputs[:3]]
        symbolic = any(tvm.ir.is_prim_expr(b) for b in bounds)
        if not symbolic or any(b is None for b in bounds) or not isinstance(bounds[2], int) or bounds[2] <= 0:
            return base.Range._impl_v12(bb, inputs, attr, params)
        start, limit, delta = bounds
        dtype = str(inputs[0].ty.dtype) if isinstance(inputs[0].ty, relax.TensorType) else "int64"
        return relax.op.arange(start, limit, delta, dtype=dtype)
