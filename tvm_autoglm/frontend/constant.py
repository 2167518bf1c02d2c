"""``Constant`` nodes that carry ``value_int(s)`` / ``value_float(s)`` instead of a tensor.

TVM 0.27's converter reads only the ``value`` attribute ("no value in Constant"). Our ONNX
clean-up (onnxscript's constant folding) writes a folded ``Shape`` / ``Size`` as
``Constant(value_ints=...)``, so a graph whose output is a shape failed to import.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as base

from . import register

#: attribute -> numpy dtype of the constant it holds (ONNX: int64 and float32)
_LIST_ATTRIBUTES = {"value_ints": "int64", "value_int": "int64", "value_floats": "float32", "value_float": "float32"}


@register("Constant")
class Constant(base.OnnxOpConverter):
    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        for key, dtype in _LIST_ATTRIBUTES.items():
            if key in attr:
                return relax.const(np.array(attr[key], dtype=dtype), dtype)
        return base.Constant._impl_v13(bb, inputs, attr, params)
