"""ONNX Resize, replacing TVM 0.27's converter (wrong whenever ``input x scale`` is not an integer).

TVM maps output pixels back through the size ratio ``input / output`` instead of the
scale ONNX gives, divides by zero for align_corners on a size-1 output axis, and gets
cubic ``exclude_outside`` wrong; see ``resize_tables`` for what onnxruntime does. This
converter computes every resized axis's source indices and weights at compile time
(``resize_tables.resize_tables``) and emits one injective kernel that gathers and sums:
``y[..o..] = sum over taps of prod_axis w_axis[o_axis, t_axis] * x[.. idx_axis[o_axis, t_axis] ..]``,
with the extrapolation value where tf_crop_and_resize maps outside the input.

It handles opsets 10-19+: nearest / linear / cubic, every coordinate_transformation_mode and
nearest_mode onnxruntime has, scales or sizes, ``axes`` and ``keep_aspect_ratio_policy``,
any rank. It needs the resized axes' extents and the scales/sizes/roi as constants (the
support check refuses a node whose inputs are not, :func:`refusal`). Refused: ``antialias``;
integer inputs to linear/cubic (``support_rules``); align_corners / tf_crop_and_resize with a
non-integer ``in x scale``, where onnxruntime and the ONNX reference disagree
(``resize_tables.reference_disagreement``).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import tvm
from tvm import relax, te, tirx
from tvm.relax.frontend.onnx import onnx_frontend as base

from ..errors import UnsupportedModelError
from . import register
from .checks import NodeContext, attributes, register_check
from .resize_tables import (COORDINATE_MODES, MODES, NEAREST_MODES, ResizeSpec, output_shape_and_scales, reference_disagreement,
                            resize_tables)

#: input positions from opset 11 on (opset 10: X, scales)
_X, _ROI, _SCALES, _SIZES = range(4)
_FLOAT_DTYPES = ("float16", "float32", "float64", "bfloat16")
_MAX_TERMS = 64  # taps ** resized axes: cubic over 3 axes at most


def _text(value, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def spec_from_attributes(attrs: dict, opset: int) -> ResizeSpec:
    """The node's :class:`ResizeSpec` (opset 10: asymmetric coordinates, truncating nearest)."""
    mode = _text(attrs.get("mode"), "nearest")
    if opset < 11:
        return ResizeSpec(mode=mode, coordinate_mode="asymmetric", nearest_mode="simple")
    return ResizeSpec(
        mode=mode,
        coordinate_mode=_text(attrs.get("coordinate_transformation_mode"), "half_pixel"),
        nearest_mode=_text(attrs.get("nearest_mode"), "round_prefer_floor"),
        cubic_coeff_a=float(attrs.get("cubic_coeff_a", -0.75)),
        exclude_outside=bool(attrs.get("exclude_outside", 0)),
        extrapolation_value=float(attrs.get("extrapolation_value", 0.0)),
        keep_aspect_ratio_policy=_text(attrs.get("keep_aspect_ratio_policy"), "stretch"),
    )


def attribute_refusal(spec: ResizeSpec, attrs: dict) -> str | None:
    """Why the attributes are outside what this converter implements (None: fine)."""
    if spec.mode not in MODES:
        return f"attribute mode={spec.mode!r}, expected one of {', '.join(MODES)}"
    if spec.coordinate_mode not in COORDINATE_MODES:
        return f"attribute coordinate_transformation_mode={spec.coordinate_mode!r}, expected one of {', '.join(COORDINATE_MODES)}"
    if spec.nearest_mode not in NEAREST_MODES:
        return f"attribute nearest_mode={spec.nearest_mode!r}, expected one of {', '.join(NEAREST_MODES[:4])}"
    if spec.keep_aspect_ratio_policy not in ("stretch", "not_larger", "not_smaller"):
        return f"attribute keep_aspect_ratio_policy={spec.keep_aspect_ratio_policy!r}, expected stretch, not_larger or not_smaller"
    if int(attrs.get("antialias", 0)) != 0:
        return f"attribute antialias={attrs['antialias']} (antialiased resizing is not implemented; expected 0)"
    return None


