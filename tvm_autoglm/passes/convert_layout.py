"""Convert conv2d to NHWC (channels-last) for CPU.

``relax.transform.ConvertLayout`` rewrites conv2d to NHWC/OHWI and inserts
the layout transforms at the region boundaries (the weight transforms fold
to constants). Channels-last makes the innermost loop of a CPU convolution
run over contiguous channels, which vectorises without a scheduler's help.

Measured before enabling it: a small ResNet-style CNN (stem + 2 basic
blocks, 32 channels, 56x56) on the 2-core Zen 3 dev box with the default
(untuned) CPU schedules ran 815 ms NCHW vs 509 ms NHWC at O3 (same
outputs, max diff 6e-7), so it is on at O3 for CPU targets only. GPU targets
keep NCHW: their schedules (dlight) are written for it.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .registry import register_pass

NHWC_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OHWI"]}


@tvm.transform.module_pass(opt_level=0, name="AutoGLMConvertLayoutNHWC")
def convert_layout_nhwc_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    mod = relax.transform.ConvertLayout(NHWC_LAYOUTS)(mod)
    return relax.transform.FoldConstant()(mod)


@register_pass("convert_layout_nhwc", opt_level=3, stage=75, target_kinds=("cpu",))
def convert_layout_nhwc():
    """conv2d NCHW -> NHWC with boundary transforms (O3, CPU: faster untuned)."""
    return convert_layout_nhwc_pass
