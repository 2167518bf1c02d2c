"""ONNX Resize as per-axis lookup tables, computed the way onnxruntime computes them.

TVM 0.27's Resize converter maps an output pixel back through ``input / output`` (the
size ratio); ONNX (and onnxruntime) use the *scale* when scales are given, so any
``input x scale`` that is not an integer came out wrong, at every opt level. Its
align_corners path also divides by ``output - 1`` in the kernel, which is zero for a
size-1 output axis (a divide-by-zero at codegen).

Here the whole coordinate mapping is done at compile time, in numpy float32 with the
same operations in the same order as onnxruntime's CPU kernel (``upsamplebase.h``,
``upsample.cc``), so that a source coordinate landing exactly on a rounding boundary
rounds the same way. Each resized axis gets a table of source indices and weights
(``taps`` per output position: 1 nearest, 2 linear, 4 cubic) and an "outside" flag
(tf_crop_and_resize's extrapolation); the kernel (``frontend/resize.py``) only gathers
and sums. Pure numpy: no TVM here.

Behaviours copied from onnxruntime on purpose (they are where it and a literal reading of
the spec could differ): output size ``int(float32(scale) * float32(size))``; the scale
used by the coordinate transform is the given one, or ``float32(out) / float32(in)`` for
sizes; an axis whose scale is exactly 1 maps identically whatever the mode; an output
shape equal to the input shape is a copy; a coordinate within 1e-6 of a half is a tie for the
round_prefer_* nearest modes (onnxruntime 1.32). Where onnxruntime and the ONNX reference
implementation disagree (:func:`reference_disagreement`), the node is refused instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

F32 = np.float32

#: coordinate_transformation_mode values onnxruntime implements
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                    "tf_half_pixel_for_nn", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")
MODES = ("nearest", "linear", "cubic")
TAPS = {"nearest": 1, "linear": 2, "cubic": 4}


@dataclass(frozen=True)
class AxisTable:
    """How output positions of one axis read the input: ``index``/``weight`` are [out, taps]."""

    index: np.ndarray  # int64
    weight: np.ndarray  # float32
    outside: np.ndarray  # bool [out]: tf_crop_and_resize maps it outside the input (extrapolation value)


@dataclass(frozen=True)
class ResizeSpec:
    """A Resize node's attributes, after defaults (``nearest_mode="simple"``: opset 10)."""

    mode: str = "nearest"
    coordinate_mode: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"
    cubic_coeff_a: float = -0.75
    exclude_outside: bool = False
    extrapolation_value: float = 0.0
    keep_aspect_ratio_policy: str = "stretch"


def output_shape_and_scales(in_shape, scales=None, sizes=None, policy: str = "stretch", axes=None):
    """(output dims, float32 scales) as onnxruntime derives them from ``scales`` or ``sizes`` (full rank).

    ``policy`` (keep_aspect_ratio_policy, sizes only) picks one scale for ``axes`` (default: all
    axes): the smallest (not_larger) or largest (not_smaller) of theirs; the other axes keep their size.
    """
    in_shape = [int(d) for d in in_shape]
    if scales is not None:
        scales = [F32(s) for s in scales]
        return [int(s * F32(d)) for s, d in zip(scales, in_shape)], scales
    out = [int(s) for s in sizes]
    scales = [F32(1.0) if d == 0 else F32(o) / F32(d) for o, d in zip(out, in_shape)]
    if policy != "stretch":
        chosen_axes = range(len(in_shape)) if axes is None else axes
        picked = [scales[a] for a in chosen_axes]
        chosen = min(picked) if policy == "not_larger" else max(picked)
        scales = [chosen if a in chosen_axes else F32(1.0) for a in range(len(in_shape))]
        out = [int(_round_half_away(chosen * F32(d))) if a in chosen_axes else d for a, d in enumerate(in_shape)]
    return out, scales


