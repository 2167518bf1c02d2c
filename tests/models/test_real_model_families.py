"""The CNN families of issue #20, in miniature, at O0-O3 against onnxruntime.

Before the fixes: the DBNet-like detector failed at O3 in codegen (ConvertLayout had turned its
ConvTranspose into an NHWC conv2d_transpose, which LegalizeOps cannot lower, so the VM met a raw
Relax op); the old-opset CNN failed at O3 in convert_layout_nhwc (LRN, Dropout's tuple, the 5-D
stack of a multi-input Max/Sum/Mean). Tolerance: :data:`parity.REL_TOL` of the output scale.
"""

from __future__ import annotations

from helpers import relax_calls

import pytest
from model_families import FAMILIES
from parity import AVX2, PLAN512, assert_parity, reference

from tvm_autoglm.pipeline import compile_model
from tvm_autoglm.targets import load_target

_REFERENCES: dict = {}


def _family(name):
    if name not in _REFERENCES:
        model, inputs = FAMILIES[name]()
        _REFERENCES[name] = (model, inputs, reference(model, inputs))
    return _REFERENCES[name]


@pytest.mark.parametrize("opt_level", [0, 1, 2, 3])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_matches_onnxruntime(name, opt_level):
    model, inputs, expected = _family(name)
    assert_parity(model, inputs, AVX2, opt_level, expected)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_matches_onnxruntime_with_16_lane_plans(name):
    model, inputs, expected = _family(name)
    assert_parity(model, inputs, PLAN512, 3, expected)


def test_dbnet_keeps_conv_transpose_nchw_and_convs_nhwc():
    model, _, _ = _family("dbnet")
    build = compile_model(model, load_target(AVX2), 3).build
    # conv2d_transpose has no NHWC legalization: it must stay NCHW, while the plain convs go NHWC.
    # Most of them are then packed (pack_conv_weights) and no longer conv2d calls.
    pre = build.pre_fusion_mod
    assert [c.attrs.data_layout for c in relax_calls(pre, "relax.nn.conv2d_transpose")] == ["NCHW", "NCHW"]
    assert all(c.attrs.data_layout == "NHWC" for c in relax_calls(pre, "relax.nn.conv2d"))
    assert any("conv2d_packed" in k for k in build.kernels)


@pytest.mark.parametrize("name", ["crnn", "old_opset"])
def test_family_compiles_for_avx512(name):
    """Compile only (this host may lack AVX-512): the 16-lane packing and tiles reach LLVM's AVX-512 codegen."""
    model, _, _ = _family(name)
    done = compile_model(model, load_target("cpu-x86-avx512"), 3)
    build, executable = done.build, done.executable
    assert executable is not None
    assert any("conv2d_packed" in k for k in build.kernels)
