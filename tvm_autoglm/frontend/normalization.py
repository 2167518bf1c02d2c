"""LayerNormalization and RMSNormalization where TVM 0.27's converters fall short.

* LayerNormalization: TVM returns scalar placeholders for the optional ``Mean`` and
  ``InvStdDev`` outputs (a silent wrong answer when a graph uses them). A node that
  asks for them is written out as mean / variance / rsqrt so each output is real; a
  node with only ``Y`` keeps TVM's ``nn.layer_norm`` (one kernel, what our passes expect).
* RMSNormalization: TVM's ``nn.rms_norm`` legalizes through TOPI, which fails when the
  normalized axes are *all* the axes (``axis=0``: "Tensor dimension mismatch in read",
  first hit in FoldConstant, which legalizes to probe). Such a node is written out as
  ``x * rsqrt(mean(x^2) + eps) * scale``; other axes keep TVM's converter.

Both honour ``stash_type`` (1: compute in float32, cast back).
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as base

from . import register


def _rank(expr) -> int:
    return len(expr.ty.shape.values)


def _axes_from(axis: int, rank: int) -> list[int]:
    axis = axis + rank if axis < 0 else axis
    return list(range(axis, rank))


def _stash(bb, data, scale, stash_type: int):
    """(data, scale, compute dtype) with the casts ``stash_type`` asks for."""
    dtype = str(data.ty.dtype)
    if stash_type == 1 and dtype != "float32":
        return bb.emit(relax.op.astype(data, "float32")), bb.emit(relax.op.astype(scale, "float32")), "float32"
    return data, scale, dtype


@register("LayerNormalization")
class LayerNormalization(base.OnnxOpConverter):
    """ONNX LayerNormalization (opset 17) with real ``Mean`` / ``InvStdDev`` outputs when asked for."""

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        if attr["tvm_custom"]["num_outputs"] <= 1:
            return base.LayerNormalization._impl_v17(bb, inputs, attr, params)
        data, scale, bias = inputs[0], inputs[1], inputs[2]
        in_dtype = str(data.ty.dtype)
        axes = _axes_from(attr.get("axis", -1), _rank(data))
        epsilon = float(attr.get("epsilon", 1e-5))
        x, gamma, dtype = _stash(bb, data, scale, attr.get("stash_type", 1))
        mean = bb.emit(relax.op.mean(x, axes, keepdims=True))
        centered = bb.emit(relax.op.subtract(x, mean))
        var = bb.emit(relax.op.mean(relax.op.multiply(centered, centered), axes, keepdims=True))
        inv_std = bb.emit(relax.op.rsqrt(relax.op.add(var, relax.const(epsilon, dtype))))
        y = bb.emit(relax.op.multiply(relax.op.multiply(centered, inv_std), gamma))
        if bias is not None:
            y = bb.emit(relax.op.add(y, relax.op.astype(bias, dtype) if str(bias.ty.dtype) != dtype else bias))
        if dtype != in_dtype:
            y = bb.emit(relax.op.astype(y, in_dtype))
        return relax.Tuple([y, mean, inv_std])


@register("RMSNormalization")
class RMSNormalization(base.OnnxOpConverter):
    """ONNX RMSNormalization (opset 23); written out when every axis is normalized."""

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        data, scale = inputs[0], inputs[1]
        rank = _rank(data)
        axes = _axes_from(attr.get("axis", -1), rank)
        if len(axes) < rank:
            return base.RMSNormalization._impl_v23(bb, inputs, attr, params)
        in_dtype = str(data.ty.dtype)
        epsilon = float(attr.get("epsilon", 1e-5))
        x, gamma, dtype = _stash(bb, data, scale, attr.get("stash_type", 1))
        mean_sq = bb.emit(relax.op.mean(relax.op.multiply(x, x), axes, keepdims=True))
        inv_rms = bb.emit(relax.op.rsqrt(relax.op.add(mean_sq, relax.const(epsilon, dtype))))
        y = bb.emit(relax.op.multiply(relax.op.multiply(x, inv_rms), gamma))
        return bb.emit(relax.op.astype(y, in_dtype)) if dtype != in_dtype else y