def reference_disagreement(coordinate_mode: str, in_shape, scales) -> str | None:
    """Why onnxruntime and the ONNX reference implementation sample differently here (None: they agree).

    align_corners and tf_crop_and_resize divide by ``length_resized - 1``: onnxruntime (and PyTorch)
    take the integer output extent ``floor(in x scale)``, the ONNX reference (whose outputs are the
    conformance expectations) takes ``in x scale`` itself. They differ exactly when a resized axis's
    ``in x scale`` is not an integer, and neither answer can be called right: such a node is refused.
    """
    if coordinate_mode not in ("align_corners", "tf_crop_and_resize") or scales is None:
        return None
    for axis, (dim, scale) in enumerate(zip(in_shape, scales)):
        if not isinstance(dim, int) or F32(scale) == F32(1.0):
            continue
        exact = float(F32(scale)) * dim
        if exact != int(F32(scale) * F32(dim)):
            return (f"coordinate_transformation_mode={coordinate_mode} with scale {float(F32(scale)):g} on axis {axis} of extent {dim} "
                    f"({dim} x {float(F32(scale)):g} = {exact:.7g} is not an integer: onnxruntime divides by the floored "
                    "output extent, the ONNX reference by the unfloored one; give sizes instead of scales)")
    return None


def _round_half_away(x) -> float:
    """C's ``std::round``: halves away from zero (exact for float32 values, done in float64)."""
    x = float(x)
    return math.copysign(math.floor(abs(x) + 0.5), x)


def original_coordinates(spec: ResizeSpec, scale, out_len: int, in_len: int, roi_start=0.0, roi_end=1.0) -> np.ndarray:
    """Source coordinate of every output position (float32), onnxruntime's formula per mode."""
    x = np.arange(out_len, dtype=F32)
    s, lr, lo = F32(scale), F32(out_len), F32(in_len)
    mode = spec.coordinate_mode
    if mode == "asymmetric":
        return x / s
    if mode == "pytorch_half_pixel":
        return (x + F32(0.5)) / s - F32(0.5) if lr > 1 else np.zeros(out_len, F32)
    if mode == "tf_half_pixel_for_nn":
        return (x + F32(0.5)) / s
    if mode == "align_corners":
        return np.zeros(out_len, F32) if lr == 1 else x * (lo - F32(1)) / (lr - F32(1))
    if mode == "tf_crop_and_resize":
        start, end = F32(roi_start), F32(roi_end)
        if lr > 1:
            return start * (lo - F32(1)) + (x * (end - start) * (lo - F32(1))) / (lr - F32(1))
        return np.full(out_len, F32(0.5 * (float(start) + float(end)) * float(lo - F32(1))), F32)
    if mode == "half_pixel_symmetric":  # the final expression is double in onnxruntime
        adjustment = lr / (s * lo)
        offset = (lo / F32(2)) * (F32(1) - adjustment)
        return (float(offset) + (x.astype(np.float64) + 0.5) / float(s) - 0.5).astype(F32)
    if mode == "half_pixel":
        return (x + F32(0.5)) / s - F32(0.5)
    raise ValueError(f"coordinate_transformation_mode {mode!r}")


def _nearest(coords: np.ndarray, nearest_mode: str, downsampling: bool) -> np.ndarray:
    c = coords.astype(np.float64)  # exact: every float32 is a float64
    if nearest_mode == "floor":
        return np.floor(c)
    if nearest_mode == "ceil":
        return np.ceil(c)
    if nearest_mode == "simple":  # opset 10
        return np.ceil(c) if downsampling else np.trunc(c)
    away = np.sign(c) * np.floor(np.abs(c) + 0.5)  # std::round
    # onnxruntime >= 1.32 treats a coordinate within 1e-6 of a half as a tie (its fix of
    # microsoft/onnxruntime#28291): a float32 coordinate computed as 3.4999998 for 3.5 rounds as 3.5.
    frac = (coords - np.floor(coords)).astype(F32)
    tie = np.abs(frac - F32(0.5)) <= F32(1e-6)
    return np.where(tie, np.ceil(c) if nearest_mode == "round_prefer_ceil" else np.floor(c), away)


