"""Conv parity over many shapes at O1 and O3, for 8-lane and 16-lane plans (issue #20, item 1).

Each case is Conv (+bias) -> activation, compared with onnxruntime at O1 (TVM fusion + our default
rules on NCHW) and at O3 (NHWC, packed weights, the conv rule) with the AVX2 plan and with the
AVX-512 plan run as AVX2 code (tests/targets/cpu-x86-avx2-plan512.json). The first case is the
depthwise 1x1 conv that was 2.7% wrong at O1-O3: its unit reductions vanish in normalize_prim_func
and the bias + relu were inlined into both the init and the update of the conv block. The
"tile_straddles_rows" cases were up to 100% wrong at O3: the conv rule tiled the fused pixel axis of
a 1x1 conv in tiles that cross a row end, and wrote each tile back over its rows' bounding box.
"""

from __future__ import annotations

import numpy as np
import pytest
from model_families import GraphBuilder
from parity import AVX2, PLAN512, assert_parity, reference

# (channels, filters, group, kernel, strides, dilations, pads, spatial, activation, batch)
CASES = {
    "dw1x1_asym_pads_stride_1x2": (8, 8, 8, [1, 1], [1, 2], [1, 1], [1, 0, 2, 0], [9, 7], "Relu", 1),
    "dw3x3_stride_2x1_asym": (16, 16, 16, [3, 3], [2, 1], [1, 1], [1, 0, 0, 1], [9, 11], "HardSigmoid", 1),
    "dw5x5_stride_1x2": (32, 32, 32, [5, 5], [1, 2], [1, 1], [2, 2, 2, 2], [7, 13], "Relu", 1),
    "dw3x1_multiplier2": (8, 16, 8, [3, 1], [1, 1], [1, 1], [1, 0, 1, 0], [6, 5], "", 1),
    "grouped4_3x3_dilated": (8, 16, 4, [3, 3], [1, 1], [2, 2], [2, 1, 2, 1], [9, 10], "Relu", 2),
    "1x3_f32": (16, 32, 1, [1, 3], [1, 1], [1, 1], [0, 1, 0, 1], [3, 17], "", 1),
    "3x3_stride_2x1_f48_odd": (24, 48, 1, [3, 3], [2, 1], [1, 1], [1, 1, 0, 0], [8, 23], "HardSigmoid", 1),
    "1x1_f64_13x11": (32, 64, 1, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0], [13, 11], "Relu", 1),
    "3x3_f32_7x7_ragged": (16, 32, 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], [7, 7], "Relu", 1),
    "3x3_f24_not_16_lanes": (8, 24, 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], [6, 9], "Relu", 1),
    "2x2_stride2_asym": (4, 16, 1, [2, 2], [2, 2], [1, 1], [0, 0, 1, 1], [9, 9], "", 1),
    "1x1_tile_straddles_rows_58": (16, 96, 1, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0], [2, 58], "Relu", 1),
    "1x1_padded_tile_straddles_rows_82": (16, 128, 1, [1, 1], [1, 1], [1, 1], [1, 0, 0, 1], [4, 82], "", 1),
    "1d_k3_stride2_asym": (8, 16, 1, [3], [2], [1], [1, 2], [21], "Relu", 1),
    "1d_dw_k5_dilated": (16, 16, 16, [5], [1], [2], [4, 0], [19], "", 2),
    "1d_dw1x1_asym_pads": (8, 8, 8, [1], [2], [1], [1, 2], [9], "Relu", 1),
}


def conv_case(name: str):
    channels, filters, group, kernel, strides, dilations, pads, spatial, act, batch = CASES[name]
    g = GraphBuilder(seed=sum(map(ord, name)))
    y = g.conv("x", channels, filters, kernel, strides=strides, pads=pads, group=group, dilations=dilations)
    if act == "HardSigmoid":
        y = g.op("HardSigmoid", y, alpha=0.2, beta=0.5)
    elif act:
        y = g.op(act, y)
    x = np.random.default_rng(len(name)).standard_normal([batch, channels, *spatial]).astype("float32")
    return g.model({"x": [batch, channels, *spatial]}, y), {"x": x}


@pytest.mark.parametrize("target,opt_level", [(AVX2, 1), (AVX2, 3), (PLAN512, 3)], ids=["O1", "O3", "O3-plan512"])
@pytest.mark.parametrize("name", list(CASES))
def test_conv_matches_onnxruntime(name, target, opt_level):
    model, inputs = conv_case(name)
    assert_parity(model, inputs, target, opt_level, reference(model, inputs))
