"""Pre-pack constant conv2d weights into a blocked, vector-friendly layout at compile time.

After ``convert_layout_nhwc`` a CPU convolution vectorizes over output
channels, so each step of its reduction loads a vector of ``lanes`` output
channels of the weight. In OHWI those lanes are a whole filter apart (a
gather); in HWIO they are contiguous, but consecutive reduction steps are
``F`` floats apart, so a kernel walking one block of output channels touches
one cache line (and, for resnet50's 2048-channel layers, one 4 KiB page) per
step, and only 32 of its 64 bytes.

The weights are constants, so this pass stores them once, at compile time, as
``[F / lanes, KH, KW, C, lanes]`` ("OHWI8o" on AVX2): the weight panel a
vector of output channels needs is one contiguous stream. The conv2d becomes
an equivalent TE compute (pad + conv reading the packed weight), which fuses
with its bias/activation epilogue like the original; the CPU schedule rule
(``schedule_rules/conv.py``) recognises the ``w[f // lanes, .., f % lanes]``
read. Only NHWC, groups=1 convs with a constant weight and ``lanes | F`` are
rewritten; anything else is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te, topi

from ._util import const_value, mutate_graph_functions
from .registry import register_pass
from .tally import current


def _lanes() -> int:
    """fp32 lanes of the current target's SIMD registers (8 on AVX2, 16 on AVX-512)."""
    from ..schedule_rules._common import vector_lanes

    target = tvm.target.Target.current(allow_none=True)
    if target is None or target.kind.name != "llvm":
        return 8
    return vector_lanes(target, "float32")


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def packed_weight(weight: np.ndarray, kernel_layout: str, lanes: int) -> np.ndarray:
    """HWIO or OHWI weight -> [F/lanes, KH, KW, C, lanes]."""
    if kernel_layout == "OHWI":
        hwio = weight.transpose(1, 2, 3, 0)
    elif kernel_layout == "HWIO":
        hwio = weight
    else:
        raise ValueError(kernel_layout)
    kh, kw, c, f = hwio.shape
    return np.ascontiguousarray(hwio.reshape(kh, kw, c, f // lanes, lanes).transpose(3, 0, 1, 2, 4))


def _conv_te(data, wpack, strides, padding, dilation, out_dtype):
    n, h, w, c = (int(d) for d in data.shape)
    blocks, kh, kw, _, lanes = (int(d) for d in wpack.shape)
    sh, sw = strides
    dh, dw = dilation
    top, left, bottom, right = padding
    if any(padding):
        padded = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, 0], name="pad_temp")
    else:
        padded = data
    out_h = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rc = te.reduce_axis((0, c), name="rc")
    return te.compute(
        (n, out_h, out_w, blocks * lanes),
        lambda b, y, x, f: te.sum(
            padded[b, y * sh + ry * dh, x * sw + rx * dw, rc].astype(out_dtype)
            * wpack[f // lanes, ry, rx, rc, f % lanes].astype(out_dtype),
            axis=[ry, rx, rc],
        ),
        name="conv2d_nhwc",
    )


@dataclass(frozen=True)
class ConstantConv:
    """A conv2d the CPU rewrites can take: NHWC, groups=1, constant weight, static input shape."""

    hwio: np.ndarray  # the weight as [KH, KW, C, F]
    data_shape: tuple[int, int, int, int]
    data_dtype: str
    out_dtype: str


def match_constant_nhwc_conv(call) -> ConstantConv | None:
    """The weight, input shape and output dtype of a channels-last conv2d with a constant weight, else None."""
    if not isinstance(call, relax.Call) or getattr(call.op, "name", "") != "relax.nn.conv2d":
        return None
    attrs = call.attrs
    weight = const_value(call.args[1])
    if weight is None or int(attrs.groups) != 1 or attrs.data_layout != "NHWC" or attrs.out_layout != "NHWC":
        return None
    if attrs.kernel_layout not in ("OHWI", "HWIO") or weight.ndim != 4:
        return None
    data_sinfo = call.args[0].ty
    if not isinstance(data_sinfo, relax.TensorType) or data_sinfo.shape is None:
        return None
    try:
        shape = tuple(_ints(data_sinfo.shape.values))
    except (TypeError, AttributeError):
        return None  # symbolic shapes: leave it to the generic conv2d
    out_dtype = str(attrs.out_dtype)
    if out_dtype in ("", "void", "None"):
        out_dtype = str(data_sinfo.dtype)
    hwio = weight.transpose(1, 2, 3, 0) if attrs.kernel_layout == "OHWI" else weight
    return ConstantConv(hwio, shape, str(data_sinfo.dtype), out_dtype)


@relax.expr_functor.mutator
class _Packer(relax.PyExprMutator):
    def __init__(self, mod, lanes: int):
        super().__init__(mod)
        self.lanes = lanes
        self.packed = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        conv = match_constant_nhwc_conv(call)
        if conv is None or conv.hwio.shape[3] % self.lanes:
            return call
        attrs = call.attrs
        out_dtype = conv.out_dtype
        wpack = relax.const(packed_weight(conv.hwio, "HWIO", self.lanes))
        self.packed += 1
        return self.builder_.call_te(
            _conv_te,
            call.args[0],
            wpack,
            _ints(attrs.strides),
            _ints(attrs.padding),
            _ints(attrs.dilation),
            out_dtype,
            primfunc_name_hint="conv2d_packed",
        )


@tvm.transform.module_pass(opt_level=0, name="AutoGLMPackConvWeights")
def pack_conv_weights_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    lanes = _lanes()
    packer = _Packer(mod, lanes)
    out = mutate_graph_functions(mod, packer)
    current().rewrote(packer.packed)
    return out


@register_pass("pack_conv_weights")
def pack_conv_weights():
    """NHWC conv2d with a constant weight -> weight pre-packed as [F/lanes, KH, KW, C, lanes] (O3, CPU)."""
    return pack_conv_weights_pass