def cubic_coefficients(s: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic weights of taps -1, 0, 1, 2 for fractional offsets ``s`` (float32, onnxruntime's expressions)."""
    a, s = F32(a), np.abs(s.astype(F32))
    one, two = F32(1), F32(2)
    c0 = ((a * (s + one) - F32(5) * a) * (s + one) + F32(8) * a) * (s + one) - F32(4) * a
    c1 = ((a + two) * s - (a + F32(3))) * s * s + one
    c2 = ((a + two) * (one - s) - (a + F32(3))) * (one - s) * (one - s) + one
    c3 = ((a * (two - s) - F32(5) * a) * (two - s) + F32(8) * a) * (two - s) - F32(4) * a
    return np.stack([c0, c1, c2, c3], axis=-1).astype(F32)


def axis_table(spec: ResizeSpec, scale, out_len: int, in_len: int, roi_start=0.0, roi_end=1.0) -> AxisTable:
    """The table of one axis whose scale is not 1 (onnxruntime maps a scale-1 axis identically: no table)."""
    coords = original_coordinates(spec, scale, out_len, in_len, roi_start, roi_end)
    outside = (coords < 0) | (coords > F32(in_len - 1)) if spec.coordinate_mode == "tf_crop_and_resize" else np.zeros(out_len, bool)
    last = in_len - 1
    if spec.mode == "nearest":
        index = np.clip(_nearest(coords, spec.nearest_mode, F32(scale) < 1), 0, last).astype(np.int64)[:, None]
        return AxisTable(index, np.ones((out_len, 1), F32), outside)
    if spec.mode == "linear":
        clamped = np.clip(coords, F32(0), F32(last)).astype(F32)
        i1 = np.minimum(clamped.astype(np.int64), last)
        i2 = np.minimum(i1 + 1, last)
        d1 = np.abs(clamped - i1.astype(F32)).astype(F32)
        d2 = np.abs(clamped - i2.astype(F32)).astype(F32)
        same = i1 == i2
        d1, d2 = np.where(same, F32(0.5), d1), np.where(same, F32(0.5), d2)
        return AxisTable(np.stack([i1, i2], 1), np.stack([d2, d1], 1).astype(F32), outside)
    base = np.floor(coords.astype(np.float64)).astype(np.int64)
    coeffs = cubic_coefficients((coords - base.astype(F32)).astype(F32), spec.cubic_coeff_a)
    index = base[:, None] + np.arange(-1, 3)[None, :]
    if spec.exclude_outside:
        coeffs = np.where((index < 0) | (index > last), F32(0), coeffs).astype(F32)
        total = coeffs.sum(axis=1, keepdims=True, dtype=F32)  # 0 only where every tap is outside: extrapolated
        coeffs = np.divide(coeffs, total, out=np.zeros_like(coeffs), where=total != 0).astype(F32)
    return AxisTable(np.clip(index, 0, last), coeffs, outside)


def resize_tables(spec: ResizeSpec, in_shape, out_shape, scales, roi=None) -> dict[int, AxisTable]:
    """Tables of the axes that change; {} when the output shape equals the input's (a copy in onnxruntime)."""
    rank = len(in_shape)
    if list(out_shape) == list(in_shape):
        return {}
    roi = list(roi) if roi is not None and len(roi) == 2 * rank else [0.0] * rank + [1.0] * rank
    tables = {}
    for axis in range(rank):
        if F32(scales[axis]) == F32(1.0) and out_shape[axis] == in_shape[axis]:
            continue  # identity axis: no table, the kernel indexes it directly
        tables[axis] = axis_table(spec, scales[axis], int(out_shape[axis]), int(in_shape[axis]), roi[axis], roi[rank + axis])
    return tables