def _input_name(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if index < len(node.input) else ""


@register_check("Resize")
def refusal(node: onnx.NodeProto, ctx: NodeContext) -> str | None:
    """Support check: attributes, and the scales/sizes (and tf_crop_and_resize's roi) must be constants."""
    attrs = attributes(node)
    # The opset is not known here; attributes of opset >= 11 are read (an opset-10 node has none of them).
    spec = spec_from_attributes(attrs, 11)
    reason = attribute_refusal(spec, attrs)
    if reason:
        return reason
    wanted = [(_SCALES, "scales"), (_SIZES, "sizes")]
    if spec.coordinate_mode == "tf_crop_and_resize":
        wanted.append((_ROI, "roi"))
    for index, what in wanted:
        name = _input_name(node, index)
        if name and not ctx.is_constant(name) and (ctx.folded or name in ctx.graph_inputs):
            return f"input {what} ('{name}') is not a constant (output sizes and sampling positions are fixed at compile time)"
    return None


def _constant(expr, node: str, what: str) -> np.ndarray | None:
    """A constant input's value; None when absent or empty (ONNX's way of leaving an input out)."""
    if expr is None:
        return None
    if isinstance(expr, relax.ShapeExpr):
        return np.array([int(v) for v in expr.values], np.int64)
    if not isinstance(expr, tvm.ir.GenericConst):
        raise UnsupportedModelError(f"node '{node}' (Resize): input {what} is not a constant (sizes and sampling positions are fixed at compile time)")
    value = expr.value.numpy()
    return value if value.size else None


def _full_rank(values, axes, rank: int, fill) -> list:
    """Values given for ``axes`` (opset 18) spread over all ``rank`` axes; ``fill`` elsewhere."""
    if axes is None:
        return list(values)
    full = [fill] * rank
    for axis, value in zip(axes, values):
        full[axis] = value
    return full


def _static_dims(data, node: str, axes) -> list:
    dims = list(data.ty.shape.values)
    for axis in axes:
        if not isinstance(dims[axis], tirx.IntImm):
            raise UnsupportedModelError(f"node '{node}' (Resize): axis {axis} of the input has symbolic extent {dims[axis]} "
                                        "(a resized axis needs a static extent: its sampling table is built at compile time)")
    return [int(d) if isinstance(d, tirx.IntImm) else d for d in dims]


def convert(bb: relax.BlockBuilder, data, roi, scales, sizes, attrs: dict, opset: int):
    """The Relax expression of one Resize node (inputs already split by opset)."""
    node = attrs.get("tvm_custom", {}).get("name") or "?"
    spec = spec_from_attributes(attrs, opset)
    reason = attribute_refusal(spec, attrs)
    if reason:
        raise UnsupportedModelError(f"node '{node}' (Resize): {reason}")
    rank = len(data.ty.shape.values)
    axes = attrs.get("axes")
    axes = None if axes is None else [a + rank if a < 0 else a for a in axes]
    scales_v, sizes_v = _constant(scales, node, "scales"), _constant(sizes, node, "sizes")
    roi_v = _constant(roi, node, "roi") if spec.coordinate_mode == "tf_crop_and_resize" else None
    if (scales_v is None) == (sizes_v is None):
        raise UnsupportedModelError(f"node '{node}' (Resize): expected exactly one of scales and sizes, got "
                                    f"{'both' if scales_v is not None else 'neither'}")
    given = scales_v if scales_v is not None else sizes_v
    if len(given) != (len(axes) if axes is not None else rank):
        raise UnsupportedModelError(f"node '{node}' (Resize): {'scales' if scales_v is not None else 'sizes'} has "
                                    f"{len(given)} values, expected {len(axes) if axes is not None else rank}")
    dims = list(data.ty.shape.values)
    if scales_v is not None:
        full_scales = _full_rank(scales_v.tolist(), axes, rank, 1.0)
        # an axis with scale 1 keeps its extent and is never sampled: it may be symbolic
        in_shape = _static_dims(data, node, [a for a in range(rank) if float(np.float32(full_scales[a])) != 1.0])
        static_in = [d if isinstance(d, int) else 1 for d in in_shape]
        disagreement = reference_disagreement(spec.coordinate_mode, in_shape, full_scales)
        if disagreement:
            raise UnsupportedModelError(f"node '{node}' (Resize): {disagreement}")
        out_shape, used_scales = output_shape_and_scales(static_in, scales=full_scales)
    else:  # every axis's ratio out / in is needed
        in_shape = static_in = _static_dims(data, node, range(rank))
        full_sizes = _full_rank(sizes_v.tolist(), axes, rank, None)
        full_sizes = [d if s is None else s for s, d in zip(full_sizes, in_shape)]
        out_shape, used_scales = output_shape_and_scales(in_shape, sizes=full_sizes, policy=spec.keep_aspect_ratio_policy, axes=axes)
    roi_full = None
    if roi_v is not None:
        roi_list = roi_v.astype(np.float32).tolist()
        if axes is not None:
            half = len(roi_list) // 2
            roi_full = _full_rank(roi_list[:half], axes, rank, 0.0) + _full_rank(roi_list[half:], axes, rank, 1.0)
        else:
            roi_full = roi_list
        if len(roi_full) != 2 * rank:
            raise UnsupportedModelError(f"node '{node}' (Resize): roi has {len(roi_v)} values, expected {2 * rank}")
    tables = resize_tables(spec, static_in, out_shape, used_scales, roi_full)
    if not tables:
        return data  # onnxruntime copies when the output shape equals the input's
    out_dims = [dims[a] if a not in tables else len(tables[a].outside) for a in range(rank)]
    return _emit_kernel(bb, data, spec, tables, out_dims, node)


def _emit_kernel(bb, data, spec: ResizeSpec, tables: dict, out_dims: list, node: str):
    dtype = str(data.ty.dtype)
    gather_only = spec.mode == "nearest"
    if not gather_only and dtype not in _FLOAT_DTYPES:
        raise UnsupportedModelError(f"node '{node}' (Resize): mode={spec.mode} on a {dtype} input (expected a float type; "
                                    "integer interpolation rounds differently)")
    resized = sorted(tables)
    terms = int(np.prod([tables[a].index.shape[1] for a in resized]))
    if terms > _MAX_TERMS:
        raise UnsupportedModelError(f"node '{node}' (Resize): mode={spec.mode} over {len(resized)} axes is {terms} terms per output "
                                    f"(at most {_MAX_TERMS} implemented)")
    acc = "float64" if dtype == "float64" else "float32"
    index_consts = [relax.const(tables[a].index, "int64") for a in resized]
    weight_consts = [relax.const(tables[a].weight.astype(acc), acc) for a in resized]
    extrapolate = any(tables[a].outside.any() for a in resized)
    outside_consts = [relax.const(tables[a].outside.astype("bool"), "bool") for a in resized] if extrapolate else []

    def compute(x, *tabs):
        idx = tabs[: len(resized)]
        wts = tabs[len(resized): 2 * len(resized)]
        outs = tabs[2 * len(resized):]
        taps = [tables[a].index.shape[1] for a in resized]

        def body(*o):
            total = None
            for combo in itertools.product(*(range(t) for t in taps)):
                where = list(o)
                for k, axis in enumerate(resized):
                    where[axis] = idx[k][o[axis], combo[k]]
                value = x(*where)
                if not gather_only:
                    value = value.astype(acc) if dtype != acc else value
                    for k, axis in enumerate(resized):
                        value = value * wts[k][o[axis], combo[k]]
                total = value if total is None else total + value
            if not gather_only and dtype != acc:
                total = total.astype(dtype)
            if outs:
                flag = outs[0][o[resized[0]]]
                for k in range(1, len(resized)):
                    flag = tirx.Or(flag, outs[k][o[resized[k]]])
                total = tirx.Select(flag, tirx.const(spec.extrapolation_value, dtype), total)
            return total

        return te.compute(out_dims, body, name="resize")

    return bb.emit_te(compute, data, *index_consts, *weight_consts, *outside_consts, primfunc_name_hint="resize")


@register("Resize")
class Resize(base.OnnxOpConverter):
    """ONNX Resize through compile-time sampling tables (see the module docstring)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        scales = base.get_constant(inputs[1], params) if len(inputs) > 1 else None
        return convert(bb, inputs[0], None, scales, None, attr, 10)

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        def get(index):
            value = inputs[index] if len(inputs) > index else None
            return base.get_constant(value, params) if value is not None else None

        return convert(bb, inputs[0], get(_ROI), get(_SCALES), get(_SIZES), attr, 11)
